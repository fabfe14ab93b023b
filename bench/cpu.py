"""CPU time spent by a set of processes, from /proc: what a request costs the whole system.

On a 2-core machine shared by the load generator, PostgreSQL, Kafka and four services,
requests per second mostly measure the neighbours; CPU seconds per request do not. A
meter sums user and system time over its root processes and every live descendant, and
each root's reaped children (``cutime``/``cstime``: PostgreSQL's backends that came and
went). The load generator is not among them. What the stack spends while idle (relay
polls, lag watches) is measured first and taken off, so that the figure is the work's.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = ["CpuMeter", "Measured", "measured"]

T = TypeVar("T")
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            found.setdefault(int(fields[1]), []).append(int(entry.name))
    return found


@dataclass(frozen=True)
class CpuMeter:
    """The CPU seconds ``roots`` and their descendants have used so far."""

    roots: Sequence[int]

    def seconds(self) -> float:
        return sum(self.by_root().values())

    def by_root(self) -> dict[int, float]:
        """Each root's CPU seconds, its descendants' included."""
        children = _children()
        found: dict[int, float] = {}
        for root in self.roots:
            fields = _stat(root)
            if fields is None:
                continue
            # utime, stime, cutime, cstime: fields 14 to 17 of /proc/<pid>/stat.
            ticks = sum(int(value) for value in fields[11:15])
            waiting = list(children.get(root, []))
            while waiting:
                pid = waiting.pop()
                if (own := _stat(pid)) is not None:
                    ticks += int(own[11]) + int(own[12])
                waiting += children.get(pid, [])
            found[root] = ticks / _TICK
        return found

    async def rate(self, seconds: float) -> float:
        """CPU seconds used per second over the next ``seconds``."""
        before, started = self.seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        return (self.seconds() - before) / (time.monotonic() - started)


@dataclass(frozen=True)
class Measured:
    """The work's CPU seconds (the idle rate taken off), how long until quiet, and each
    root's share (its own idle rate not taken off: where the time went)."""

    cpu_seconds: float
    idle_per_s: float
    wall_seconds: float
    by_root: dict[int, float]

    def totals(self) -> dict[str, float]:
        """The figures a report keeps (the process ids mean nothing after the run)."""
        return {
            "cpu_seconds": self.cpu_seconds,
            "idle_per_s": self.idle_per_s,
            "wall_seconds": self.wall_seconds,
        }


async def measured(meter: CpuMeter, work: Callable[[], Awaitable[T]]) -> tuple[T, Measured]:
    """Run ``work``; then wait until the processes are as quiet as before it (consumers done
    with what it left them, at most a minute), and say what it cost them."""
    idle = await meter.rate(3.0)
    before, started = meter.by_root(), time.monotonic()
    result = await work()
    for _ in range(60):
        if await meter.rate(1.0) <= 1.5 * idle + 0.02:
            break
    wall = time.monotonic() - started
    after = meter.by_root()
    shares = {root: round(after[root] - before.get(root, 0.0), 3) for root in after}
    spent = sum(after.values()) - sum(before.values()) - idle * wall
    return result, Measured(round(spent, 3), round(idle, 4), round(wall, 1), shares)
