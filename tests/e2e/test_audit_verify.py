"""``ledger audit``: verify names altered, removed or moved events; replay prints history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aiokafka import AIOKafkaProducer

from services.allocation.app import create_app
from shared.cli import audit
from shared.core.kafka import connection
from shared.core.settings import Settings
from shared.web.registry import migrate
from tests.e2e.system import Client, auth
from tests.support import connect_service_db, read_topic, run_ledger, serve


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    await migrate(settings, ["spending", "approval"])  # their (empty) stores are verified too
    async with serve(settings, "allocation", create_app) as client:
        yield client


async def run_verify(settings: Settings) -> tuple[int, str]:
    """``ledger audit verify`` against this test's databases and topics."""
    return await run_ledger(settings, "audit", "verify")


async def test_verify_names_the_first_broken_link(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """Untouched: ok. Altered amount, removed event, swapped events: exit 1, the event named."""
    admin = auth(token("admin", "wigan"))
    await client.put(
        "/pilots/wigan",
        json={
            "name": "Wigan",
            "period_months": 12,
            "family_cap_pence": 400_000,
            "categories": ["other"],
        },
        headers=admin,
    )
    for family in ("fam-a", "fam-b", "fam-c"):
        await client.post(
            "/pilots/wigan/families",
            json={"family_id": family, "team": "t", "worker": "w", "enrolled_on": "2026-01-05"},
            headers=admin,
        )
        for amount in (1_000, 2_000, 3_000):
            response = await client.post(
                f"/pilots/wigan/families/{family}/allocations",
                json={"amount_pence": amount},
                headers=admin,
            )
            assert response.status == 201
    await read_topic(settings, "ledger.allocation", expect=1 + 3 * 4)
    code, output = await run_verify(settings)
    assert code == 0, output
    assert "ok:" in output

    async with connect_service_db(settings, "allocation") as conn:
        # Tampering needs the database's owner to switch off the guard on events.
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_immutable")
        rows = {
            (row["stream_id"], row["stream_version"]): row
            for row in await conn.fetch(
                "SELECT position, stream_id, stream_version, event_id, envelope FROM events"
            )
        }

        async def expect_broken(event_id: UUID, words: str) -> None:
            code, output = await run_verify(settings)
            assert code == 1, output
            broken = [line for line in output.splitlines() if line.startswith("broken:")]
            assert any(str(event_id) in line and words in line for line in broken), output

        altered = rows[("family:wigan:fam-a", 3)]
        await conn.execute(
            "UPDATE events SET envelope = jsonb_set(envelope, '{data,amount_pence}', '99999') "
            "WHERE position = $1",
            altered["position"],
        )
        await expect_broken(altered["event_id"], "altered")
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            altered["position"],
            altered["envelope"],
        )
        assert (await run_verify(settings))[0] == 0

        removed = rows[("family:wigan:fam-b", 2)]
        await conn.execute("DELETE FROM events WHERE position = $1", removed["position"])
        await expect_broken(rows[("family:wigan:fam-b", 3)]["event_id"], "removed")
        last = rows[("family:wigan:fam-b", 4)]
        await conn.execute("DELETE FROM events WHERE position = $1", last["position"])
        await expect_broken(last["event_id"], "gone from the store")

        first, second = rows[("family:wigan:fam-c", 2)], rows[("family:wigan:fam-c", 3)]
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            first["position"],
            second["envelope"],
        )
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            second["position"],
            first["envelope"],
        )
        await expect_broken(second["event_id"], "moved")


