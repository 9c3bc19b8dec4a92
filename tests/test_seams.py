"""Modules lend each other public, documented names only: no module imports or
touches another module's ``_private`` name (STYLE.md: friends by name, not by
underscore). The scan reads netmux/ with ``ast``."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "netmux")


def _modules() -> Dict[str, ast.Module]:
    trees = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as file:
                    trees[os.path.relpath(path, ROOT)] = ast.parse(file.read(), path)
    return trees


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_here(tree: ast.Module) -> Set[str]:
    """Private names a module defines: functions, classes, attributes it assigns, slots."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _private(node.value):
            names.add(node.value)       # __slots__ entries
    return {name for name in names if _private(name)}


def _reaches(path: str, tree: ast.Module) -> List[str]:
    own = _defined_here(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path}:{node.lineno} imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            # self._x of a public base class is the subclass's own business; os._exit
            # is the standard library's documented way out of a forked child (workers.py).
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and (owner, node.attr) != ("os", "_exit"):
                found.append(f"{path}:{node.lineno} touches .{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                name = node.args[1].value
                if isinstance(name, str) and _private(name) and name not in own:
                    found.append(f"{path}:{node.lineno} reaches {name!r} by name")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    """What one module lends another has a public name; a subclass may use its
    public base class's ``self._x`` (udp.py's transport and server)."""
    reaches = [line for path, tree in sorted(_modules().items()) for line in _reaches(path, tree)]
    assert reaches == [], "private names crossing modules:\n" + "\n".join(reaches)
