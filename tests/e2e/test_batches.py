"""Batches: each line applied exactly as its own request, answered per line, nothing twice."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from shared.core.settings import Settings
from shared.web.batches import MAX_LINES, NDJSON
from tests.e2e.system import Client, System, auth, running_system
from tests.support import connect_service_db, stored_events, wait_for


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure()
        yield system


def ndjson(lines: list[dict[str, Any] | str]) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


async def send(
    client: Client, headers: dict[str, str], lines: list[dict[str, Any] | str], pilot: str = "wigan"
) -> list[dict[str, Any]]:
    response = await client.post(
        f"/pilots/{pilot}/batches",
        data=ndjson(lines),
        headers={**headers, "Content-Type": NDJSON},
    )
    assert response.status == 200, await response.text()
    assert response.content_type == NDJSON
    return [json.loads(line) for line in (await response.text()).splitlines()]


def enrol(family: str, key: str, team: str = "t-1") -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/pilots/wigan/families",
        "idempotency_key": key,
        "body": {"family_id": family, "team": team, "worker": "sw-1", "enrolled_on": "2026-01-05"},
    }


def allocate(family: str, key: str, amount: int) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": f"/pilots/wigan/families/{family}/allocations",
        "idempotency_key": key,
        "body": {"amount_pence": amount},
    }


async def test_each_line_is_applied_as_its_own_request_and_answered_in_order(
    system: System, settings: Settings
) -> None:
    lines: list[dict[str, Any] | str] = [
        enrol("fam-1", "e-1"),
        allocate("fam-1", "a-1", 100_000),  # needs the line before it
        enrol("fam-1", "e-1b"),  # enrolled twice: 409, as its own request
        allocate("fam-1", "a-2", 10**9),  # above the cap: 422
        {**allocate("fam-1", "a-3", 5_000), "body": {"amount_pence": "5000"}},  # a string
        "{not json",
        {"method": "POST", "path": "/pilots/wigan/families/fam-1/allocations", "body": {}},
        {**enrol("fam-2", "e-2"), "path": "/pilots/bury/families"},  # another pilot
        {**enrol("fam-3", "e-3"), "method": "PUT"},  # no such command
        enrol("fam-4", "e-4"),
    ]
    before = await stored_events(settings)
    answers = await send(system.allocation, system.admin(), lines)
    assert [a["line"] for a in answers] == list(range(1, len(lines) + 1))
    statuses = [a["status"] for a in answers]
    assert statuses == [201, 201, 409, 422, 422, 400, 422, 403, 404, 201]
    codes = [a["body"].get("code") for a in answers]
    assert codes[2:9] == [
        "already_enrolled",
        "exceeds_family_cap",
        "validation_failed",
        "malformed_json",
        "validation_failed",
        "forbidden_pilot",
        "not_found",
    ]
    assert answers[0]["body"]["family_id"] == "fam-1"
    # Only the three applied lines recorded anything: two enrolments and one allocation.
    assert await stored_events(settings) == before + 3

    family = await system.allocation.get("/pilots/wigan/families/fam-1", headers=system.admin())
    assert (await family.json())["periods"][0]["allocated_pence"] == 100_000


async def test_a_batch_sent_again_applies_nothing_twice(system: System, settings: Settings) -> None:
    """As after a dropped connection: every applied line answers as the first time did."""
    lines: list[dict[str, Any] | str] = [enrol("fam-1", "e-1"), allocate("fam-1", "a-1", 7_000)]
    first = await send(system.allocation, system.admin(), lines)
    events = await stored_events(settings)
    again = await send(system.allocation, system.admin(), lines)
    assert [a["status"] for a in again] == [a["status"] for a in first] == [201, 201]
    assert [a["body"] for a in again] == [a["body"] for a in first]
    assert [a["replayed"] for a in again] == [True, True]
    assert await stored_events(settings) == events
    # A line and its own request share the key's scope: the request replays the line.
    response = await system.allocation.post(
        "/pilots/wigan/families/fam-1/allocations",
        json={"amount_pence": 7_000},
        headers={**system.admin(), "Idempotency-Key": "a-1"},
    )
    assert response.status == 201
    assert response.headers["Idempotent-Replayed"] == "true"


async def test_lines_are_authorised_like_their_own_requests(
    system: System, token: Callable[..., str]
) -> None:
    """A social worker may enrol into their own team only, and may not allocate at all."""
    worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
    answers = await send(
        system.allocation,
        worker,
        [enrol("fam-1", "e-1"), enrol("fam-2", "e-2", team="t-2"), allocate("fam-1", "a", 100)],
    )
    assert [a["status"] for a in answers] == [201, 403, 403]


async def test_spend_requests_go_through_spendings_batch(system: System) -> None:
    version = await system.enrol("fam-1", allocate=100_000)
    line = {
        "method": "POST",
        "path": "/pilots/wigan/spend-requests",
        "idempotency_key": "r-1",
        "body": {
            "family_id": "fam-1",
            "amount_pence": 2_500,
            "category": "practical",
            "purpose": "school uniform",
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": version,
        },
    }
    # Sent as a case system would: again after a 503 (a line never waits for spending's
    # views inside a batch), the same key recording it once.
    answer: dict[str, Any] = {}

    async def sent() -> bool:
        [found] = await send(system.spending, system.worker(), [line])
        answer.update(found)
        return bool(found["status"] != 503)

    await wait_for(sent, timeout=15, interval=0.2)
    assert answer["status"] == 202, answer
    settled = await system.settled(answer["body"]["request_id"], "approved")
    assert settled["amount_pence"] == 2_500


async def test_a_batch_that_cannot_be_read_applies_nothing(
    system: System, settings: Settings
) -> None:
    before = await stored_events(settings)
    too_many = [enrol(f"fam-{n}", f"e-{n}") for n in range(MAX_LINES + 1)]
    response = await system.allocation.post(
        "/pilots/wigan/batches",
        data=ndjson(too_many),  # type: ignore[arg-type]
        headers={**system.admin(), "Content-Type": NDJSON},
    )
    assert response.status == 413
    assert (await response.json())["code"] == "batch_too_large"
    as_json = await system.allocation.post(
        "/pilots/wigan/batches", json=enrol("fam-1", "e-1"), headers=system.admin()
    )
    assert as_json.status == 415
    empty = await system.allocation.post(
        "/pilots/wigan/batches", data=b"", headers={**system.admin(), "Content-Type": NDJSON}
    )
    assert empty.status == 422
    assert (await empty.json())["code"] == "empty_batch"
    no_token = await system.allocation.post(
        "/pilots/wigan/batches", data=ndjson([enrol("fam-1", "e-1")])
    )
    assert no_token.status == 401
    assert await stored_events(settings) == before


async def test_each_answer_is_one_line_whatever_a_line_echoes(system: System) -> None:
    """A refused line's problem may quote its path; a U+0085 or U+2028 in it must not split
    the answer's line for a reader that takes them for line breaks (schemathesis found it)."""
    line = {"method": "POST", "path": "/\u0085x\u2028y", "idempotency_key": "k", "body": {}}
    response = await system.allocation.post(
        "/pilots/wigan/batches",
        data=json.dumps(line) + "\n",
        headers={**system.admin(), "Content-Type": NDJSON},
    )
    text = await response.text()
    assert len(text.splitlines()) == 1, text
    assert json.loads(text)["status"] == 404


