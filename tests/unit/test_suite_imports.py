"""The suite imports up front what a property-based test would otherwise import mid-test
(see the note in ``tests/conftest.py``: a module parsed mid-test can meet a finalizer that
parses too, which CPython 3.11 does not survive)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs a property with a target, as the suite's own do, after importing only the fixtures,
# and prints the Hypothesis modules that the run itself had to import.
_PROBE = """
import sys
import tests.conftest
from hypothesis import given, settings, strategies as st, target

before = set(sys.modules)

@settings(max_examples=20, database=None)
@given(st.lists(st.integers(0, 9), max_size=4))
def prop(values):
    target(float(len(values)))

prop()
print(" ".join(sorted(m for m in set(sys.modules) - before if m.startswith("hypothesis"))))
"""


def test_no_hypothesis_module_is_first_imported_during_a_test() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == []
