"""constraints.txt pins every Python dependency, and the suite runs on exactly those pins.

The image (deploy/Dockerfile) installs under the same file, so what ops teams run is what
passed here, not whatever PyPI serves on the day the image is built.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from deploy.stack import ROOT

PROJECT = "devolved-budgets-ledger"
# The installer's own tools: in every venv, never imported by the ledger.
INSTALLER = {"pip", "setuptools", "wheel"}


def normalised(name: str) -> str:
    """A distribution's name as the package index compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    entries = [line for line in lines if line.strip() and not line.startswith("#")]
    pinned = {}
    for entry in entries:
        name, _, version = entry.partition("==")
        assert version, f"not pinned to one version: {entry!r}"
        pinned[normalised(name)] = version
    return pinned


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["dev"], *extras["bench"]]
    return {normalised(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def test_every_declared_dependency_is_pinned() -> None:
    assert declared() <= set(pins())


def test_the_suite_runs_on_exactly_the_pinned_versions() -> None:
    installed = {
        normalised(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    installed.pop(PROJECT)
    for name in INSTALLER:
        installed.pop(name, None)
    assert installed == pins()


def test_the_image_installs_under_the_same_pins() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.MULTILINE)
    assert re.search(r"pip install .*--constraint constraints\.txt \.", dockerfile)
    build_context = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!constraints.txt" in build_context


def test_every_pin_runs_on_the_oldest_python_the_project_supports() -> None:
    """Debian bookworm's own Python is 3.11.2: a pin that needs 3.11.5 (soupsieve 4.1.3 did)
    cannot be installed there, though pyproject.toml promised 3.11."""
    supported = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    oldest = Version(next(s.version for s in SpecifierSet(supported) if s.operator == ">="))
    needs_newer = {
        normalised(dist.metadata["Name"]): dist.metadata["Requires-Python"]
        for dist in metadata.distributions()
        if normalised(dist.metadata["Name"]) in pins()
        and dist.metadata["Requires-Python"]
        and oldest not in SpecifierSet(dist.metadata["Requires-Python"])
    }
    assert needs_newer == {}, f"pins that Python {oldest} cannot install"
