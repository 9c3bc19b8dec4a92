"""Sphinx configuration for netmux's documentation site.

Why Sphinx with MyST rather than MkDocs: the pages stay plain Markdown that reads
well on GitHub (MyST), while autodoc builds the API reference from the docstrings
themselves, the one place they are written, and imports the modules it documents,
so a renamed or undocumented public name breaks the build. Sphinx's ``-W`` makes
every broken reference an error. MkDocs would need mkdocstrings and its Python
handler on top to do the same. The theme is Furo (pip's, attrs' and black's): a
content column that fits code lines of 88 characters at 1280 px, a phone layout,
and previous/next links that follow the toctree, so the course reads in order.

The README stays the repository's front page; the site shows it in parts, each on
a page of its own (README_PAGES below), and rewrites the README's links that
cross from one part to another, or to a repository file the site also shows, so
that they work on both. tests/test_docs.py builds the site and follows every
internal link of its HTML.

Build: python -m sphinx -W --keep-going -b html docs /tmp/netmux-docs
"""
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)                         # netmux: imported, not installed

project = "netmux"
author = "the netmux authors"
copyright = "the netmux authors, MIT licence"
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}   # api.rst: autodoc writes rST
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 3                         # [text](page.md#a-heading) links work
# A link to a repository file the site does not show (none today) cannot resolve
# here; tests/test_docs.py checks every relative link against the repository and
# every link of the built site against its HTML, so silence MyST's own warning.
suppress_warnings = ["myst.xref_missing"]
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# viewcode's own option: on, a member whose value comes from another module (a
# class attribute set to a framer class) files that module's source page under
# the first module that mentioned it, and the page's [docs] links go nowhere.
viewcode_follow_imported_members = False

html_theme = "furo"
html_title = "netmux"
pygments_style = "friendly"
pygments_dark_style = "monokai"

# -- the README, in parts ------------------------------------------------------
# docname: (the README heading its part starts after, the heading it stops before);
# None is the README's first line (its title) or its end. Each page includes
# ../README.md whole: include_readme_part() below cuts its part out.
README_PAGES: Dict[str, Tuple[Optional[str], Optional[str]]] = {
    "start": (None, "## The command line"),
    "command-line": ("## The command line", "## The modules, one per layer"),
    "guide": ("## The modules, one per layer", "## Tests"),
    "development": ("## Tests", "## Documentation"),
}
# Repository files the site shows on a page of its own, as the README links them.
SITE_COPIES = {"bench/README.md": "docs/benchmarks.md"}


def slug(heading: str) -> str:
    """The anchor MyST (and GitHub) give a heading: lower case, punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_part(text: str, docname: str) -> str:
    start, stop = README_PAGES[docname]
    begin = text.index(start) + len(start) if start else text.index("\n") + 1
    end = text.index("\n" + stop + "\n") if stop else len(text)
    return text[begin:end]


def anchor_pages(text: str) -> Dict[str, str]:
    """{anchor: docname} for every README heading in a part the site shows."""
    pages = {}
    for docname in README_PAGES:
        for heading in re.findall(r"^#{2,4} (.+)$", readme_part(text, docname), re.MULTILINE):
            pages[slug(heading)] = docname
    return pages


def retarget(link: str, docname: str, pages: Dict[str, str]) -> str:
    """A README link as the page ``docname`` must write it."""
    path, _, anchor = link.partition("#")
    if not path and pages.get(anchor, docname) != docname:
        return f"docs/{pages[anchor]}.md#{anchor}"
    if path in SITE_COPIES:
        return SITE_COPIES[path] + (f"#{anchor}" if anchor else "")
    return link


def include_readme_part(app: object, relative_path: object, parent_docname: str,
                        content: List[str]) -> None:
    """Sphinx's include-read event: the README's part for this page, links retargeted."""
    if os.path.basename(str(relative_path)) != "README.md" or parent_docname not in README_PAGES:
        return
    pages = anchor_pages(content[0])
    part = readme_part(content[0], parent_docname)
    content[0] = re.sub(r"\]\(([^)\s]+)\)",
                        lambda match: f"]({retarget(match.group(1), parent_docname, pages)})",
                        part)


def setup(app: object) -> None:
    app.connect("include-read", include_readme_part)  # type: ignore[attr-defined]
