"""Every code block in README.md and docs/**/*.md is a doctest or a file a test runs.

The rule, by the fence's info string (the word after the opening backticks):

* ``python`` with ``>>>`` in it: a doctest. This file runs every page's doctests
  (ELLIPSIS on; end a doctest block with a blank line before the closing fence).
* ``python`` otherwise: a program, shown as an excerpt of a file under
  ``examples/`` (or of a test, ``tests/test_*.py``). Cut the block at its blank
  lines into pieces; each piece must appear verbatim (indentation aside) in ONE
  such file, in the same order. Every ``examples/*.py`` runs with ``--demo`` in
  ``test_every_example_demo_runs`` (the tutorial's steps in tests/test_tutorial.py),
  so the file is run by a test.
* ``{literalinclude} PATH``: the page includes the whole file, which must be one of
  those. Other MyST directives (``{toctree}``, ``{include}``, ``{automodule}``, ...)
  are page structure, not code; ``{code-block}`` is refused: write ```python.
* ``python title="examples/PATH"``: the whole file, shown as it is: the block
  must equal that file exactly, and the file must be run by a test (the
  from-socketserver page's originals and ports run in tests/test_examples_stream.py).
* ``python synopsis``: an outline of an API (signatures, one call per line), not
  a program. Every ``netmux.NAME`` (and ``netmux.NAME.attr``) it mentions must exist.
* ``sh``/``console``: commands (``$ `` prefixes and ``# comments`` ignored; in a
  ``console`` block, lines without ``$ `` are output). Each command must be one a
  test checks: see check_command() below (``python -m netmux`` and ``python -m
  netmux.apps.X`` options exist, ``python examples/X.py`` is an example that runs,
  ``pip install '.[extra]'`` names an extra of setup.cfg, ...).
* ``text``: program output, diagrams, wire formats. Nothing to run.

Anything else (including a fence with no info string) fails with a message that
says which of these to use.

Then the site as readers see it: every code line it shows fits Furo's column at
1280 px (CODE_WIDTH), and, where the docs extra is installed, the site builds
with every warning an error, each internal link of its HTML leads to a page and
an anchor that exist, and the course's pages link previous/next in order.
"""
from __future__ import annotations

import configparser
import doctest
import glob
import html.parser
import os
import re
import shlex
import subprocess
import sys
import textwrap
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

import pytest

import netmux

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(path, ROOT) for path in
                               glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
EXAMPLES = sorted(os.path.relpath(path, ROOT) for path in
                  glob.glob(os.path.join(ROOT, "examples", "**", "*.py"), recursive=True))
TESTS = sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
# MyST directives that are not code: the page structure, and the API reference.
DIRECTIVES = ("{toctree}", "{include}", "{automodule}", "{autoclass}", "{autofunction}",
              "{note}", "{warning}", "{literalinclude}")
TOP_EXAMPLES = [path for path in EXAMPLES if os.path.dirname(path) == "examples"]
KINDS = ("python", "python synopsis", "sh", "console", "text")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)


class Block(NamedTuple):
    page: str
    line: int
    info: str
    body: str

    def where(self) -> str:
        return f"{self.page}:{self.line} (```{self.info})"


def blocks() -> Iterator[Block]:
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as file:
            text = file.read()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            body = textwrap.dedent(match.group("body"))
            yield Block(page, line, " ".join(match.group("info").split()), body)


ALL_BLOCKS = list(blocks())


def block_id(block: Block) -> str:
    return f"{block.page}:{block.line}"


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as file:
        return file.read()


# -- python: an excerpt of an example --------------------------------------
def pieces(body: str) -> List[List[str]]:
    """The block cut at blank lines, each piece dedented, trailing spaces dropped."""
    result, current = [], []
    for line in body.splitlines() + [""]:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            result.append(textwrap.dedent("\n".join(current)).splitlines())
            current = []
    return result


def find_in(lines: List[str], piece: List[str], start: int) -> int:
    """Index after ``piece`` in ``lines`` (compared dedented), searching from ``start``; -1 if absent."""
    for index in range(start, len(lines) - len(piece) + 1):
        window = [line.rstrip() for line in lines[index:index + len(piece)]]
        if textwrap.dedent("\n".join(window)).splitlines() == piece:
            return index + len(piece)
    return -1


def excerpt_of(body: str, path: str) -> bool:
    lines, position = read(path).splitlines(), 0
    for piece in pieces(body):
        position = find_in(lines, piece, position)
        if position < 0:
            return False
    return True