def spend(family: str, key: str, amount: int, version: int) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/pilots/wigan/spend-requests",
        "idempotency_key": key,
        "body": {
            "family_id": family,
            "amount_pence": amount,
            "category": "practical",
            "purpose": "a bus pass",
            "requested_by": "case-1",
            "family_involved": True,
            "allocation_version": version,
        },
    }


async def test_batches_waiting_on_views_never_wedge_spending(system: System) -> None:
    """More concurrent batches than spending has connections, every line naming a version of
    its family that spending's views have not reached: each line answers 503
    not_yet_consistent at once, and spending goes on answering. Each line used to wait for
    the views inside its chunk's transaction, on a second connection: with the pool used
    up by the chunks, none could be had, and spending stopped for good, consumers too."""
    version = await system.enrol("fam-1", allocate=100_000)
    case = auth(system.token("case_system", "wigan", sub="case-1"))
    batches = [
        send(
            system.spending,
            case,
            [spend("fam-1", f"b{n}-{i}", 100, version + 50) for i in range(3)],
        )
        for n in range(12)  # the tests' pool holds 8
    ]
    answered = await asyncio.wait_for(asyncio.gather(*batches), timeout=30)
    codes = {(line["status"], line["body"]["code"]) for lines in answered for line in lines}
    assert codes == {(503, "not_yet_consistent")}
    ready = await system.spending.get("/readyz")
    assert ready.status == 200, await ready.text()
    await system.request("fam-1", 2_500, version=version)  # spending still decides


