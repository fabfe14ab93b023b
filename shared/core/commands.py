"""Running a command: atomically, idempotency keys, bounded retries on concurrency.

A handler receives a connection inside a transaction, loads what it needs, decides and
appends; the runner records the response under the caller's ``Idempotency-Key`` in that
same transaction, so a retried request either finds the first response or runs afresh.
A handler run with ``one_statement`` reads outside any transaction instead, and its
writes, its key and its response go to PostgreSQL as one statement
(:mod:`shared.core.writes`), atomic by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
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
from shared.core.eventstore import (
    REHEARSAL,
    counted_once_committed,
    streams_kept,
    uncounted_if_undone,
)
from shared.core.writes import Write, gathered

__all__ = [
    "CommandResult",
    "CommandRunner",
    "IdempotencyRequest",
    "LostTogetherError",
    "SpoiledTogetherError",
    "fingerprint",
    "together_connection",
]


_CLAIM = """
INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING 1
"""
_STORED = "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2"
# A command whose writes are gathered takes its key and keeps its answer with them, at once.
_ANSWERED = """
INSERT INTO idempotency_keys (scope, key, fingerprint, status, body) VALUES ($1, $2, $3, $4, $5)
"""
_KEY_CONSTRAINT = "idempotency_keys_pkey"
_REMEMBER = "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2"
# The same for many keys at once (CommandRunner.together's ``keys``).
_CLAIM_MANY = """
INSERT INTO idempotency_keys (scope, key, fingerprint)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS u(scope, key, fingerprint)
ORDER BY scope, key
ON CONFLICT DO NOTHING RETURNING scope, key
"""
_STORED_MANY = """
SELECT k.scope, k.key, k.fingerprint, k.status, k.body
FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS u(scope, key)
    ON k.scope = u.scope AND k.key = u.key
"""
_REMEMBER_MANY = """
UPDATE idempotency_keys k SET status = u.status, body = u.body, fingerprint = u.fingerprint
FROM unnest($1::text[], $2::text[], $3::integer[], $4::jsonb[], $5::text[])
    AS u(scope, key, status, body, fingerprint)
WHERE k.scope = u.scope AND k.key = u.key
"""
_RELEASE_MANY = """
DELETE FROM idempotency_keys k USING unnest($1::text[], $2::text[]) AS u(scope, key)
WHERE k.scope = u.scope AND k.key = u.key
"""


_Key = tuple[str, str]  # scope, key


@dataclass(frozen=True)
class _Answered:
    """A key's fingerprint and the answer it keeps."""

    fingerprint: str
    result: CommandResult


@dataclass
class _Together:
    """The transaction that commands run in together (CommandRunner.together)."""

    conn: Connection
    savepoints: bool
    # Keys claimed on entering: None where this block took the key, else the answer it had.
    claimed: dict[_Key, _Answered | None] = field(default_factory=dict)
    # The block's answers under the keys it took, remembered all at once when it ends.
    answered: dict[_Key, _Answered] = field(default_factory=dict)

    async def claim(self, requests: Sequence[IdempotencyRequest]) -> None:
        """Take every key that is free, and read the answers of those that are not.

        A key used twice in the block is claimed once; whichever of its lines is answered
        first keeps it, with that line's own fingerprint (remembered with its answer), and
        the other replays it or, for another body, is refused, as two requests would be.
        Keys are claimed in one fixed order (by scope and key), so that two blocks sharing
        keys wait for each other instead of deadlocking."""
        wanted: dict[_Key, str] = {}
        for request in requests:
            wanted.setdefault((request.scope, request.key), request.fingerprint)
        if not wanted:
            return
        wanted = dict(sorted(wanted.items()))
        scopes, keys = [s for s, _ in wanted], [k for _, k in wanted]
        taken = await self.conn.fetch(_CLAIM_MANY, scopes, keys, list(wanted.values()))
        self.claimed = dict.fromkeys(((row["scope"], row["key"]) for row in taken), None)
        if len(self.claimed) < len(wanted):
            for row in await self.conn.fetch(_STORED_MANY, scopes, keys):
                key = (row["scope"], row["key"])
                if key not in self.claimed:
                    if row["status"] is None:  # pragma: no cover - never committed unanswered
                        raise ConcurrencyError("idempotency key changed under us")
                    answer = CommandResult(row["status"], row["body"], replayed=True)
                    self.claimed[key] = _Answered(row["fingerprint"], answer)

    def stored(self, request: IdempotencyRequest) -> CommandResult | _Unclaimed | None:
        """What :func:`_claim` would find for the key (None: it is this command's to answer),
        or :data:`_UNCLAIMED` if the block did not claim it on entering."""
        key = (request.scope, request.key)
        found = self.answered.get(key)
        if found is None:
            if key not in self.claimed:
                return _UNCLAIMED
            found = self.claimed[key]
        if found is None:
            return None
        if found.fingerprint != request.fingerprint:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used for a different request; use a new key"
            )
        return replace(found.result, replayed=True)

    async def close(self) -> None:
        """Remember the answers under the keys taken on entering; give back those unused."""
        if self.answered:
            keys, answers = list(self.answered), list(self.answered.values())
            await self.conn.execute(
                _REMEMBER_MANY,
                [s for s, _ in keys],
                [k for _, k in keys],
                [a.result.status for a in answers],
                [a.result.body for a in answers],
                [a.fingerprint for a in answers],  # the answered line's: another may share it
            )
        unused = [key for key, found in self.claimed.items() if found is None]
        unused = [key for key in unused if key not in self.answered]
        if unused:
            await self.conn.execute(_RELEASE_MANY, [s for s, _ in unused], [k for _, k in unused])