# -- sh/console: commands a test checks ------------------------------------
def extras() -> Dict[str, str]:
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return dict(config["options.extras_require"])


def check_netmux_command(args: List[str]) -> None:
    """Every option named is one the command line accepts; the server named exists.

    Square brackets (a synopsis' optional parts) are ignored; a word in capitals
    (``SERVER``, ``H``) is a placeholder.
    """
    from netmux import apps, cli
    parser, children, _ = cli._parser()
    takes_value = {option: action.nargs != 0
                   for each in (parser, *children.values()) for action in each._actions
                   for option in action.option_strings}
    words = [arg.strip("[]") for arg in args]
    expecting_value = False
    for word in words:
        if expecting_value:
            expecting_value = False
        elif word.startswith("-"):
            option = word.split("=")[0]
            assert option in takes_value, f"python -m netmux has no option {option}"
            expecting_value = takes_value[option] and "=" not in word
        elif not word.isupper():
            assert word in apps.SERVERS, f"python -m netmux has no server {word!r}"


def check_command(command: str) -> None:
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "netmux"]:
        check_netmux_command(words[3:])
    elif words[:2] == ["python", "-m"] and words[2].startswith("netmux.apps."):
        from netmux import apps                  # an app module run on its own: the same options
        names = {module: name for name, module in apps.SERVERS.items()}
        module = words[2][len("netmux.apps."):]
        assert module in names, f"{words[2]} is not a server module of netmux/apps"
        check_netmux_command([names[module], *words[3:]])
    elif words == ["python3", "-m", "venv", ".venv"] or words == [".", ".venv/bin/activate"]:
        pass                                     # README's venv step, as .ci/run makes its venvs
    elif words[:3] == ["python", "-m", "pytest"] or words[:3] == ["python", "-m", "sphinx"]:
        pass                                     # .ci/run runs both
    elif words[:3] == ["python", "-m", "doctest"]:
        assert words[3] in PAGES, f"{words[3]} is not a page this test runs as doctests"
    elif words[:1] == ["python"] and words[1].startswith("examples/"):
        assert words[1] in EXAMPLES, f"{words[1]} does not exist"
    elif words[:1] == ["python"] and words[1].startswith("bench/"):
        assert os.path.exists(os.path.join(ROOT, words[1])), f"{words[1]} does not exist"
    elif words[:2] == ["pip", "install"]:
        for target in words[2:]:
            name, _, extra = target.partition("[")
            assert name == ".", f"pip install {target}: only '.' and its extras are documented"
            for wanted in filter(None, extra.rstrip("]").split(",")):
                assert wanted in extras(), f"setup.cfg has no extra {wanted!r}"
    elif words[:1] in (["nc"], ["curl"], ["redis-cli"], ["redis-benchmark"], ["wrk"]):
        pass                                     # a client for a server the page starts
    else:
        raise AssertionError(f"no test checks the command {command!r}: add a check to "
                             f"check_command() in tests/test_docs.py, or show it as ```text")


def commands(block: Block) -> Iterator[str]:
    body = re.sub(r"\\\n *", " ", block.body)          # a line continued with a backslash
    for line in body.splitlines():
        if block.info == "console":
            if not line.startswith("$ "):
                continue                         # output
            line = line[2:]
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            for command in line.split("&&"):
                yield command.strip()


