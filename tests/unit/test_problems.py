"""Every problem code is listed once (shared/core/problems.py), with the status it is
answered with, in the OpenAPI documents' enumeration and in the README's table."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import services
import shared
from shared.core.errors import LedgerError
from shared.core.problems import PROBLEMS, ProblemCode
from shared.web.http import HttpProblemError

ROOT = Path(__file__).resolve().parents[2]


def _errors() -> dict[str, type[LedgerError]]:
    """Every LedgerError class of the code base, by name."""
    for package in (services, shared):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found: dict[str, type[LedgerError]] = {}
    waiting: list[type[LedgerError]] = [LedgerError]
    while waiting:
        cls = waiting.pop()
        assert found.setdefault(cls.__name__, cls) is cls, f"two errors named {cls.__name__}"
        waiting += cls.__subclasses__()
    return found


def test_every_code_is_listed_once_with_a_meaning() -> None:
    assert list(PROBLEMS) == list(get_args(ProblemCode))  # same codes, same order


def test_each_code_is_answered_with_the_status_the_list_gives() -> None:
    """Where the code is raised: an error class's own code, ``code=`` on raising one, and
    an HTTP-level problem's status and code side by side."""
    errors = _errors()
    for cls in errors.values():
        assert PROBLEMS[cls.code].status == cls.status or cls is HttpProblemError, cls
    raised = [found for path in _sources() for found in _raised(path, errors)]
    assert len(raised) > 40
    wrong = [
        (where, code, status) for where, code, status in raised if PROBLEMS[code].status != status
    ]
    assert not wrong


def _sources() -> list[Path]:
    return [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]


def _raised(path: Path, errors: dict[str, type[LedgerError]]) -> Iterator[tuple[str, Any, int]]:
    """(where, code, status) for each problem ``path`` names with a literal code."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        where, name, args = f"{path.name}:{node.lineno}", node.func.id, node.args
        if name in {"HttpProblemError", "problem_response"} and len(args) >= 2:
            status, code = args[0], args[1]
            if isinstance(code, ast.Constant) and isinstance(status, ast.Constant):
                yield where, code.value, int(str(status.value))
        elif name in errors:
            codes = [k.value for k in node.keywords if k.arg == "code"]
            yield from (
                (where, code.value, errors[name].status)
                for code in codes
                if isinstance(code, ast.Constant)
            )


def test_the_readme_lists_every_code_as_the_list_does() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- problem-codes -->")[1]
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \| (.+) \|$", section, re.MULTILINE)
    assert [(code, int(status), meaning) for code, status, meaning in rows] == [
        (code, problem.status, problem.meaning) for code, problem in PROBLEMS.items()
    ]
