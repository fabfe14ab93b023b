"""``ledger deadletters`` against a real consumer: what is parked, by kind, and an operator's
retry and release, each kept with who decided and why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.core.settings import Settings
from tests.integration.fixtures import envelopes_for, migrated_pool
from tests.integration.test_consumer import Recorder, produce, records_of, runner_for
from tests.support import run_ledger, wait_for


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "allocation", max_size=6) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE applied (family text, number integer)")
        yield pool


async def _parked(settings: Settings) -> dict[str, dict[str, Any]]:
    """What the list says, by family key and kind."""
    code, output = await run_ledger(
        settings, "deadletters", "list", "--service", "allocation", "--json"
    )
    assert code == 0
    items = [json.loads(line) for line in output.splitlines()]
    return {f"{item['key']}/{item['kind']}": item for item in items}


async def _applied(pool: asyncpg.Pool[asyncpg.Record]) -> list[tuple[str, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT family, number FROM applied ORDER BY family, number")
    return [(row["family"], row["number"]) for row in rows]


async def test_an_operator_retries_and_releases_what_is_parked(
    settings: Settings, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """A failed record and the one held behind it, records that are no event (for each
    reason one is not), and one that will never apply: each listed by kind with its place
    and reason; a retry before the fix says it is still parked, after the fix applies the
    family; a release lets a family go on without its unappliable event; every decision is
    kept, and cannot be changed."""
    sick = envelopes_for("p", "sick", [1, 2, 3], poison=frozenset({2}))
    stuck = envelopes_for("p", "stuck", [1, 2], poison=frozenset({1}))
    [(_, value)] = records_of(envelopes_for("p", "altered", [1]))
    altered = json.loads(value)
    altered["subject"] = "someone else"  # its hash left as it was
    # Every reason a record is parked: not JSON, no value, JSON but no envelope, an envelope
    # altered after it was sealed; a record its consumer fails on, and one held behind it.
    # (A record without a value stopped its partition: parking it failed, and was retried
    # for ever.)
    rejected = {
        "p:junk": (b"not json", "rejected: not a ledger event: not JSON"),
        "p:empty": (None, "rejected: not a ledger event: the record has no value"),
        "p:shape": (b'{"not": "an event"}', "rejected: not a ledger event: "),
        "p:altered": (json.dumps(altered).encode(), "rejected: event "),
    }
    odd = [(name.encode(), record) for name, (record, _) in rejected.items()]
    await produce(settings, [*records_of(sick), *odd], partition=0)  # type: ignore[list-item]
    recorder = Recorder()
    async with runner_for(settings, pool, "dead-test", recorder):
        await wait_for(lambda: _count(pool, "consumer_parked", 6), timeout=30)
        parked = await _parked(settings)
        assert set(parked) == {
            "p:sick/failed",
            "p:sick/held",
            *(f"{name}/rejected" for name in rejected),
        }
        for name, (_, reason) in rejected.items():
            assert parked[f"{name}/rejected"]["error"].startswith(reason), parked[name]
        assert "hash is not the hash of its content" in parked["p:altered/rejected"]["error"]
        failed = parked["p:sick/failed"]
        assert (failed["pilot_id"], failed["family_id"], failed["offset"]) == ("p", "sick", 1)
        assert failed["event"]["stream_version"] == 2
        assert "cannot apply this record" in failed["error"]
        assert parked["p:junk/rejected"]["error"].startswith("rejected: not a ledger event")

        held = parked["p:sick/held"]["ref"]
        code, _ = await run_ledger(
            settings, "deadletters", "release", held, "--by", "ops-1", "--reason", "r"
        )
        assert code == 1  # held behind the failed one: that one is the decision

        code, output = await run_ledger(
            settings, "deadletters", "retry", failed["ref"], "--by", "ops-1", "--wait", "20"
        )
        assert (code, output.strip().split(":")[0]) == (1, "tried again and still parked")
        recorder.fixed = True
        code, output = await run_ledger(
            settings, "deadletters", "retry", failed["ref"], "--by", "ops-1", "--wait", "20"
        )
        assert (code, output.strip()) == (0, "applied")
        await wait_for(lambda: _has(pool, ("sick", 3)), timeout=10)

        recorder.fixed = False  # stuck's first event will never apply: set it aside
        await produce(settings, records_of(stuck), partition=0)
        await wait_for(lambda: _count(pool, "consumer_parked", 6), timeout=30)
        stuck_ref = (await _parked(settings))["p:stuck/failed"]["ref"]

        reason = "a test event nothing will ever apply"
        code, _ = await run_ledger(
            settings, "deadletters", "release", stuck_ref, "--by", "ops-2", "--reason", reason
        )
        assert code == 0
        await wait_for(lambda: _has(pool, ("stuck", 2)), timeout=10)
        for name in rejected:
            junk = parked[f"{name}/rejected"]["ref"]
            code, _ = await run_ledger(
                settings, "deadletters", "release", junk, "--by", "ops-2", "--reason", "garbage"
            )
            assert code == 0
    assert await _parked(settings) == {}
    assert await _applied(pool) == [("sick", 1), ("sick", 2), ("sick", 3), ("stuck", 2)]
    code, output = await run_ledger(settings, "deadletters", "decisions", "--service", "allocation")
    kept = [json.loads(line) for line in output.splitlines()]
    assert [(d["action"], d["decided_by"], d["record_key"]) for d in kept] == [
        ("retry", "ops-1", "p:sick"),
        ("retry", "ops-1", "p:sick"),
        ("release", "ops-2", "p:stuck"),
        *(("release", "ops-2", name) for name in rejected),
    ]
    assert kept[2]["reason"] == reason
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("DELETE FROM deadletter_decisions")
    code, _ = await run_ledger(settings, "deadletters", "show", "allocation:x:y:0:1")
    assert code == 2


async def _count(pool: asyncpg.Pool[asyncpg.Record], table: str, wanted: int) -> bool:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}")) >= wanted  # noqa: S608


async def _has(pool: asyncpg.Pool[asyncpg.Record], row: tuple[str, int]) -> bool:
    return row in await _applied(pool)