class _AnsweredBeforeError(Exception):
    """A command written in one statement that could not give its own answer (refused now,
    say) has the first answer under its key: nothing of this run is written or counted."""

    def __init__(self, answer: CommandResult) -> None:
        super().__init__("replayed")
        self.answer = answer


class _Unclaimed:
    """A key the block did not claim on entering: claimed by its command, as alone."""


_UNCLAIMED = _Unclaimed()


_TOGETHER: ContextVar[_Together | None] = ContextVar("commands_together", default=None)


def together_connection() -> Connection | None:
    """The connection of the :meth:`CommandRunner.together` block this task runs in, if any.

    A command in such a block (a batch's line) must never wait on another connection while
    the block's transaction is open: with every pooled connection held by such blocks, none
    could ever be had, and the service would stop for good. It reads on this one instead,
    and where it would wait for a view to catch up it answers at once."""
    together = _TOGETHER.get()
    return None if together is None else together.conn


class SpoiledTogetherError(Exception):
    """A command run together without savepoints failed once it had begun in the shared
    transaction: what it did cannot be undone alone. Leave the block (which undoes all of
    it) and run its commands again with savepoints."""


class LostTogetherError(Exception):
    """PostgreSQL rolled the block's transaction back for another's sake: a deadlock's
    victim (two blocks appending to the same streams in opposite orders wait for each
    other) or a serialization failure. Nothing of it happened and none of its commands was
    refused: leave the block and run all of it again."""


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

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection for a command to read with before it runs: the :meth:`together`
        block's own inside one (:func:`together_connection` says why), else the pool's."""
        held = together_connection()
        if held is not None:
            yield held
            return
        async with self._pool.acquire() as conn:
            yield conn

    async def run(
        self,
        handler: Handler,
        idempotency: IdempotencyRequest | None,
        *,
        one_statement: bool = False,
    ) -> CommandResult:
        """Run once, or answer as the first run did; retry when another writer won a race.

        ``one_statement``: the handler reads with statements of its own, each a snapshot,
        and holds no lock; its writes (:mod:`shared.core.writes`), its key and its answer
        go in one statement once it has decided, with no transaction round trips. Not for
        a handler that must read what it wrote, or hold what it read until it commits. In
        a :meth:`together` block it runs in the block's transaction as any command does."""
        gathered = one_statement and _TOGETHER.get() is None
        for attempt in range(1, self._attempts + 1):
            try:
                if gathered:
                    return await self._run_gathered(handler, idempotency)
                return await self._run_once(handler, idempotency)
            except ConcurrencyError:
                if attempt == self._attempts:
                    raise
                # Jitter keeps writers that collided once from colliding again in lockstep.
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def together(
        self, *, savepoints: bool = True, keys: Sequence[IdempotencyRequest] = ()
    ) -> AsyncIterator[None]:
        """Commands run in this block (in this task) share one transaction, each in a
        savepoint of its own: a command refused or failed leaves the others be, and one
        commit, one fsync, covers them all, as a batch's lines are applied. Nothing of it is
        seen elsewhere until the block ends; if the commit fails, none of it happened.
        Keep the block short: what its commands lock stays locked until it ends.

        Without ``savepoints`` (two round trips less per command), a command that fails once
        it has begun in the transaction raises :class:`SpoiledTogetherError` instead: the
        block must be left, undoing every command of it, and run again with savepoints.
        Then ``keys``, the idempotency keys its commands will be called with, are claimed on
        entering and their answers remembered on leaving, one statement each for them all;
        a key taken and not used is given back; and a stream read or written is kept for the
        block (:func:`~shared.core.eventstore.streams_kept`)."""
        if keys and savepoints:  # a refused command's savepoint could not give its key back
            raise ValueError("keys are claimed together only without savepoints")
        with counted_once_committed():
            try:
                async with self._together(savepoints, keys):
                    yield
            except asyncpg.TransactionRollbackError as error:  # in claiming, closing, committing
                raise LostTogetherError from error

    @contextlib.asynccontextmanager
    async def _together(
        self, savepoints: bool, keys: Sequence[IdempotencyRequest]
    ) -> AsyncIterator[None]:
        async with self._pool.acquire() as conn, conn.transaction():
            together = _Together(conn, savepoints)
            token = _TOGETHER.set(together)
            try:
                with contextlib.nullcontext() if savepoints else streams_kept(conn):
                    await together.claim(keys)
                    yield
                    await together.close()
            finally:
                _TOGETHER.reset(token)

    async def _run_once(
        self, handler: Handler, idempotency: IdempotencyRequest | None
    ) -> CommandResult:
        together = _TOGETHER.get()
        if together is not None and together.savepoints:
            try:
                with uncounted_if_undone():
                    async with together.conn.transaction():  # a savepoint
                        return await self._in_transaction(together.conn, handler, idempotency)
            except asyncpg.TransactionRollbackError as error:
                # Not this command's to retry alone: what the other transaction waits on
                # may be an earlier command's, held by the block until it ends.
                raise LostTogetherError from error
        if together is not None:
            try:
                return await self._in_transaction(
                    together.conn, handler, idempotency, together=together
                )
            except asyncpg.TransactionRollbackError as error:
                raise LostTogetherError from error
            except Exception as error:
                raise SpoiledTogetherError from error
        with counted_once_committed():
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._in_transaction(conn, handler, idempotency)

    async def _run_gathered(
        self, handler: Handler, idempotency: IdempotencyRequest | None
    ) -> CommandResult:
        """Decide on reads of its own, then write everything in one statement, the key and
        its answer with the rest: the statement that takes a key another request took first
        fails whole, and that request's answer is given instead. A replay is authorised as a
        first request is, by running it: a caller who may not do it now is refused, and what
        it would decide now (a conflict, say) does not change the answer it had."""
        async with self._pool.acquire() as conn:
            try:
                with counted_once_committed(), gathered() as writes:
                    try:
                        result = await handler(conn)
                    except (LedgerError, asyncpg.PostgresError) as error:
                        if idempotency is None or _refuses_caller(error):
                            raise
                        stored = await _stored(conn, idempotency)
                        if stored is None:
                            raise
                        raise _AnsweredBeforeError(
                            stored
                        ) from error  # leaves uncounted what it appended
                    if idempotency is not None:
                        answered = (result.status, result.body)
                        keyed = (idempotency.scope, idempotency.key, idempotency.fingerprint)
                        writes.add(Write.of(_ANSWERED, *keyed, *answered))
                    await writes.send(conn)
                    return result
            except _AnsweredBeforeError as replayed:
                return replayed.answer
            except asyncpg.UniqueViolationError as error:
                if idempotency is None or error.constraint_name != _KEY_CONSTRAINT:
                    raise
            # Another request took the key first (and committed: the insert waited for it).
            stored = await _stored(conn, idempotency)
            if stored is None:  # pragma: no cover - a key is never given back once answered
                raise ConcurrencyError("idempotency key changed under us")
            return stored

    async def _in_transaction(
        self,
        conn: Connection,
        handler: Handler,
        idempotency: IdempotencyRequest | None,
        *,
        together: _Together | None = None,
    ) -> CommandResult:
        if idempotency is None:
            return await handler(conn)
        taken = _UNCLAIMED if together is None else together.stored(idempotency)
        stored = await _claim(conn, idempotency) if isinstance(taken, _Unclaimed) else taken
        if stored is not None:
            await _authorise_replay(conn, handler)
            return stored
        result = await handler(conn)
        if together is not None and taken is None:  # claimed on entering: remembered on leaving
            key = (idempotency.scope, idempotency.key)
            together.answered[key] = _Answered(idempotency.fingerprint, result)
        else:
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
    except (LedgerError, asyncpg.PostgresError) as error:
        if _refuses_caller(error):
            raise
        # refused now for another reason (a conflict, say): the first answer stands
    finally:
        REHEARSAL.reset(rehearsing)
        await savepoint.rollback()


