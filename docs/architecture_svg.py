"""Draws docs/architecture.svg: netmux's layers and one readiness event through them.

    python docs/architecture_svg.py          # rewrites docs/architecture.svg

Why a Python script and not Graphviz: the picture is a fixed layout (four layers
stacked, the read path going up on the left, the write path coming down on the
right), which Graphviz would compute differently from one version to the next,
so its SVG could not be checked byte for byte on another machine. This script
uses the standard library only and writes the same bytes every time:
tests/test_architecture.py regenerates the SVG and compares it with the committed
file, and checks that every source name the picture shows (``CODE_NAMES``)
exists in netmux.
"""
from __future__ import annotations

import os
from typing import List, Tuple
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 900, 520
LEFT, RIGHT = 20, 880                 # the layers' boxes span this
UP_X, DOWN_X = 40, 450                # the read path goes up here, the write path comes down here
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"

# (title, module, what it owns, top y), top of the picture first: data flows up.
LAYERS: List[Tuple[str, str, str, int]] = [
    ("Handler", "handler.py, framing.py, stream.py",
     "your code: asyncio Protocol names; framers are sans-IO", 40),
    ("TCPTransport", "transport.py",
     "one non-blocking socket, its write buffer, flow control", 170),
    ("Reactor", "reactor.py",
     "the selector, callbacks per fd, timers, the wake-up pair, the shared read buffer", 300),
    ("kernel", "epoll, socket buffers",
     "readiness of every descriptor; TCP's own window stops the peer", 430),
]
LAYER_HEIGHT = 70                     # and 60 px between two layers, where the arrows go

# The event, in order: (from y, to y, x, label lines). Up on the left, down on the right.
READ_PATH = [
    (430, 370, UP_X, ["1  fd readable: epoll_wait returns (fd, EPOLLIN)"]),
    (300, 240, UP_X, ["2  Reactor._poll_epoll calls the fd's reader directly:",
                      "    TCPTransport._read_ready"]),
    (170, 110, UP_X, ["3  sock.recv_into(the reactor's shared buffer),",
                      "    then Handler.data_received(bytes)"]),
]
WRITE_PATH = [
    (110, 170, DOWN_X, ["4  transport.write(data): TCPTransport.write",
                        "    calls sock.send() at once, straight to the kernel"]),
    (240, 300, DOWN_X, ["5  what send() did not take is buffered, and",
                        "    Reactor.add_writer(fd, TCPTransport._write_ready)"]),
    (370, 430, DOWN_X, ["6  epoll watches EPOLLOUT until TCPTransport._write_ready",
                        "    has sent the buffer; then Reactor.remove_writer"]),
]

#: Every source name the picture shows: tests/test_architecture.py checks they exist.
CODE_NAMES = ["Reactor._poll_epoll", "TCPTransport._read_ready", "Handler.data_received",
              "TCPTransport.write", "Reactor.add_writer", "TCPTransport._write_ready",
              "Reactor.remove_writer"]


def text(x: int, y: int, content: str, size: int = 13, weight: str = "normal",
         anchor: str = "start", fill: str = "#222") -> str:
    return (f"<text x='{x}' y='{y}' font-size='{size}' font-weight='{weight}' "
            f"text-anchor='{anchor}' fill='{fill}' {FONT} xml:space='preserve'>{escape(content)}</text>")


def layer(title: str, module: str, owns: str, top: int) -> List[str]:
    return [
        f"<rect x='{LEFT}' y='{top}' width='{RIGHT - LEFT}' height='{LAYER_HEIGHT}' rx='8' "
        f"fill='#eef3fb' stroke='#4a6fa5' stroke-width='1.5'/>",
        text(LEFT + 12, top + 22, title, size=15, weight="bold"),
        text(LEFT + 12 + 9 * len(title) + 24, top + 22, module, size=12, fill="#555"),
        text(LEFT + 12, top + LAYER_HEIGHT - 12, owns, size=12, fill="#555"),
    ]


def arrow(start_y: int, end_y: int, x: int, lines: List[str], color: str) -> List[str]:
    """An arrow from the edge of one layer to the next, its label beside it."""
    head = 8 if end_y < start_y else -8
    parts = [
        f"<line x1='{x}' y1='{start_y}' x2='{x}' y2='{end_y + head}' stroke='{color}' stroke-width='2.5'/>",
        f"<polygon points='{x},{end_y} {x - 6},{end_y + head} {x + 6},{end_y + head}' fill='{color}'/>",
    ]
    middle = (start_y + end_y) // 2 - 6 * (len(lines) - 1)
    for index, line in enumerate(lines):
        parts.append(text(x + 12, middle + 4 + 13 * index, line, size=12, fill=color))
    return parts


def render() -> str:
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
             "<title>netmux: the layers, and one readiness event flowing through them</title>",
             f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
             text(LEFT, 24, "one read event: up, on the left (green); the reply: down, on the right (red)",
                  size=12, fill="#555")]
    for title, module, owns, top in LAYERS:
        parts += layer(title, module, owns, top)
    for start_y, end_y, x, lines in READ_PATH:
        parts += arrow(start_y, end_y, x, lines, "#1d6b3a")
    for start_y, end_y, x, lines in WRITE_PATH:
        parts += arrow(start_y, end_y, x, lines, "#9a3412")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "architecture.svg")
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.write(render())


if __name__ == "__main__":
    main()