async def test_batches_naming_families_in_opposite_orders_are_all_applied(
    system: System, settings: Settings
) -> None:
    """Batches at once, each naming the same four families in another order. Each appends
    to a family its chunk's transaction then holds until it commits, and waits on
    another's: PostgreSQL breaks such a deadlock by rolling one transaction back. That is
    no outage: the loser runs again, and every line answers 201. A line used to answer
    503 unavailable when its chunk lost twice in a row (a clean-clone run's interleavings
    test saw one)."""
    families = [f"fam-{n}" for n in range(4)]
    await send(system.allocation, system.admin(), [enrol(f, f"e-{f}") for f in families])
    before = await stored_events(settings)
    chance = random.Random(28)
    rounds, concurrent = 10, 4
    for n in range(rounds):
        batches: list[list[dict[str, Any] | str]] = [
            [allocate(f, f"a{n}-{b}-{f}", 100) for f in chance.sample(families, len(families))]
            for b in range(concurrent)
        ]
        answered = await asyncio.gather(
            *(send(system.allocation, system.admin(), lines) for lines in batches)
        )
        statuses = Counter(
            (line["status"], line["body"].get("code")) for lines in answered for line in lines
        )
        assert statuses == {(201, None): concurrent * len(families)}, f"round {n}: {statuses}"
    assert await stored_events(settings) == before + rounds * concurrent * len(families)


async def test_the_same_key_twice_in_a_batch_answers_as_two_requests_would(system: System) -> None:
    """Two lines under one key, one of them a body that is not valid (refused before its
    command runs), in either order: the valid line is answered, and afterwards the key
    replays that line's answer to that line's body, as two requests would have left it. The
    key used to keep the last line's fingerprint with the first answered line's answer: the
    answered body sent again was refused as another request under the key."""
    await system.enrol("fam-1")
    valid = allocate("fam-1", "k-1", 10_000)
    invalid = {**allocate("fam-1", "k-1", 0), "body": {"amount_pence": "ten pounds"}}
    later = {**valid, "idempotency_key": "k-2"}
    answers = await send(
        system.allocation,
        system.admin(),
        [valid, invalid, {**invalid, "idempotency_key": "k-2"}, later],
    )
    assert [a["status"] for a in answers] == [201, 422, 422, 201]
    path = "/pilots/wigan/families/fam-1/allocations"
    for key, answered in (("k-1", answers[0]), ("k-2", answers[3])):
        replay = await system.allocation.post(
            path, json=valid["body"], headers={**system.admin(), "Idempotency-Key": key}
        )
        assert replay.status == 201, await replay.text()
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert await replay.json() == answered["body"]
    other = await system.allocation.post(
        path, json={"amount_pence": 20_000}, headers={**system.admin(), "Idempotency-Key": "k-1"}
    )
    assert other.status == 409


async def test_events_are_counted_once_they_are_committed(
    system: System, settings: Settings
) -> None:
    """A chunk run without savepoints and undone by a refused line appended events that were
    never committed; ledger_events_appended_total counted them, and then counted them again
    when the chunk ran with savepoints. It counts what the store holds."""
    answers = await send(
        system.allocation,
        system.admin(),
        [enrol("fam-1", "e-1"), enrol("fam-2", "e-2"), enrol("fam-1", "e-3")],
    )
    assert [a["status"] for a in answers] == [201, 201, 409]
    metrics = await (await system.allocation.get("/metrics")).text()
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ledger_events_appended_total{")
    )
    async with connect_service_db(settings, "allocation") as conn:
        stored = await conn.fetchval("SELECT count(*) FROM events")
    assert counted == stored
