"""Claims and scopes that fail closed: team claims, idempotency scopes, replays, token issuer
and audience, and the ids a caller may put into events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.core.events import chain_hash, partition_key
from shared.core.kafka import ensure_topics, new_producer
from shared.core.settings import Settings
from shared.web.auth import mint_token
from shared.web.registry import ledger_topics, migrate
from tests.conftest import JWT_SECRET, Infrastructure
from tests.e2e.processes import ServiceProcesses
from tests.e2e.system import System, auth, running_system
from tests.support import connect_service_db, read_topic, stored_events, wait_for

DISCLOSURE = {"disclosed_on": "2026-06-01", "method": "in_person"}


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure()
        yield system


async def test_a_team_role_without_a_team_claim_is_refused(system: System) -> None:
    """A manager's token that names no team sees no queue at all (it saw every team's)."""
    teamless = mint_token(
        JWT_SECRET, sub="m-1", role="manager", pilot="wigan", team=None, now=datetime.now(UTC)
    )
    response = await system.approval.get(
        "/pilots/wigan/approvals?status=pending", headers=auth(teamless)
    )
    assert response.status == 401
    assert (await response.json())["code"] == "bad_token"


async def test_idempotency_keys_are_scoped_by_pilot_role_and_operation(
    system: System, token: Callable[..., str]
) -> None:
    """The same key and subject in another pilot, another role or another operation is a
    first request there: no false 409, no replay of someone else's answer."""
    await system.enrol("fam-1")
    key = {"Idempotency-Key": "sync-0001"}
    worker = auth(token("social_worker", "wigan", sub="shared-sub", team="t-1"))
    system_user = auth(token("case_system", "wigan", sub="shared-sub"))
    path = "/pilots/wigan/families/fam-1/disclosures"
    first = await system.allocation.post(path, json=DISCLOSURE, headers={**worker, **key})
    assert first.status == 201
    as_case_system = await system.allocation.post(
        path, json=DISCLOSURE, headers={**system_user, **key}
    )
    assert as_case_system.status == 201
    assert "Idempotent-Replayed" not in as_case_system.headers  # its own, not the worker's
    outcome = await system.allocation.post(
        "/pilots/wigan/families/fam-1/outcomes",
        json={"outcome": "remained_at_home", "occurred_on": "2026-06-02"},
        headers={**worker, **key},
    )
    assert outcome.status == 201  # another operation: not a reused key (422 before)
    other_pilot = replace(system, pilot="leeds")
    await other_pilot.configure()
    await other_pilot.enrol("fam-1")
    elsewhere = await system.allocation.post(
        "/pilots/leeds/families/fam-1/disclosures",
        json=DISCLOSURE,
        headers={**auth(token("social_worker", "leeds", sub="shared-sub", team="t-1")), **key},
    )
    assert elsewhere.status == 201  # another pilot: no false 409


async def test_a_replay_is_authorised_like_a_first_request(
    system: System, token: Callable[..., str]
) -> None:
    """A worker who moved team cannot replay a key to act on (or read) the old team's family."""
    await system.enrol("fam-2")
    key = {"Idempotency-Key": "disclose-fam-2"}
    path = "/pilots/wigan/families/fam-2/disclosures"
    before = auth(token("social_worker", "wigan", sub="w-5", team="t-1"))
    assert (
        await system.allocation.post(path, json=DISCLOSURE, headers={**before, **key})
    ).status == 201
    moved = auth(token("social_worker", "wigan", sub="w-5", team="t-9"))
    replay = await system.allocation.post(path, json=DISCLOSURE, headers={**moved, **key})
    assert replay.status == 404  # another team's family: not there, to this worker
    assert (await replay.json())["code"] == "not_found"
    same = await system.allocation.post(path, json=DISCLOSURE, headers={**before, **key})
    assert same.status == 201
    assert same.headers["Idempotent-Replayed"] == "true"


async def test_ids_a_caller_gives_are_kept_only_when_they_are_short_tokens(
    system: System, settings: Settings
) -> None:
    """A correlation id of any length or alphabet is replaced by one the ledger mints; a
    causation id that is not a short token is dropped. Events keep only what passed."""
    await system.enrol("fam-3")
    path = "/pilots/wigan/families/fam-3/disclosures"
    for correlation, causation in (
        ("<script>alert(1)</script>", "x" * 65),
        ("ok-id.1:2", "cause_7"),
    ):
        headers = {
            **system.worker(),
            "X-Correlation-Id": correlation,
            "X-Causation-Id": causation,
        }
        response = await system.allocation.post(path, json=DISCLOSURE, headers=headers)
        assert response.status == 201
    async with connect_service_db(settings, "allocation") as conn:
        rows = await conn.fetch(
            "SELECT envelope->>'correlationid' AS correlation, "
            "envelope->>'causationid' AS causation FROM events "
            "WHERE type = 'family.budget_disclosed' ORDER BY position"
        )
    assert rows[0]["correlation"] != "<script>alert(1)</script>"
    assert len(rows[0]["correlation"]) == 36  # minted
    assert rows[0]["causation"] is None
    assert (rows[1]["correlation"], rows[1]["causation"]) == ("ok-id.1:2", "cause_7")