# -- the tests ---------------------------------------------------------------
@pytest.mark.parametrize("block", ALL_BLOCKS, ids=block_id)
def test_every_code_block_is_a_doctest_or_a_file_a_test_runs(block):
    if block.info.startswith("{literalinclude}"):
        path = os.path.relpath(os.path.normpath(os.path.join(ROOT, os.path.dirname(block.page),
                                                             block.info.split()[1])), ROOT)
        assert path in EXAMPLES + TESTS, f"{block.where()}: {path} is not under examples/ or tests/"
        return
    if block.info.split(" ")[0] in DIRECTIVES:
        return
    titled = re.fullmatch(r'python title="([^"]+)"', block.info)
    if titled:
        path = titled.group(1)
        assert path in EXAMPLES, f"{block.where()}: {path} is not a file under examples/"
        with open(os.path.join(ROOT, path)) as file:
            assert file.read() == block.body, f"{block.where()}: the block differs from {path}"
        return
    if block.info not in KINDS:
        pytest.fail(f"{block.where()}: say what the block is: ```python (a doctest with >>>, "
                    f"or an excerpt of a file under examples/), ```python synopsis (an API "
                    f"outline), ```sh / ```console (commands a test checks) or ```text "
                    f"(output, diagrams). See the top of tests/test_docs.py.")
    if block.info == "python" and ">>>" not in block.body:
        matches = [path for path in EXAMPLES + TESTS if excerpt_of(block.body, path)]
        assert matches, (
            f"{block.where()} is not an excerpt of any file under examples/. Put the program "
            f"in a file under examples/ (with a --demo that exits by itself) and show it "
            f"verbatim: each blank-line-separated piece of the block must appear in that "
            f"file, in order, indentation aside. Or make it a doctest (>>>), or mark an API "
            f"outline ```python synopsis.")
    elif block.info == "python synopsis":
        for dotted in re.findall(r"\bnetmux((?:\.\w+)+)", block.body):
            target = netmux
            for name in dotted.strip(".").split("."):
                assert hasattr(target, name), f"{block.where()}: netmux{dotted} does not exist"
                target = getattr(target, name)
    elif block.info in ("sh", "console"):
        for command in commands(block):
            try:
                check_command(command)
            except AssertionError as exc:
                raise AssertionError(f"{block.where()}: {exc}") from None


@pytest.mark.parametrize("page", PAGES)
def test_every_pages_doctests_pass(page):
    result = doctest.testfile(os.path.join(ROOT, page), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{page}: {result.failed} doctest(s) failed"


# Examples whose demo drives an outside program (conftest.py names its package when absent).
NEEDS_PROGRAMS = {"examples/tls_echo.py"}      # openssl makes the throwaway certificate


@pytest.mark.parametrize("example", [
    pytest.param(path, marks=pytest.mark.clients) if path in NEEDS_PROGRAMS else path
    for path in TOP_EXAMPLES])
def test_every_example_demo_runs(example):
    result = subprocess.run([sys.executable, os.path.join(ROOT, example), "--demo"],
                            capture_output=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, f"{example} --demo failed:\n{result.stderr.decode()}"
    assert result.stdout.strip(), f"{example} --demo printed nothing"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_leads_to_a_file_of_the_repository(page):
    text = FENCE.sub("", read(page))                 # links inside code blocks are code
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue                                 # a URL, or an anchor on the same page
        path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target.split("#")[0]))
        assert os.path.exists(path), f"{page}: the link ({target}) leads nowhere"


def test_the_python_m_netmux_commands_in_the_docs_really_parse():
    """The command-line check above trusts cli._parser(): it must be what main() uses."""
    result = subprocess.run([sys.executable, "-m", "netmux", "--help"], capture_output=True,
                            timeout=30, cwd=ROOT)
    assert result.returncode == 0 and b"--port" in result.stdout


def test_the_rule_rejects_what_it_should():
    assert not excerpt_of("print('not in the file')\n", "examples/line_echo.py")
    with pytest.raises(AssertionError):
        check_command("python -m netmux --no-such-option")
    with pytest.raises(AssertionError):
        check_command("python -m netmux.apps.resp --port 1")      # a module, not a server
    with pytest.raises(AssertionError):
        check_command("python -m netmux.apps.kv --no-such-option")
    with pytest.raises(AssertionError):
        check_command("rm -rf /")
    with pytest.raises(AssertionError):
        check_command("pip install '.[no-such-extra]'")


def test_every_public_name_is_in_the_api_reference():
    """docs/api.rst documents each name of ``netmux.__all__``: an ``automodule`` whose
    module exports it (autodoc's ``:members:`` follows the module's ``__all__``), or an
    ``autoclass``/``autofunction`` of it. A new public module fails here until added."""
    import importlib
    text = read(os.path.join("docs", "api.rst"))
    documented = set(re.findall(r"^\.\. auto(?:class|function|data|exception):: netmux\.(\w+)\s*$",
                                text, re.MULTILINE))
    for module_name in re.findall(r"^\.\. automodule:: (\S+)\n((?:   :\S.*\n)*)", text, re.MULTILINE):
        name, options = module_name
        assert ":members:" in options, f"docs/api.rst: automodule {name} without :members:"
        documented.update(importlib.import_module(name).__all__)
    missing = sorted(set(netmux.__all__) - documented)
    assert not missing, f"docs/api.rst does not document netmux.{', netmux.'.join(missing)}"


