"""The package: `pip install` of the checkout gives an `imgsim` command that works from any
directory, one version, and one list of dependencies (pinned in requirements.txt)."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement

import imgsim


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))


def _pins(file: str = "requirements.txt") -> list[Requirement]:
    lines = (REPO / file).read_text("utf-8").splitlines()
    return [Requirement(line) for line in (ln.split(" #")[0].strip() for ln in lines)
            if line and not line.startswith(("#", "-"))]


def test_requirements_pin_the_packages_pyproject_asks_for_within_its_ranges():
    ranges = {(r.name, str(r.marker)): r for r in map(Requirement, _pyproject()["project"]["dependencies"])}
    pins = {(r.name, str(r.marker)): r for r in _pins()}
    assert set(pins) == set(ranges)
    for key, pin in pins.items():
        exact = [spec for spec in pin.specifier if spec.operator == "=="]
        if not exact:  # not pinned: the same range in both
            assert pin.specifier == ranges[key].specifier, (key, pin, ranges[key])
            continue
        [spec] = exact  # an exact version or a wildcard (12.*), inside pyproject's range
        assert ranges[key].specifier.contains(spec.version.replace(".*", ".0")), (key, spec, ranges[key])


def test_the_test_requirements_install_every_extra_at_its_version():
    """CI runs the tests of the optional parts (the ray extra: tests/test_ray.py) with what users get."""
    pins = {r.name: r for r in _pins("requirements-dev.txt")}
    extras = _pyproject()["project"]["optional-dependencies"]
    assert extras
    for wanted in (Requirement(r) for reqs in extras.values() for r in reqs):
        assert wanted.name in pins and pins[wanted.name].specifier == wanted.specifier, (wanted, pins)


def test_the_version_is_written_once():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "imgsim.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", imgsim.__version__)


def _not_in_a_clone(folder: str, names: list[str]) -> set[str]:
    """What a clean clone lacks: the virtual environment, caches, build outputs, local data."""
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
    if Path(folder) == REPO:
        skip |= {"data", "artifacts", "test-artifacts"}
    return {n for n in names if n in skip or n.endswith(".egg-info")}


@pytest.mark.slow
def test_pip_install_gives_an_imgsim_command_that_works_from_any_directory(tmp_path):
    """A wheel built from the checkout (offline, with this interpreter's setuptools) installs into a
    fresh venv with only the engine's packages, and its console script runs from another folder."""
    checkout = tmp_path / "checkout"  # setuptools builds in the tree (build/, *.egg-info): a copy
    shutil.copytree(REPO, checkout, ignore=_not_in_a_clone)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-w", str(wheels), str(checkout)],
                   check=True, capture_output=True, cwd=tmp_path)
    [wheel] = wheels.glob("imgsim-*.whl")
    assert wheel.name.startswith(f"imgsim-{imgsim.__version__}-")
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    subprocess.run([target / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    installed = sorted(p.name for p in (target / "lib").glob("python3.*/site-packages/*")
                       if not p.name.startswith(("_", "pip", "setuptools", "pkg_resources", "distutils")))
    assert [n for n in installed if not n.startswith("imgsim")] == [], installed  # no pages/, assets/, tests/
    # The dependencies come from this interpreter's site-packages (PYTHONPATH does not read their
    # .pth files, so an editable imgsim there stays out); the package itself from the new venv.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    away = tmp_path / "elsewhere"
    away.mkdir()
    command = target / "bin" / "imgsim"
    helptext = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=away, env=env)
    assert helptext.returncode == 0 and helptext.stdout.startswith("usage: imgsim "), helptext.stderr
    where = subprocess.run([target / "bin" / "python", "-c", "import imgsim; print(imgsim.__file__)"],
                           capture_output=True, text=True, cwd=away, env=env).stdout
    assert Path(where).is_relative_to(target)
    missing = subprocess.run([command, "info", str(away / "nothing")], capture_output=True, text=True,
                             cwd=away, env=env)
    assert missing.returncode == 2
    assert missing.stderr == (f"imgsim info: error: no catalogue at {away / 'nothing'}; "
                              f"build one with: imgsim build SOURCE --out {away / 'nothing'}\n")