def _refuses_caller(error: Exception) -> bool:
    """Whether a command's error refuses its caller, who may then not be given an earlier
    answer either: not allowed, not signed in, or a refusal that says so."""
    if isinstance(error, ForbiddenError | UnauthorizedError):
        return True
    return isinstance(error, LedgerError) and error.refuses_caller


async def _claim(conn: Connection, request: IdempotencyRequest) -> CommandResult | None:
    """Take the key for this transaction, or return the response stored under it."""
    # A concurrent first use of the key holds the row's index entry: the insert waits for it
    # to commit (then conflicts, and we read its response) or to roll back (then we go on).
    if await conn.fetchval(_CLAIM, request.scope, request.key, request.fingerprint):
        return None
    # A key is deleted only by the block that claimed it and did not use it, before it commits;
    # the conflicting row was committed, so it is still there.
    stored = await _stored(conn, request)
    if stored is None:  # pragma: no cover
        raise ConcurrencyError("idempotency key changed under us")
    return stored


async def _stored(conn: Connection, request: IdempotencyRequest) -> CommandResult | None:
    """The answer kept under the key (refused if it was for another request), if any."""
    row = await conn.fetchrow(_STORED, request.scope, request.key)
    if row is None:
        return None
    if row["fingerprint"] != request.fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    return CommandResult(row["status"], row["body"], replayed=True)