# The names API.md's reference (the acceptance pass's source) promises from ``netmux``.
API_NAMES = [
    "Reactor", "Handler", "Transport", "TCPTransport", "TCPServer", "UnixServer", "UDPServer",
    "DatagramHandler", "connect", "LineFramer", "NetstringFramer", "LengthPrefixFramer",
    "FramingError", "FramedHandler", "LineHandler", "StreamHandler", "IncompleteReadError",
    "sleep", "timeout", "CancelledError",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_every_name_of_the_api_reference_is_exported_from_netmux(name):
    assert name in netmux.__all__ and hasattr(netmux, name)


# -- the built site: every internal link leads somewhere ---------------------
class _Links(html.parser.HTMLParser):
    """The ids a page defines and the links (href, src) it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: Set[str] = set()
        self.links: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name in ("href", "src") and value and tag != "link" or name == "href" and \
                    tag == "link" and value and not value.startswith("http"):
                self.links.append(value)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The site, built as .ci/run builds it (every warning an error). The docs extra
    is not in the test extra: without it this skips, unless NETMUX_REQUIRE_DOCS=1
    (.ci/run sets it) makes that a failure."""
    import importlib.util
    missing = [name for name in ("sphinx", "myst_parser", "furo")
               if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"needs {', '.join(missing)}: pip install '.[docs]'"
        if os.environ.get("NETMUX_REQUIRE_DOCS") == "1":
            pytest.fail(f"{reason}: NETMUX_REQUIRE_DOCS=1 makes this a failure", pytrace=False)
        pytest.skip(reason)
    out = str(tmp_path_factory.mktemp("site"))
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                             "-b", "html", os.path.join(ROOT, "docs"), out],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, f"the docs build failed:\n{result.stderr.decode()[-5000:]}"
    return out


def test_every_internal_link_of_the_built_site_leads_to_a_page_and_its_anchor(site):
    pages: Dict[str, _Links] = {}
    for path in glob.glob(os.path.join(site, "**", "*.html"), recursive=True):
        parser = _Links()
        with open(path, encoding="utf-8") as file:
            parser.feed(file.read())
        pages[os.path.normpath(path)] = parser
    broken = []
    for path, parser in sorted(pages.items()):
        for link in parser.links:
            if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
                continue                              # http:, mailto:, data:, javascript:
            target, _, anchor = link.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(path), target.split("?")[0])) \
                if target else path
            where = f"{os.path.relpath(path, site)}: {link}"
            if not os.path.exists(target):
                broken.append(f"{where} (no such file)")
            elif anchor and target.endswith(".html") and anchor not in pages[target].ids:
                broken.append(f"{where} (no such anchor)")
    assert pages and not broken, "broken links in the site:\n" + "\n".join(broken)


# Furo's content column at a 1280 px window shows 90 characters of code; past
# that a block scrolls sideways and hides the end of its lines (the comments).
CODE_WIDTH = 88


@pytest.mark.parametrize("page", PAGES)
def test_every_code_line_the_site_shows_fits_the_column_at_1280_px(page):
    long_lines = []
    for block in (block for block in ALL_BLOCKS if block.page == page):
        if block.info.startswith("{literalinclude}"):
            path = os.path.normpath(os.path.join(os.path.dirname(page), block.info.split()[1]))
            lines, where = read(path).splitlines(), path
        elif block.info.split(" ")[0] in DIRECTIVES:
            continue
        else:
            lines, where = block.body.splitlines(), block.where()
        long_lines += [f"{where}: {len(line)} characters: {line}" for line in lines
                       if len(line) > CODE_WIDTH]
    assert not long_lines, f"longer than {CODE_WIDTH} characters:\n" + "\n".join(long_lines)


def test_the_course_reads_in_order_with_previous_and_next_links(site):
    """Furo's previous/next links follow the toctree: each step leads to the next one."""
    toctree = re.search(r"```\{toctree\}\n(.*?)```", read("docs/tutorial/index.md"), re.DOTALL)
    assert toctree, "docs/tutorial/index.md has no toctree"
    steps = ["index"] + [line.strip() for line in toctree.group(1).splitlines()
                         if line.strip() and not line.startswith(":")]
    for here, there in zip(steps, steps[1:]):
        with open(os.path.join(site, "tutorial", here + ".html"), encoding="utf-8") as file:
            page = file.read()
        assert f'class="next-page" href="{there}.html"' in page, f"{here}: no next link to {there}"
        with open(os.path.join(site, "tutorial", there + ".html"), encoding="utf-8") as file:
            assert f'class="prev-page" href="{here}.html"' in file.read(), \
                f"{there}: no previous link to {here}"
