"""The project's engine started again over its own data, as a second ``make compose-test``
on the same checkout starts it (after the stack's test, which leaves it running), and stopped
after it was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from deploy.engine import ENGINE, Engine, mounts_under
from deploy.stack import ROOT, read_pid


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


def test_an_engine_killed_is_stopped_and_started_again() -> None:
    """dockerd killed (a run cut short) left its mounts under ``.local/engine`` (its data
    root bound over itself), so the checkout could not be deleted ("rm: cannot remove ...:
    Device or resource busy"), and its pid files, so the next one would not start ("pid
    file found, ensure docker is not running"). ``stop`` takes both away."""
    pid = read_pid(ENGINE / "dockerd.pid")
    assert pid is not None
    assert mounts_under(ENGINE) != []
    os.kill(pid, signal.SIGKILL)
    _engine("stop")
    assert mounts_under(ENGINE) == []
    _engine("start")
    assert Engine().running()
