"""docs/architecture.svg is what docs/architecture_svg.py draws, and names real code."""
from __future__ import annotations

import importlib.util
import os

import netmux

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location("architecture_svg",
                                                  os.path.join(ROOT, "docs", "architecture_svg.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_svg_is_exactly_what_the_script_draws():
    with open(os.path.join(ROOT, "docs", "architecture.svg"), encoding="utf-8", newline="") as file:
        committed = file.read()
    assert committed == load_script().render(), \
        "docs/architecture.svg is stale: run python docs/architecture_svg.py and commit it"


def test_every_source_name_in_the_picture_exists_in_netmux():
    script = load_script()
    svg = script.render()
    assert script.CODE_NAMES
    for dotted in script.CODE_NAMES:
        assert dotted in svg, f"{dotted} is listed but not drawn"
        owner, attribute = dotted.split(".")
        assert hasattr(getattr(netmux, owner), attribute), f"netmux.{dotted} does not exist"


def test_the_architecture_page_shows_the_svg():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as file:
        assert "](architecture.svg)" in file.read()
