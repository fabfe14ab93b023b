"""The event loop every process of the ledger runs on: uvloop's, on libuv.

Measured with the benchmark harness, it takes less of the processor per request than
asyncio's own loop (``bench/RESULTS.md``); the tests' in-process apps keep pytest's asyncio
loop, and everything the services and the CLI do runs the same on both.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a new uvloop event loop, as ``asyncio.run`` does."""
    return uvloop.run(main)
