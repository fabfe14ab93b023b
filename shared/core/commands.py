"""Running a command: one transaction, idempotency keys, bounded retries on concurrency.

A handler receives a connection inside a transaction, loads what it needs, decides and
appends; the runner records the response under the caller's ``Idempotency-Key`` in that
same transaction, so a retried request either finds the first response or runs afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.core.db import Connection
from shared.core.errors import (
    ConcurrencyError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    LedgerError,
    UnauthorizedError,
)
from shared.core.events import canonical_json
from shared.core.eventstore import REHEARSAL

__all__ = [
    "CommandResult",
    "CommandRunner",
    "IdempotencyRequest",
    "SpoiledTogetherError",
    "fingerprint",
]

_CLAIM = """
INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING 1
"""
_STORED = "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2"
_REMEMBER = "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2"


@dataclass(frozen=True)
class _Together:
    """The transaction that commands run in together (CommandRunner.together)."""

    conn: Connection
    savepoints: bool


_TOGETHER: ContextVar[_Together | None] = ContextVar("commands_together", default=None)


class SpoiledTogetherError(Exception):
    """A command run together without savepoints failed once it had begun in the shared
    transaction: what it did cannot be undone alone. Leave the block (which undoes all of
    it) and run its commands again with savepoints."""


@dataclass(frozen=True)
class CommandResult:
    """What a command answers: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]
    replayed: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class IdempotencyRequest:
    """An ``Idempotency-Key`` within a caller's scope, and the fingerprint of what it asked."""

    scope: str
    key: str
    fingerprint: str


def fingerprint(method: str, path: str, body: object) -> str:
    """The same request, whatever its JSON's spacing or key order, has the same fingerprint."""
    return hashlib.sha256(canonical_json([method, path, body])).hexdigest()


Handler = Callable[[Connection], Awaitable[CommandResult]]


class CommandRunner:
    """Runs handlers in transactions on one service's pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, attempts: int = 8) -> None:
        self._pool = pool
        self._attempts = attempts

    async def run(self, handler: Handler, idempotency: IdempotencyRequest | None) -> CommandResult:
        """Run once, or answer as the first run did; retry when another writer won a race."""
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._run_once(handler, idempotency)
            except ConcurrencyError:
                if attempt == self._attempts:
                    raise
                # Jitter keeps writers that collided once from colliding again in lockstep.
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def together(self, *, savepoints: bool = True) -> AsyncIterator[None]:
        """Commands run in this block (in this task) share one transaction, each in a
        savepoint of its own: a command refused or failed leaves the others be, and one
        commit, one fsync, covers them all, as a batch's lines are applied. Nothing of it is
        seen elsewhere until the block ends; if the commit fails, none of it happened.
        Keep the block short: what its commands lock stays locked until it ends.

        Without ``savepoints`` (two round trips less per command), a command that fails once
        it has begun in the transaction raises :class:`SpoiledTogetherError` instead: the
        block must be left, undoing every command of it, and run again with savepoints."""
        async with self._pool.acquire() as conn, conn.transaction():
            token = _TOGETHER.set(_Together(conn, savepoints))
            try:
                yield
            finally:
                _TOGETHER.reset(token)

    async def _run_once(
        self, handler: Handler, idempotency: IdempotencyRequest | None
    ) -> CommandResult:
        together = _TOGETHER.get()
        if together is not None and together.savepoints:
            async with together.conn.transaction():  # a savepoint
                return await self._in_transaction(together.conn, handler, idempotency)
        if together is not None:
            try:
                return await self._in_transaction(together.conn, handler, idempotency)
            except Exception as error:
                raise SpoiledTogetherError from error
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._in_transaction(conn, handler, idempotency)

    async def _in_transaction(
        self, conn: Connection, handler: Handler, idempotency: IdempotencyRequest | None
    ) -> CommandResult:
        if idempotency is not None:
            stored = await _claim(conn, idempotency)
            if stored is not None:
                await _authorise_replay(conn, handler)
                return stored
        result = await handler(conn)
        if idempotency is not None:
            await conn.execute(
                _REMEMBER, idempotency.scope, idempotency.key, result.status, result.body
            )
        return result


async def _authorise_replay(conn: Connection, handler: Handler) -> None:
    """A replay is authorised as its first request was: the command runs again in a savepoint
    that is always rolled back, and a caller who may not do it now is refused. What it would
    decide now (a conflict, say) does not change the answer it had."""
    savepoint = conn.transaction()
    await savepoint.start()
    rehearsing = REHEARSAL.set(True)
    try:
        await handler(conn)
    except (ForbiddenError, UnauthorizedError):
        raise
    except LedgerError as error:
        if error.refuses_caller:
            raise
        # refused now for another reason (a conflict, say): the first answer stands
    except asyncpg.PostgresError:
        pass
    finally:
        REHEARSAL.reset(rehearsing)
        await savepoint.rollback()


async def _claim(conn: Connection, request: IdempotencyRequest) -> CommandResult | None:
    """Take the key for this transaction, or return the response stored under it."""
    # A concurrent first use of the key holds the row's index entry: the insert waits for it
    # to commit (then conflicts, and we read its response) or to roll back (then we go on).
    if await conn.fetchval(_CLAIM, request.scope, request.key, request.fingerprint):
        return None
    row = await conn.fetchrow(_STORED, request.scope, request.key)
    if row is None:  # pragma: no cover - the conflicting row cannot vanish: keys are never deleted
        raise ConcurrencyError("idempotency key changed under us")
    if row["fingerprint"] != request.fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    return CommandResult(row["status"], row["body"], replayed=True)
