"""The tree's layers are enforced: import-linter's contracts hold, and break on a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.stack import ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``shared`` and ``services`` packages found in ``tree``."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    """The project as it stands: every contract kept."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "broken"),
    [
        ("shared/core/events.py", "import shared.web.http", "layers import only downward"),
        ("shared/contracts/views.py", "import shared.cli.main", "layers import only downward"),
        ("shared/web/http.py", "import services.allocation.families", "never imports a service"),
        ("services/spending/views.py", "import services.approval.decisions", "independent"),
        ("services/approval/decisions.py", "import asyncpg", "pure"),
    ],
)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, wrong_import: str, broken: str
) -> None:
    """A copy of the tree with one import that crosses a boundary fails lint-imports, and
    names the contract it breaks (among any others it also breaks)."""
    for package in ("shared", "services"):
        shutil.copytree(ROOT / package, tmp_path / package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # a deliberately wrong import\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    broken_lines = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(broken in line for line in broken_lines), result.stdout
