"""Long-lived background work with ``start()``/``stop()`` and ``async with``."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from typing import Self

__all__ = ["BackgroundTask"]


class BackgroundTask(abc.ABC):
    """A task that runs until asked to stop, finishes what it holds, and is then awaited.

    Subclasses implement :meth:`_run`, look at ``self._stopping`` between units of work,
    and wait between them with :meth:`_pause`, which a stop (or new work, through
    :meth:`_wake`) cuts short.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    @property
    def running(self) -> bool:
        """The task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Begin in the background."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self._name)

    def _wake(self) -> None:
        """Interrupt a pause, so that a stop (or new work) is seen at once."""
        self._woken.set()

    async def _pause(self, seconds: float) -> None:
        """Wait until woken or ``seconds`` have passed; a wake that comes while the task
        works is kept for its next pause, so none is lost."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)
        self._woken.clear()

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the task to finish within ``grace`` seconds; cancel it after that."""
        if self._task is None:
            return
        self._stopping = True
        self._wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @abc.abstractmethod
    async def _run(self) -> None:
        """The work, until ``self._stopping``."""