async def test_replay_prints_a_familys_history_from_kafka_in_order(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """One JSON event per line, filtered by pilot and family, cut at --as-of; a pilot or
    family the ledger never heard of is said so (exit 2), not an empty history."""
    admin = auth(token("admin", "wigan"))
    await client.put(
        "/pilots/wigan",
        json={
            "name": "Wigan",
            "period_months": 12,
            "family_cap_pence": 400_000,
            "categories": ["other"],
        },
        headers=admin,
    )
    for family in ("fam-a", "fam-b"):
        await client.post(
            "/pilots/wigan/families",
            json={"family_id": family, "team": "t", "worker": "w", "enrolled_on": "2026-01-05"},
            headers=admin,
        )
    first = await client.post(
        "/pilots/wigan/families/fam-a/allocations", json={"amount_pence": 100}, headers=admin
    )
    cut = (await first.json())["event_id"]
    await client.post(
        "/pilots/wigan/families/fam-a/allocations", json={"amount_pence": 200}, headers=admin
    )
    await read_topic(settings, "ledger.allocation", expect=5)
    code, output = await run_ledger(
        settings, "audit", "replay", "--pilot", "wigan", "--family", "fam-a"
    )
    assert code == 0
    events = [json.loads(line) for line in output.splitlines()]
    assert [(e["type"], e["streamversion"]) for e in events] == [
        ("family.enrolled", 1),
        ("family.budget_allocated", 2),
        ("family.budget_allocated", 3),
    ]
    assert {e["familyid"] for e in events} == {"fam-a"}
    as_of = next(e["time"] for e in events if e["id"] == cut)
    code, output = await run_ledger(
        settings, "audit", "replay", "--family", "fam-a", "--as-of", as_of
    )
    assert [json.loads(line)["id"] for line in output.splitlines()][-1] == cut
    whole = (await run_ledger(settings, "audit", "replay", "--pilot", "wigan"))[1].splitlines()
    assert len(whole) == 5  # the configuration, fam-a's three events, fam-b's enrolment
    for unknown in (("--pilot", "wigna"), ("--pilot", "wigan", "--family", "fam-z")):
        assert await run_ledger(settings, "audit", "replay", *unknown) == (2, "")
    before = "2000-01-01T00:00:00Z"
    assert await run_ledger(
        settings, "audit", "replay", "--family", "fam-a", "--as-of", before
    ) == (0, "")


async def wigan_with_a_family(client: Client, admin: dict[str, str]) -> None:
    await client.put(
        "/pilots/wigan",
        json={
            "name": "Wigan",
            "period_months": 12,
            "family_cap_pence": 100_000_000,
            "categories": ["other"],
        },
        headers=admin,
    )
    await client.post(
        "/pilots/wigan/families",
        json={"family_id": "fam-a", "team": "t", "worker": "w", "enrolled_on": "2026-01-05"},
        headers=admin,
    )


async def test_verify_raises_no_false_alarm_while_the_ledger_is_written(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """Allocations keep being committed and published while verify runs, again and again:
    every run is clean (before the fix, events published between its reading of the store
    and of Kafka were reported as gone from the store)."""
    admin = auth(token("admin", "wigan"))
    await wigan_with_a_family(client, admin)
    stop = asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        while not stop.is_set():
            response = await client.post(
                "/pilots/wigan/families/fam-a/allocations", json={"amount_pence": 1}, headers=admin
            )
            assert response.status == 201
            written += 1

    writing = asyncio.create_task(write())
    try:
        runs = [await run_verify(settings) for _ in range(4)]
    finally:
        stop.set()
        await writing
    assert written > 20
    for code, output in runs:
        assert code == 0, output
        assert "broken" not in output


async def test_a_topic_read_beside_its_store_reads_to_its_end_once_the_store_is_read(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """Verify reads a service's topic while its store is read. The topic is read to the end
    it has once the store has been read, not the end it had when reading began: an event
    published meanwhile was in the store read, and must be found on the topic. Only ids and
    hashes are kept (bounded memory over millions of events)."""
    admin = auth(token("admin", "wigan"))
    await wigan_with_a_family(client, admin)
    await read_topic(settings, "ledger.allocation", expect=2)
    store_read: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    reading = asyncio.create_task(
        audit.read_topic(
            settings.kafka,
            settings.topic("ledger.allocation"),
            lambda _: True,
            after=store_read,
            collect=False,
        )
    )
    await asyncio.sleep(1)  # the reader is at the topic's end as it was
    assert not reading.done()
    funded = await client.post(
        "/pilots/wigan/families/fam-a/allocations", json={"amount_pence": 500}, headers=admin
    )
    assert funded.status == 201
    await read_topic(settings, "ledger.allocation", expect=3)
    store_read.set_result(None)
    read = await asyncio.wait_for(reading, timeout=30)
    assert (await funded.json())["event_id"] in read.hashes
    assert len(read.hashes) == 3
    assert read.events == []


async def test_a_topic_read_beside_a_store_that_failed_stops(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """If the store being read beside it fails, the topic is read no further: there is
    nothing to judge it against, and verify ends with the store's error."""
    await wigan_with_a_family(client, auth(token("admin", "wigan")))
    await read_topic(settings, "ledger.allocation", expect=2)
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(OSError("the store's database went away"))
    read = await audit.read_topic(
        settings.kafka, settings.topic("ledger.allocation"), lambda _: True, after=failed
    )
    assert read.hashes == {}
    assert failed.exception() is not None  # retrieved: asyncio says nothing of it


async def test_verify_refuses_a_pilot_it_has_nothing_of(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """A pilot no store holds an event of is not "ok": there was nothing to verify (exit 2)."""
    await wigan_with_a_family(client, auth(token("admin", "wigan")))
    await read_topic(settings, "ledger.allocation", expect=2)
    code, output = await run_ledger(settings, "audit", "verify", "--pilot", "no-such-pilot")
    assert code == 2
    assert "ok" not in output
    assert (await run_ledger(settings, "audit", "verify", "--pilot", "wigan"))[0] == 0


async def test_verify_names_a_record_that_is_not_a_ledger_event(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """A forged record on a ledger topic is a finding with its place, not a traceback."""
    await wigan_with_a_family(client, auth(token("admin", "wigan")))
    await read_topic(settings, "ledger.allocation", expect=2)
    place = await forge(settings, b'{"forged": true}', b"wigan:fam-a")
    code, output = await run_verify(settings)
    assert code == 1, output
    assert broken_at(output, place, "not a ledger event"), output
    code, output = await run_ledger(settings, "audit", "verify", "--pilot", "wigan")
    assert code == 1, output


async def test_verify_finds_an_event_altered_on_the_topic_with_its_hash_kept(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """A copy of a real event whose team was changed on the topic, its hash left as it
    was, is found: the topic's copy is hashed too, not only compared by its hash field."""
    await wigan_with_a_family(client, auth(token("admin", "wigan")))
    [configured, enrolled] = await read_topic(settings, "ledger.allocation", expect=2)
    altered = {**enrolled.value, "data": {**enrolled.value["data"], "team": "t-forged"}}
    place = await forge(settings, json.dumps(altered).encode(), enrolled.key.encode())
    code, output = await run_verify(settings)
    assert code == 1, output
    assert broken_at(output, place, "does not match its hash"), output
    # Replay passes over it: the history holds the event as the ledger wrote it.
    code, output = await run_ledger(settings, "audit", "replay", "--pilot", "wigan")
    assert code == 0, output
    assert "t-forged" not in output
    assert configured.value["id"] in output


async def forge(settings: Settings, value: bytes, key: bytes) -> str:
    """Write a record onto allocation's topic behind the ledger's back; where it landed."""
    producer = AIOKafkaProducer(**connection(settings.kafka))
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.topic("ledger.allocation"), value=value, key=key
        )
    finally:
        await producer.stop()
    return f"{settings.topic('ledger.allocation')}:{sent.partition}@{sent.offset}"


def broken_at(output: str, place: str, reason: str) -> bool:
    """Whether verify named the record at ``place`` as broken, for ``reason``."""
    return any(
        line.startswith("broken:") and place in line and reason in line
        for line in output.splitlines()
    )


async def test_verify_writes_evidence_a_later_run_is_compared_with(
    client: Client, settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    """--json: the events per service and each stream's head hash, to keep; --compare: a
    later run holds every kept head (history grown since is fine; a head that is gone or
    is another event now is named, exit 1)."""
    admin = auth(token("admin", "wigan"))
    pilot = {"name": "W", "period_months": 12, "family_cap_pence": 400_000,
             "categories": ["other"]}  # fmt: skip
    assert (await client.put("/pilots/wigan", json=pilot, headers=admin)).status == 201
    body = {"family_id": "fam-e", "team": "t", "worker": "w", "enrolled_on": "2026-01-05"}
    assert (await client.post("/pilots/wigan/families", json=body, headers=admin)).status == 201
    await read_topic(settings, "ledger.allocation", expect=2)
    code, output = await run_ledger(settings, "audit", "verify", "--json")
    assert code == 0, output
    evidence = json.loads(output)
    assert evidence["holds"] is True
    allocation = evidence["services"]["allocation"]
    assert allocation["events"] == 2
    assert set(allocation["heads"]) == {"pilot:wigan", "family:wigan:fam-e"}
    assert allocation["heads"]["family:wigan:fam-e"]["version"] == 1
    kept = tmp_path / "evidence.json"
    kept.write_text(output)

    grown = await client.post(
        "/pilots/wigan/families/fam-e/allocations", json={"amount_pence": 500}, headers=admin
    )
    assert grown.status == 201
    await read_topic(settings, "ledger.allocation", expect=3)
    code, output = await run_ledger(settings, "audit", "verify", "--compare", str(kept))
    assert code == 0, output  # grown since, not rewritten

    rewritten = json.loads(kept.read_text())
    heads = rewritten["services"]["allocation"]["heads"]
    heads["family:wigan:fam-e"]["hash"] = "0" * 64  # what the store held when it was kept
    heads["family:wigan:fam-gone"] = {"version": 4, "hash": "1" * 64}
    kept.write_text(json.dumps(rewritten))
    code, output = await run_ledger(settings, "audit", "verify", "--compare", str(kept))
    assert code == 1
    broken = [line for line in output.splitlines() if line.startswith("broken:")]
    assert len(broken) == 2, output
    assert "family:wigan:fam-e version 1" in broken[0]
    assert "the evidence kept says hash 000" in broken[0]
    assert "family:wigan:fam-gone version 4" in broken[1]
