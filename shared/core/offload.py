"""Work too heavy for a service's event loop, done in a worker thread, one piece at a time.

Reading a bank statement, a pilot's trial dataset or dashboard, a policy what-if: each grows
with a pilot and runs in pure Python. Run on the event loop, four large statements stalled
spending for 23 s (its ``/readyz`` failed and it fell out of its consumer group). In a
thread the loop still runs between the thread's slices of the interpreter (a few
milliseconds each); one piece at a time per process keeps several from taking both cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from weakref import WeakKeyDictionary

__all__ = ["off_loop"]

P = ParamSpec("P")
T = TypeVar("T")

_GATES: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


async def off_loop(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args, **kwargs)`` in a worker thread, after any other such work of this
    process has finished; the caller's context (log fields, trace) goes with it."""
    loop = asyncio.get_running_loop()
    gate = _GATES.setdefault(loop, asyncio.Semaphore(1))
    async with gate:
        return await asyncio.to_thread(work, *args, **kwargs)