async def test_issuer_and_audience_are_checked_when_configured(
    infra: Infrastructure, token: Callable[..., str]
) -> None:
    """With iss and aud configured, a token without them, or with others, is refused."""
    settings = infra.settings(jwt_issuer="council-idp", jwt_audience="ledger")
    await ensure_topics(settings, ledger_topics())
    now = datetime.now(UTC)

    def minted(issuer: str | None = None, audience: str | None = None) -> dict[str, str]:
        return auth(
            mint_token(
                JWT_SECRET,
                sub="a",
                role="admin",
                pilot="wigan",
                team=None,
                now=now,
                issuer=issuer,
                audience=audience,
            )
        )

    async with running_system(settings, token) as system:
        path = "/pilots/wigan"
        assert (await system.allocation.get(path, headers=minted())).status == 401
        wrong_issuer = minted(issuer="elsewhere", audience="ledger")
        assert (await system.allocation.get(path, headers=wrong_issuer)).status == 401
        wrong_audience = minted(issuer="council-idp", audience="reports")
        assert (await system.allocation.get(path, headers=wrong_audience)).status == 401
        right = minted(issuer="council-idp", audience="ledger")
        assert (await system.allocation.get(path, headers=right)).status == 404  # no pilot yet


@pytest.fixture
async def with_reporting(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        await system.enrol("fam-b", allocate=10_000)
        yield system


async def test_bad_input_is_a_problem_not_a_500(with_reporting: System, settings: Settings) -> None:
    """NUL in a path or a body, JSON nested 1,000 deep, times outside 2000-2099 (one of them
    before year 1 once in UTC): each a 4xx problem that records nothing (each was a 500)."""
    system = with_reporting
    assert system.reporting is not None
    admin = system.admin()
    before = await stored_events(settings)
    deep = "[" * 1_000 + "]" * 1_000
    attempts = [
        system.allocation.get("/pilots/wigan/families/fam%00b", headers=admin),
        system.allocation.put(
            "/pilots/wigan", json={"name": "Wig\x00an", "period_months": 12}, headers=admin
        ),
        system.allocation.post(
            "/pilots/wigan/families/fam-b/allocations",
            data=f'{{"amount_pence": 1, "note": {deep}}}',
            headers={**admin, "Content-Type": "application/json"},
        ),
        *(
            system.allocation.post(
                "/pilots/wigan/families/fam-b/allocations",
                json={"amount_pence": 1, "occurred_at": moment},
                headers=admin,
            )
            for moment in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00")
        ),
        *(
            system.reporting.get(
                f"/pilots/wigan/families/fam-b/balance?as_of={moment}", headers=admin
            )
            for moment in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00%2B14:00")
        ),
    ]
    for attempt in attempts:
        response = await attempt
        assert 400 <= response.status < 500, (response.url, response.status)
        assert response.content_type == "application/problem+json"
    assert await stored_events(settings) == before


async def test_every_answer_carries_the_safe_headers(with_reporting: System) -> None:
    """JSON, CSV and the dashboard: no server version, no sniffing, no referrer, no cache."""
    system = with_reporting
    assert system.reporting is not None
    answers = [
        await system.allocation.get("/pilots/wigan/families/fam-b", headers=system.admin()),
        await system.reporting.get("/pilots/wigan/transactions.csv", headers=system.finance()),
        await system.reporting.get("/pilots/wigan/dashboard", headers=system.admin()),
        await system.spending.get("/pilots/wigan/spend-requests/nothing", headers=system.admin()),
    ]
    for answer in answers:
        assert answer.headers["Server"] == "ledger", answer.url
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"


async def test_a_forged_event_is_dead_lettered_and_moves_no_money(
    with_reporting: System, settings: Settings
) -> None:
    """Records on allocation's topic that another source wrote, whose hash is not their own,
    or whose prev_hash does not continue the family's stream, are rejected by every consumer
    (before, each was applied: £9,999 appeared in approval's and reporting's balances), go to
    the dead-letter topic, and hold nothing back: the family's next real event applies."""
    system = with_reporting

    async def every_one_says(services: tuple[str, ...], query: str, expected: object) -> bool:
        for service in services:
            async with connect_service_db(settings, service) as conn:
                if await conn.fetchval(query) != expected:
                    return False
        return True

    consumers = ("spending", "approval", "reporting")
    applied = "SELECT version FROM consumer_streams WHERE stream_id = 'family:wigan:fam-b'"
    await wait_for(lambda: every_one_says(consumers, applied, 2))  # the real events come first
    async with connect_service_db(settings, "allocation") as conn:
        last = json.loads(
            await conn.fetchval(
                "SELECT envelope FROM events WHERE family_id = 'fam-b' "
                "ORDER BY stream_version DESC LIMIT 1"
            )
        )
    forged = []
    for source, prev_hash, bad_hash in (
        ("ledger/spending", last["hash"], False),  # not the topic's owner
        ("ledger/allocation", last["hash"], True),  # its hash is not its own
        ("ledger/allocation", "0" * 64, False),  # does not continue the stream
    ):
        event = {
            **last,
            "id": str(uuid.uuid4()),
            "type": "family.budget_allocated",
            "source": source,
            "streamversion": last["streamversion"] + 1,
            "prevhash": prev_hash,
            "data": {
                "allocation_id": str(uuid.uuid4()),
                "amount_pence": 999_900,
                "period_start": "2026-01-05",
                "period_end": "2027-01-04",
                "note": None,
                "pilot_version": 1,
                "period_allocated_pence": 1_009_900,
            },
        }
        event["hash"] = "f" * 64 if bad_hash else chain_hash(event)
        forged.append(event)
    producer = new_producer(settings.kafka, "forger")
    await producer.start()
    try:
        for event in forged:
            await producer.send_and_wait(
                settings.topic("ledger.allocation"),
                json.dumps(event).encode(),
                key=partition_key("wigan", "fam-b"),
            )
    finally:
        await producer.stop()
    dead = await read_topic(settings, "ledger.deadletter", expect=12, timeout=30)
    # Three forgeries, each rejected by spending, approval and reporting's two consumers
    # (its projections, and its webhooks: a forgery is never sent to a case system).
    assert len(dead) == 12
    assert all("rejected" in record.headers.get("error", "") for record in dead), dead[0].headers
    await system.allocate("fam-b", 5_000)  # the family's next real event

    allocated = "SELECT allocated_pence FROM balances WHERE family_id = 'fam-b'"
    await wait_for(lambda: every_one_says(("approval", "reporting"), allocated, 15_000), timeout=20)


async def test_a_body_that_trickles_in_is_cut_off(
    infra: Infrastructure, token: Callable[..., str]
) -> None:
    """A client that sends its headers and then its body a byte at a time gets a 408
    problem once the body timeout passes, instead of holding the connection for ever."""
    settings = infra.settings(http_body_timeout_seconds=0.5)
    await ensure_topics(settings, ledger_topics())
    async with running_system(settings, token) as system:
        await system.configure()
        server = system.allocation.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /pilots/wigan/families HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token('admin', 'wigan')}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 30)  # a bound, not a timing check
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"request_timeout" in answer


