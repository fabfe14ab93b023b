"""The event store against real PostgreSQL: versions, hash chains, immutability, idempotency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, ClassVar
from uuid import uuid4

import asyncpg
import pytest

from shared.core.commands import (
    CommandResult,
    CommandRunner,
    IdempotencyRequest,
    SpoiledTogetherError,
)
from shared.core.custody import LocalKeyCustody, new_kek
from shared.core.db import Connection
from shared.core.errors import (
    ConcurrencyError,
    ConflictError,
    EventTooLargeError,
    ForbiddenError,
    IdempotencyKeyReusedError,
)
from shared.core.events import GENESIS_HASH, DomainEvent
from shared.core.eventstore import (
    MAX_EVENT_BYTES,
    REHEARSAL,
    EventStore,
    PendingEvent,
    streams_kept,
)
from shared.core.metrics import Metrics
from shared.core.personal import Sealer
from shared.core.settings import Settings
from tests.integration.fixtures import CONTEXT, Noted, migrated_pool, new_store, utcnow


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "allocation", max_size=6) as pool:
        yield pool


def noted(*numbers: int) -> list[PendingEvent]:
    return [PendingEvent(Noted(number=n), "p", "f") for n in numbers]


async def test_append_and_load_chain_hashes(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Appended events load back in order, each chained to the one before."""
    store = new_store()
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, await store.load(conn, "family:p:f"), noted(1, 2), CONTEXT)
        await store.append(conn, await store.load(conn, "family:p:f"), noted(3), CONTEXT)
    async with pool.acquire() as conn:
        stream = await store.load(conn, "family:p:f")
    assert [e.stream_version for e in stream.envelopes] == [1, 2, 3]
    assert [e.data["number"] for e in stream.envelopes] == [1, 2, 3]
    assert stream.envelopes[0].prev_hash == GENESIS_HASH
    for before, after in zip(stream.envelopes, stream.envelopes[1:], strict=False):
        assert after.prev_hash == before.hash
    assert all(e.hash == e.computed_hash() for e in stream.envelopes)


