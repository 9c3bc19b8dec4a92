"""The release as released: the sdist is the repository, the wheel is the package.

The sdist must hold every file ``git ls-files`` lists (bar OUTSIDE_THE_SDIST),
because its unpacked tree runs its own test suite and builds its own docs: a
helper the tests import (tests/conftest.py, tests/fragmenting.py), a page they
check or an example they run, left out of MANIFEST.in, is a collection error
only a user of the sdist would see. It must hold nothing else either (a stray
build product, an untracked file). This is what check-manifest checks, without
its build of its own.

The wheel is the package: every module of netmux/, py.typed (so type checkers
read our hints) and the license, and nothing outside netmux/ and its metadata.

Where the files come from: .ci/run builds them once (``python -m build``: the
sdist, then the wheel from the unpacked sdist) and passes their directory as
NETMUX_DIST; .ci/run then runs the unit suite on the oldest interpreter from
the unpacked sdist. Without NETMUX_DIST, this builds them from a copy of the
tracked files if the ``build`` package is installed, and skips saying so if not.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from typing import Dict, List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tracked but not released, each with its reason.
OUTSIDE_THE_SDIST = {
    ".gitignore": "git's own file",
    ".ci/run": "CI for a checkout: it installs Debian packages and builds the sdist itself",
}
# Released but not tracked: what the build writes into every sdist.
GENERATED = ("PKG-INFO", "netmux.egg-info/")


def tracked_files() -> List[str]:
    if shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout (an unpacked sdist): its completeness is checked "
                    "where it was built")
    output = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True, timeout=30).stdout.decode()
    return sorted(filter(None, output.split("\0")))


def build_here(out: str) -> None:
    """Build from a copy of the tracked files only, as check-manifest does."""
    try:
        import build  # noqa: F401  (only whether it is there)
    except ImportError:
        pytest.skip("needs the build package (pip install build), or NETMUX_DIST=DIR "
                    "holding python -m build's output, as .ci/run sets")
    source = os.path.join(out, "source")
    for path in tracked_files():
        os.makedirs(os.path.join(source, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), os.path.join(source, path))
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", out, source],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout.decode()[-3000:]}" \
                                   f"\n{result.stderr.decode()[-3000:]}"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """{'sdist': path, 'wheel': path}: NETMUX_DIST's files, or ones built here."""
    tracked_files()                               # skip first if nothing can be compared
    out = os.environ.get("NETMUX_DIST") or str(tmp_path_factory.mktemp("dist"))
    if not os.environ.get("NETMUX_DIST"):
        build_here(out)
    sdists = glob.glob(os.path.join(out, "netmux-*.tar.gz"))
    wheels = glob.glob(os.path.join(out, "netmux-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"{out}: want one sdist and one wheel, " \
                                                  f"found {os.listdir(out)}"
    return {"sdist": sdists[0], "wheel": wheels[0]}


def sdist_files(path: str) -> Set[str]:
    """The sdist's regular files, without the top directory netmux-VERSION/."""
    with tarfile.open(path) as archive:
        return {member.name.split("/", 1)[1] for member in archive.getmembers()
                if member.isfile()}


def test_the_sdist_holds_every_tracked_file(dist):
    missing = sorted(set(tracked_files()) - set(OUTSIDE_THE_SDIST) - sdist_files(dist["sdist"]))
    assert not missing, f"MANIFEST.in leaves out {missing}: the unpacked sdist's suite or " \
                        f"docs need them (or add them to OUTSIDE_THE_SDIST, with a reason)"


def test_the_sdist_holds_nothing_untracked(dist):
    extra = sorted(name for name in sdist_files(dist["sdist"]) - set(tracked_files())
                   if not name.startswith(GENERATED))
    assert not extra, f"the sdist has files git does not track: {extra}"


def test_the_sdist_leaves_out_only_what_is_listed_with_a_reason(dist):
    released = sdist_files(dist["sdist"])
    assert not set(OUTSIDE_THE_SDIST) & released
    assert {"tests/conftest.py", "tests/fragmenting.py", "LICENSE", "docs/conf.py"} <= released


def test_the_wheel_is_the_package_with_py_typed_and_the_license(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        fields = wheel.read(metadata).decode()
    modules = {path for path in tracked_files()
               if path.startswith("netmux/") and path.endswith(".py")}
    assert modules <= names, f"the wheel lacks {sorted(modules - names)}"
    assert "netmux/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
               for name in names), f"no LICENSE in the wheel's metadata: {sorted(names)}"
    stray = sorted(name for name in names
                   if not name.startswith("netmux/") and ".dist-info/" not in name)
    assert not stray, f"the wheel installs more than the package: {stray}"
    assert "License: MIT" in fields or "License-Expression: MIT" in fields
    assert "Requires-Python: >=3.9" in fields