async def test_the_served_process_bounds_header_time_and_quotes_no_bad_request(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """As `ledger serve` runs a service: a client that trickles its headers is cut off once
    the header timeout passes (it was held for aiohttp's 75 s keep-alive), and a request
    with an over-long Authorization header is a problem that quotes none of the token
    (aiohttp's answer quoted its first 100 bytes, with aiohttp's version in `Server`)."""
    settings = infra.settings(http_header_timeout_seconds=1.0)
    await ensure_topics(settings, ledger_topics())
    await migrate(settings, ["allocation"])
    processes = ServiceProcesses(settings, tmp_path)
    try:
        await processes.start("allocation")
        port = int(processes.url("allocation").rsplit(":", 1)[1])

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 30:
            try:
                writer.write(b"X")  # a header that never ends
                await writer.drain()
                await asyncio.sleep(0.2)
                closed = reader.at_eof()
            except ConnectionError:  # written to after the server closed: a reset
                closed = True
        assert closed, "the connection was still open after 30 s"
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        secret = b"eyJhbGciOiJIUzI1NiJ9.SECRET-PART-OF-A-TOKEN"
        writer.write(
            b"GET /pilots/wigan/families HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + secret
            + b"A" * 9_000
            + b"\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    finally:
        await processes.stop_all()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), head
    assert b"application/problem+json" in head
    assert b"\r\nServer: ledger\r\n" in head
    assert json.loads(body)["code"] == "malformed_request"
    assert b"SECRET" not in answer
    assert b"SECRET" not in processes.log_path("allocation").read_bytes()


async def test_a_command_without_its_own_content_type_is_refused(system: System) -> None:
    """What a page on another site can make a browser send without asking first, with the
    cookies a sign-on proxy turns into a token: a form, text/plain, or no body at all. Each
    is a 415 and decides nothing; a manager's approval used to go through for an empty form."""
    version = await system.enrol("fam-1", allocate=100_000)
    request_id = (await system.request("fam-1", 80_000, version=version))["request_id"]
    await system.settled(request_id, "awaiting_approval")
    path = f"/pilots/wigan/spend-requests/{request_id}/approve"
    for content_type, body in (
        ("application/x-www-form-urlencoded", b""),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
        ("text/plain", b"{}"),
        (None, b""),
    ):
        headers = system.manager() | ({"Content-Type": content_type} if content_type else {})
        response = await system.approval.post(path, data=body, headers=headers)
        assert response.status == 415, (content_type, await response.text())
        assert (await response.json())["code"] == "unsupported_media_type"
    assert (await system.status(request_id))["status"] == "awaiting_approval"
    approved = await system.approval.post(path, json={}, headers=system.manager())
    assert approved.status == 200, await approved.text()
