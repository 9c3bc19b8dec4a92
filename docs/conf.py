"""Sphinx configuration for netmux's documentation site.

Why Sphinx with MyST rather than MkDocs: the pages stay plain Markdown that reads
well on GitHub (MyST), while autodoc builds the API reference from the docstrings
themselves, the one place they are written (STYLE.md: one fact, one place), and
imports the modules it documents, so a renamed or undocumented public name breaks
the build. Sphinx's ``-W`` makes every broken reference an error. MkDocs would need
mkdocstrings and its Python handler on top to do the same.

Build: python -m sphinx -W --keep-going -b html docs /tmp/netmux-docs
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # netmux: imported, not installed

project = "netmux"
author = "the netmux authors"
copyright = "the netmux authors, MIT licence"
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}   # api.rst: autodoc writes rST
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 3                         # [text](page.md#a-heading) links work
# README links to repository files outside this site (bench/README.md), which
# Sphinx cannot resolve; tests/test_docs.py checks that every relative link of
# every page leads to an existing file instead, on GitHub and here alike.
suppress_warnings = ["myst.xref_missing"]
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"


html_theme = "alabaster"
html_title = "netmux"
