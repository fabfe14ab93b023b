"""Writes as statements of their own, or a command's writes gathered into one statement.

A write is one or more data-modifying CTEs (an ``INSERT`` and what it feeds, say) with
their arguments. Run alone (:func:`write`), it is one statement. In a command whose writes
are gathered (:func:`gathered`), the command's events with their outbox rows, the rows
that index them, a new sealing key and the answer kept under its ``Idempotency-Key`` all go
to PostgreSQL as one statement once it has decided: a single statement is atomic by
itself, so such a command needs no transaction, and takes two round trips (its reads, its
writes) where a transaction takes one each for BEGIN, every statement and COMMIT.

No two writes gathered for one statement may change the same row: PostgreSQL would apply
only one of them (a command's writes insert rows of their own: events, outbox rows, index
rows, a key, an answer).

A unique constraint a write names in ``races`` is one another writer may take first (a
stream's next version, a subject's first key): its violation is a
:class:`~shared.core.errors.ConcurrencyError` (with what the write says it means), which
the command runner retries.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial

import asyncpg

from shared.core.db import Connection
from shared.core.errors import ConcurrencyError

__all__ = ["Write", "Writes", "gathered", "gathering", "write"]

_PARAMETER = re.compile(r"\$(\d+)")


def _renumbered(parameter: re.Match[str], *, offset: int) -> str:
    return f"${int(parameter[1]) + offset}"


@dataclass(frozen=True)
class Write:
    """Data-modifying CTEs, each ``(name, statement)``; a statement refers to an earlier
    one of the same write as ``{name}`` (its ``RETURNING`` rows), and to its arguments as
    ``$1``, ``$2``, … of ``args``."""

    ctes: tuple[tuple[str, str], ...]
    args: tuple[object, ...]
    # The unique constraints another writer may take first, each with what losing it means.
    races: Mapping[str, str] = field(default_factory=dict)
    notify: str | None = None  # a channel to notify once the write commits

    @classmethod
    def of(cls, statement: str, *args: object, races: Mapping[str, str] | None = None) -> Write:
        """A write of one statement."""
        return cls((("written", statement),), args, races or {})


@dataclass
class Writes:
    """The writes of one command, in the order it made them, to be sent as one statement."""

    parts: list[Write] = field(default_factory=list)

    def add(self, part: Write) -> None:
        self.parts.append(part)

    def statement(self) -> tuple[str, list[object]]:
        """One statement of every write's CTEs, with names and parameters numbered apart;
        it notifies each channel the writes name (once) and returns nothing."""
        ctes: list[str] = []
        args: list[object] = []
        channels: list[str] = []
        for index, part in enumerate(self.parts):
            offset = len(args)
            names = {name: f"{name}_{index}" for name, _ in part.ctes}
            for name, written in part.ctes:
                sql = written
                for local, unique in names.items():
                    sql = sql.replace("{" + local + "}", unique)
                sql = _PARAMETER.sub(partial(_renumbered, offset=offset), sql)
                ctes.append(f"{names[name]} AS ({sql.strip()})")
            args.extend(part.args)
            if part.notify is not None and part.notify not in channels:
                channels.append(part.notify)
        notified = []
        for channel in channels:
            args.append(channel)
            notified.append(f"pg_notify(${len(args)}, '')")
        last = f"SELECT {', '.join(notified)}" if notified else "SELECT"
        return f"WITH {', '.join(ctes)}\n{last}", args

    async def send(self, conn: Connection) -> None:
        """Run the writes as one statement: all of them, or (raising) none."""
        if not self.parts:
            return
        statement, args = self.statement()
        try:
            await conn.execute(statement, *args)
        except asyncpg.UniqueViolationError as error:
            for part in self.parts:
                lost = part.races.get(error.constraint_name or "")
                if lost is not None:
                    raise ConcurrencyError(lost) from error
            raise


_GATHERING: ContextVar[Writes | None] = ContextVar("writes_gathering", default=None)


def gathering() -> Writes | None:
    """The writes this task's command is gathering, if its writes are gathered."""
    return _GATHERING.get()


@contextlib.contextmanager
def gathered() -> Iterator[Writes]:
    """Within this block, :func:`write` adds to the writes it yields instead of running
    them; the caller sends them once the command has decided (:meth:`Writes.send`)."""
    writes = Writes()
    token = _GATHERING.set(writes)
    try:
        yield writes
    finally:
        _GATHERING.reset(token)


async def write(conn: Connection, part: Write) -> None:
    """Run a write now, as a statement of its own, or add it to the command's gathered ones."""
    writes = gathering()
    if writes is not None:
        writes.add(part)
    else:
        await Writes([part]).send(conn)
