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

# 720 px wide: Furo's content column at a 1280 px window, so the picture shows at
# its own size and its smallest text stays 13 px (its labels are wrapped to fit
# half the width each: about 44 characters).
WIDTH, HEIGHT = 720, 600
LEFT, RIGHT = 10, 710                 # the layers' boxes span this
UP_X, DOWN_X = 28, 370                # the read path goes up here, the write path comes down here
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
SMALL = 13                            # the smallest text: labels and the boxes' second lines

# (title, module, what it owns, top y), top of the picture first: data flows up.
# Three of netmux's four layers, one module each: the ones one echo passes
# through (the fourth, framing.py, is sans-IO and sits beside the handler).
LAYERS: List[Tuple[str, str, str, int]] = [
    ("Handler", "handler.py", "your code, with asyncio Protocol's method names", 40),
    ("TCPTransport", "transport.py", "one non-blocking socket, its write buffer, flow control", 200),
    ("Reactor", "reactor.py", "the poller, a callback per fd, timers, the shared read buffer", 360),
    ("kernel", "not netmux: epoll, socket buffers", "TCP's own window stops a peer", 520),
]
LAYER_HEIGHT = 64                     # and 96 px between two layers, where the arrows go

# The event, in order: (from y, to y, x, label lines). Up on the left, down on the right.
READ_PATH = [
    (520, 424, UP_X, ["1  fd readable: epoll_wait", "    returns (fd, EPOLLIN)"]),
    (360, 264, UP_X, ["2  Reactor._poll_epoll calls the", "    fd's reader directly:",
                      "    TCPTransport._read_ready"]),
    (200, 104, UP_X, ["3  sock.recv_into(the shared buffer),",
                      "    then Handler.data_received(bytes)"]),
]
WRITE_PATH = [
    (104, 200, DOWN_X, ["4  transport.write(data):", "    TCPTransport.write calls",
                        "    sock.send() at once"]),
    (264, 360, DOWN_X, ["5  what send() did not take is", "    buffered; Reactor.add_writer(fd,",
                        "    TCPTransport._write_ready)"]),
    (424, 520, DOWN_X, ["6  on EPOLLOUT, TCPTransport._write_ready", "    sends the buffer; then",
                        "    Reactor.remove_writer"]),
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
        text(LEFT + 12, top + 24, title, size=16, weight="bold"),
        text(LEFT + 12 + 10 * len(title) + 20, top + 24, module, size=SMALL + 1, fill="#444"),
        text(LEFT + 12, top + LAYER_HEIGHT - 14, owns, size=SMALL + 1, fill="#444"),
    ]


def arrow(start_y: int, end_y: int, x: int, lines: List[str], color: str) -> List[str]:
    """An arrow from the edge of one layer to the next, its label beside it."""
    head = 8 if end_y < start_y else -8
    parts = [
        f"<line x1='{x}' y1='{start_y}' x2='{x}' y2='{end_y + head}' stroke='{color}' stroke-width='2.5'/>",
        f"<polygon points='{x},{end_y} {x - 6},{end_y + head} {x + 6},{end_y + head}' fill='{color}'/>",
    ]
    middle = (start_y + end_y) // 2 - 8 * (len(lines) - 1)
    for index, line in enumerate(lines):
        parts.append(text(x + 12, middle + 5 + 16 * index, line, size=SMALL, fill=color))
    return parts


def render() -> str:
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
             "<title>netmux: the layers, and one readiness event flowing through them</title>",
             f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
             text(LEFT, 24, "one read event: up on the left (green); the reply: down on the right (red)",
                  size=SMALL, fill="#444")]
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