async def test_stale_writer_gets_concurrency_error(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Two writers from the same version: the second is refused and records nothing."""
    store = new_store()
    async with pool.acquire() as conn:
        stale = await store.load(conn, "family:p:f")
        async with conn.transaction():
            await store.append(conn, stale, noted(1), CONTEXT)
        with pytest.raises(ConcurrencyError):
            async with conn.transaction():
                await store.append(conn, stale, noted(2), CONTEXT)
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1


async def test_events_cannot_be_changed_or_removed(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """The database refuses UPDATE, DELETE and TRUNCATE on events."""
    store = new_store()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append(conn, await store.load(conn, "family:p:f"), noted(1), CONTEXT)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("UPDATE events SET type = 'x'")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("DELETE FROM events")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("TRUNCATE events CASCADE")
        assert await conn.fetchval("SELECT count(*) FROM events") == 1


@pytest.mark.parametrize("one_statement", [False, True], ids=["transaction", "one-statement"])
async def test_idempotency_key_returns_first_answer(
    pool: asyncpg.Pool[asyncpg.Record], one_statement: bool
) -> None:
    """Same key and request: one effect, the first answer again; another request: refused.
    The same whether the command runs in a transaction or writes in one statement."""
    runner = CommandRunner(pool)
    run = partial(runner.run, one_statement=one_statement)
    store = new_store()
    calls = 0

    async def handle(conn: Connection) -> CommandResult:
        nonlocal calls
        calls += 1
        stream = await store.load(conn, "family:p:f")
        appended = await store.append(conn, stream, noted(calls), CONTEXT)
        return CommandResult(201, {"version": appended[-1].stream_version})

    key = IdempotencyRequest("user-1", "k-1", "fingerprint-a")
    results = await asyncio.gather(*(run(handle, key) for _ in range(5)))
    assert {r.body["version"] for r in results} == {1}
    assert sum(not r.replayed for r in results) == 1
    with pytest.raises(IdempotencyKeyReusedError):
        await run(handle, IdempotencyRequest("user-1", "k-1", "fingerprint-b"))
    other_caller = await run(handle, IdempotencyRequest("user-2", "k-1", "fingerprint-b"))
    assert other_caller.body["version"] == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 2
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2


async def test_a_replay_written_in_one_statement_answers_as_first_whatever_it_decides_now(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """A command whose writes go in one statement, sent again with its key: refused now (a
    conflict) or deciding afresh, it gives the first answer and writes nothing; a caller who
    may not do it now is refused."""
    runner = CommandRunner(pool)
    store = new_store()
    now: list[Exception | None] = [None]

    async def handle(conn: Connection) -> CommandResult:
        if now[0] is not None:
            raise now[0]
        stream = await store.load(conn, "family:p:f")
        appended = await store.append(conn, stream, noted(stream.version + 1), CONTEXT)
        return CommandResult(201, {"version": appended[-1].stream_version})

    key = IdempotencyRequest("user-1", "k-3", "fingerprint-a")
    first = await runner.run(handle, key, one_statement=True)
    again = await runner.run(handle, key, one_statement=True)  # decides version 2 now
    now[0] = ConflictError("it moved on")
    refused_now = await runner.run(handle, key, one_statement=True)
    assert (first.replayed, again.replayed, refused_now.replayed) == (False, True, True)
    assert first.body == again.body == refused_now.body == {"version": 1}
    now[0] = ForbiddenError("not yours")
    with pytest.raises(ForbiddenError):
        await runner.run(handle, key, one_statement=True)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_replay_refused_after_it_appended_counts_no_event(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """A command written in one statement that appends, then is refused (a conflict), and
    whose key has an answer already, gives that answer; what it appended is never written,
    and so not counted as appended either."""
    metrics = Metrics("test")
    store = EventStore("ledger/test", utcnow, uuid4, metrics)
    runner = CommandRunner(pool)
    refuse = False

    async def handle(conn: Connection) -> CommandResult:
        stream = await store.load(conn, "family:p:g")
        await store.append(conn, stream, noted(stream.version + 1), CONTEXT)
        if refuse:
            raise ConflictError("it moved on")
        return CommandResult(201, {})

    key = IdempotencyRequest("user-1", "k-4", "fingerprint-a")
    await runner.run(handle, key, one_statement=True)
    refuse = True
    assert (await runner.run(handle, key, one_statement=True)).replayed
    appended = metrics.registry.get_sample_value(
        "ledger_events_appended_total", {"type": "test.noted"}
    )
    assert appended == 1


async def test_a_first_key_made_meanwhile_runs_a_one_statement_command_again(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Two commands seal a family's first text at once, each writing in one statement: the
    one whose new key lost the race writes nothing, runs again and seals under the key that
    won, so that every text stored opens."""
    runner = CommandRunner(pool)
    store = new_store()
    sealer = Sealer(LocalKeyCustody.parse(new_kek("kek")))
    made, both_made = 0, asyncio.Event()
    streams: dict[int, str] = {}

    async def handle(conn: Connection, command: int) -> CommandResult:
        nonlocal made
        sealed = await sealer.seal(conn, "p:f", f"a bed, {command}")
        if not both_made.is_set():  # each has made a key of its own before either writes
            made += 1
            if made == 2:
                both_made.set()
            await both_made.wait()
        streams[command] = f"request:p:{uuid4()}"
        stream = await store.load(conn, streams[command])
        await store.append(conn, stream, [PendingEvent(Said(text=sealed), "p", "f")], CONTEXT)
        return CommandResult(202, {})

    await asyncio.gather(
        *(runner.run(partial(handle, command=n), None, one_statement=True) for n in (1, 2))
    )
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM personal_keys") == 1
        assert await conn.fetchval("SELECT count(*) FROM events") == 2
        opened = await sealer.opener(conn, "p:f")
        said = [(await store.load(conn, streams[n])).envelopes for n in (1, 2)]
    assert [opened(stream[0].data["text"]) for stream in said] == ["a bed, 1", "a bed, 2"]


class Said(DomainEvent):
    """A test fact holding free text."""

    event_type: ClassVar[str] = "test.said"
    text: str


async def test_failed_command_records_no_key(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """A command that fails leaves its key unused, so a corrected retry runs."""
    runner = CommandRunner(pool)
    attempts = 0

    async def flaky(conn: Connection) -> CommandResult:
        nonlocal attempts
        attempts += 1
        await conn.execute("SELECT 1")
        if attempts == 1:
            raise ValueError("refused")
        return CommandResult(200, {"ok": True})

    key = IdempotencyRequest("user-1", "k-2", "f")
    with pytest.raises(ValueError, match="refused"):
        await runner.run(flaky, key)
    assert (await runner.run(flaky, key)).body == {"ok": True}


@pytest.mark.parametrize("savepoints", [True, False], ids=["savepoints", "fast"])
async def test_commands_run_together_commit_once_and_a_refusal_undoes_only_what_it_must(
    pool: asyncpg.Pool[asyncpg.Record], savepoints: bool
) -> None:
    """Commands run together commit together. One refused after it appended: with savepoints
    only it is undone; without, the block is spoiled, and none of it is kept."""
    runner, store = CommandRunner(pool), new_store()

    def appending(family: str, *, refuse: bool = False) -> Callable[..., Any]:
        async def handle(conn: Connection) -> CommandResult:
            stream = await store.load(conn, f"family:p:{family}")
            await store.append(conn, stream, [PendingEvent(Noted(number=1), "p", family)], CONTEXT)
            if refuse:
                raise ConcurrencyError("refused after appending")
            return CommandResult(201, {})

        return handle

    async def stored() -> list[str]:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT family_id FROM events ORDER BY position")
        return [row["family_id"] for row in rows]

    async with runner.together(savepoints=savepoints):
        await runner.run(appending("a"), IdempotencyRequest("u", "k-a", "f"))
        await runner.run(appending("b"), IdempotencyRequest("u", "k-b", "f"))
        assert await stored() == []  # nothing is seen before the block ends
    assert await stored() == ["a", "b"]

    with contextlib.suppress(SpoiledTogetherError):
        async with runner.together(savepoints=savepoints):
            await runner.run(appending("c"), IdempotencyRequest("u", "k-c", "f"))
            with pytest.raises(ConcurrencyError if savepoints else SpoiledTogetherError):
                await runner.run(appending("d", refuse=True), IdempotencyRequest("u", "k-d", "f"))
            if not savepoints:
                raise SpoiledTogetherError  # as a batch does: leave the block
    assert await stored() == (["a", "b", "c"] if savepoints else ["a", "b"])
    async with pool.acquire() as conn:  # and the refused command's key stays unused
        keys = await conn.fetch("SELECT key FROM idempotency_keys ORDER BY key")
    assert [row["key"] for row in keys] == (["k-a", "k-b", "k-c"] if savepoints else ["k-a", "k-b"])


async def test_keys_claimed_together_answer_as_each_command_alone_would(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Keys claimed on entering a block: a key's first command runs, the same key again in
    the block or a later one replays its answer, and a key taken but not used is given back
    (a request sent later with it runs). Another request under a used key spoils the block."""
    runner, store = CommandRunner(pool), new_store()
    calls: list[str] = []

    def appending(family: str) -> Callable[..., Any]:
        async def handle(conn: Connection) -> CommandResult:
            calls.append(family)
            stream = await store.load(conn, f"family:p:{family}")
            done = await store.append(
                conn, stream, [PendingEvent(Noted(number=1), "p", family)], CONTEXT
            )
            return CommandResult(201, {"family": family, "version": done[-1].stream_version})

        return handle

    a, b, unused = (IdempotencyRequest("u", key, "f") for key in ("k-a", "k-b", "k-unused"))
    async with runner.together(savepoints=False, keys=[a, b, unused]):
        first = await runner.run(appending("a"), a)
        again = await runner.run(appending("a"), a)
        await runner.run(appending("b"), b)
    assert (first.replayed, again.replayed, again.body) == (False, True, first.body)
    async with runner.together(savepoints=False, keys=[a]):
        later = await runner.run(appending("a"), a)
    assert later.replayed
    assert later.body == first.body
    assert (await runner.run(appending("c"), unused)).body["family"] == "c"  # given back
    with pytest.raises(SpoiledTogetherError):
        async with runner.together(savepoints=False, keys=[a]):
            await runner.run(appending("a"), IdempotencyRequest("u", "k-a", "another"))
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT key, status FROM idempotency_keys ORDER BY key")
        stored = await conn.fetchval("SELECT count(*) FROM events")
    assert [(row["key"], row["status"]) for row in rows] == [
        ("k-a", 201),
        ("k-b", 201),
        ("k-unused", 201),
    ]
    assert stored == 3
    # Each first use ran its command; each replay ran it again only to authorise it.
    assert calls.count("b") == 1
    assert calls.count("c") == 1


async def test_streams_kept_for_a_block_are_read_once_and_follow_its_appends(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Inside ``streams_kept``, a stream read or written on the connection is read from what
    was kept: with the block's own appends, without another writer's (whose race a later
    append loses). A stream read in part (its last event) is never kept as if whole, nor is
    what a rehearsal appends, nor is anything kept for another connection."""
    store = new_store()
    async with pool.acquire() as conn, pool.acquire() as other:
        for family, numbers in (("k", [1]), ("l", [1, 2]), ("m", [1])):
            stream = await store.load(other, f"family:p:{family}")
            await store.append(other, stream, noted(*numbers), CONTEXT)
        async with conn.transaction():
            with streams_kept(conn):
                await store.append(conn, await store.load(conn, "family:p:k"), noted(2), CONTEXT)
                kept = await store.load(conn, "family:p:k")
                assert [e.stream_version for e in kept.envelopes] == [1, 2]
                assert (await store.load(other, "family:p:k")).version == 1  # not committed

                await store.load(conn, "family:p:l")  # kept whole
                last = await store.load(conn, "family:p:l", last_only=True)
                await store.append(conn, last, noted(3), CONTEXT)
                whole = await store.load(conn, "family:p:l")
                assert [e.stream_version for e in whole.envelopes] == [1, 2, 3]

                rehearsing = REHEARSAL.set(True)
                try:
                    savepoint = conn.transaction()
                    await savepoint.start()
                    await store.append(conn, whole, noted(4), CONTEXT)
                    await savepoint.rollback()
                finally:
                    REHEARSAL.reset(rehearsing)
                assert (await store.load(conn, "family:p:l")).version == 3

                stood = await store.load(conn, "family:p:m")
                moved = await store.load(other, "family:p:m")
                await store.append(other, moved, noted(2), CONTEXT)  # committed meanwhile
                assert await store.load(conn, "family:p:m") is stood
                with pytest.raises(ConcurrencyError):
                    await store.append(conn, stood, noted(2), CONTEXT)


class Bulky(DomainEvent):
    """A test fact whose size the test chooses."""

    event_type: ClassVar[str] = "test.bulky"
    text: str


async def test_an_event_too_large_to_publish_is_refused_and_nothing_kept(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """An event whose envelope would exceed MAX_EVENT_BYTES is refused (422 event_too_large)
    before anything is written, so the relay never meets an event Kafka would refuse."""
    store = new_store()
    big = [PendingEvent(Bulky(text="x" * MAX_EVENT_BYTES), "p", "f")]
    async with pool.acquire() as conn:
        with pytest.raises(EventTooLargeError) as refused:
            async with conn.transaction():
                await store.append(conn, await store.load(conn, "family:p:f"), big, CONTEXT)
        assert refused.value.status == 422
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        fits = [PendingEvent(Bulky(text="x" * 1000), "p", "f")]
        async with conn.transaction():
            await store.append(conn, await store.load(conn, "family:p:f"), fits, CONTEXT)
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
