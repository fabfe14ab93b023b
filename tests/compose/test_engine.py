"""The project's engine started again over its own data, as a second ``make compose-test``
on the same checkout starts it (after the stack's test, which leaves it running)."""

from __future__ import annotations

import subprocess
import sys

from deploy.engine import Engine
from deploy.stack import ROOT


def _engine(command: str) -> None:
    subprocess.run([sys.executable, "deploy/engine.py", command], cwd=ROOT, check=True)


def _chain(name: str) -> list[str]:
    listed = subprocess.run(
        ["iptables", "-S", name], capture_output=True, text=True, check=True
    ).stdout
    return listed.splitlines()


def test_a_restarted_engine_still_forwards_only_into_its_bridges() -> None:
    _engine("stop")
    _engine("start")  # over the data the first start left: its networks are loaded, not made
    assert Engine().running()
    assert "-A FORWARD -j DOCKER-USER" in _chain("FORWARD")
    assert _chain("DOCKER-USER")[-2:] == [
        "-A DOCKER-USER -o br-+ -j RETURN",
        "-A DOCKER-USER -j DROP",
    ]
