"""Allocation through HTTP against the real service, PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.allocation.app import create_app
from services.allocation.randomisation import arm_for
from shared.contracts.allocation import seed_commitment
from shared.core.events import Envelope
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.registry import ledger_topics
from tests.conftest import JWT_SECRET, Infrastructure
from tests.support import connect_service_db, read_topic, serve, wait_for

Client = TestClient[web.Request, web.Application]

DARLINGTON: dict[str, Any] = {
    "name": "Darlington",
    "period_months": 12,
    "family_cap_pence": 1_000_000,
    "allocation": {
        "mode": "randomised",
        "treatment_ratio": 0.5,
        "method": "permuted_blocks",
        "strata": ["0-4", "5-9", "10-16"],
    },
    "approval_tiers": [],
    "categories": ["practical", "therapeutic", "relationship", "other"],
    "forecast_spend_per_family_pence": 1_000_000,
}
WIGAN: dict[str, Any] = {
    "name": "Wigan",
    "period_months": 12,
    "family_cap_pence": 400_000,
    "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
    "categories": ["practical", "therapeutic", "relationship", "other"],
}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """The allocation service on its own database and topics."""
    async with serve(settings, "allocation", create_app) as client:
        yield client


_pilots = itertools.count(1)


@pytest.fixture(scope="module")
async def shared(infra: Infrastructure) -> AsyncIterator[tuple[Client, Settings]]:
    """One allocation service for the module's validation and auth tests: each of them uses a
    pilot of its own (``pilot``), so none sees another's data."""
    settings = infra.settings()
    await ensure_topics(settings, ledger_topics())
    async with serve(settings, "allocation", create_app) as client:
        yield client, settings


@pytest.fixture
def pilot() -> str:
    """A pilot id no other test of the module uses."""
    return f"wigan-{next(_pilots)}"


def in_pilot(path: str, pilot: str) -> str:
    """A path of pilot ``wigan`` as the same path of ``pilot``."""
    return path.replace("/pilots/wigan", f"/pilots/{pilot}", 1)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def event_count(settings: Settings) -> int:
    async with connect_service_db(settings, "allocation") as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


async def setup_wigan(client: Client, token: Callable[..., str], pilot: str = "wigan") -> str:
    admin = token("admin", pilot)
    response = await client.put(f"/pilots/{pilot}", json=WIGAN, headers=auth(admin))
    assert response.status == 201
    response = await client.post(
        f"/pilots/{pilot}/families",
        json={"family_id": "fam-1", "team": "t-1", "worker": "w-1", "enrolled_on": "2026-04-01"},
        headers=auth(admin),
    )
    assert response.status == 201
    return admin


async def test_pilot_is_created_then_versioned(client: Client, token: Callable[..., str]) -> None:
    """PUT creates (201), a change makes version 2 (200), the same config changes nothing."""
    admin = token("admin", "darlington")
    first = await client.put("/pilots/darlington", json=DARLINGTON, headers=auth(admin))
    assert first.status == 201
    assert (await first.json())["version"] == 1
    changed = {**DARLINGTON, "allocation": {"mode": "all"}}
    second = await client.put("/pilots/darlington", json=changed, headers=auth(admin))
    assert second.status == 200
    assert (await second.json())["version"] == 2
    same = await client.put("/pilots/darlington", json=changed, headers=auth(admin))
    assert (await same.json())["version"] == 2
    current = await client.get("/pilots/darlington", headers=auth(token("auditor", "darlington")))
    body = await current.json()
    assert body["version"] == 2
    assert body["config"]["allocation"] == {"mode": "all"}


async def test_enrolment_randomises_with_a_secret_seed_revealed_at_the_close(
    client: Client, token: Callable[..., str]
) -> None:
    """The seed is the ledger's: no answer holds it, the pilot shows its commitment; a stratum
    the pilot does not list is a 422; enrolling twice is a 409. Revealed when the trial
    closes, the seed answers its commitment and recomputes every arm; no family is
    randomised with it after that, until the pilot draws a new one."""
    admin = token("admin", "darlington")
    created = await client.put("/pilots/darlington", json=DARLINGTON, headers=auth(admin))
    assert created.status == 201
    commitment = (await created.json())["seed_commitment"]
    arms = []
    for number in range(8):
        body = {
            "family_id": f"d-{number}",
            "team": "t-1",
            "worker": "w-1",
            "enrolled_on": "2026-01-10",
            "stratum": "5-9",
        }
        response = await client.post(
            "/pilots/darlington/families",
            json=body,
            headers=auth(token("case_system", "darlington")),
        )
        assert response.status == 201
        arms.append((await response.json())["arm"])
    again = await client.post(
        "/pilots/darlington/families",
        json={**body, "family_id": "d-0"},
        headers=auth(admin),
    )
    assert again.status == 409
    assert (await again.json())["code"] == "already_enrolled"
    for stratum in ("no-such-stratum", None):
        odd = await client.post(
            "/pilots/darlington/families",
            json={**body, "family_id": "d-odd", "stratum": stratum},
            headers=auth(admin),
        )
        assert (odd.status, (await odd.json())["code"]) == (422, "unknown_stratum")
    family = await client.get("/pilots/darlington/families/d-0", headers=auth(admin))
    assert (await family.json())["arm"] == arms[0]
    shown = await client.get("/pilots/darlington", headers=auth(token("auditor", "darlington")))
    assert (await shown.json())["seed_commitment"] == commitment
    assert "seed" not in (await shown.json())["config"]["allocation"]

    revealed = await client.post(
        "/pilots/darlington/randomisation/reveal",
        json={"revealed_on": "2026-12-01"},
        headers=auth(admin),
    )
    assert revealed.status == 200, await revealed.text()
    [seed] = (await revealed.json())["revealed_seeds"]
    assert seed["commitment"] == commitment == seed_commitment(seed["seed"])
    assert arms == [arm_for(seed["seed"], "5-9", n, 0.5, "permuted_blocks") for n in range(8)]
    closed = await client.post(
        "/pilots/darlington/families",
        json={**body, "family_id": "d-late"},
        headers=auth(admin),
    )
    assert (closed.status, (await closed.json())["code"]) == (409, "seed_not_secret")
    redrawn = await client.put("/pilots/darlington", json=DARLINGTON, headers=auth(admin))
    assert (await redrawn.json())["seed_commitment"] not in {None, commitment}
    late = await client.post(
        "/pilots/darlington/families",
        json={**body, "family_id": "d-late"},
        headers=auth(admin),
    )
    assert late.status == 201


async def test_allocations_adjustments_and_cap(
    client: Client, token: Callable[..., str], settings: Settings
) -> None:
    """Allocations add up per period within the cap; adjustments move it; errors record nothing."""
    admin = await setup_wigan(client, token)
    path = "/pilots/wigan/families/fam-1"
    first = await client.post(
        f"{path}/allocations", json={"amount_pence": 300_000}, headers=auth(admin)
    )
    assert first.status == 201
    body = await first.json()
    assert body["period_allocated_pence"] == 300_000
    assert body["period_start"] == "2026-04-01"
    assert body["period_end"] == "2027-03-31"
    before = await event_count(settings)
    over = await client.post(
        f"{path}/allocations", json={"amount_pence": 100_001}, headers=auth(admin)
    )
    assert over.status == 422
    assert (await over.json())["code"] == "exceeds_family_cap"
    assert await event_count(settings) == before
    raise_ = await client.post(
        f"{path}/adjustments",
        json={"delta_pence": 100_000, "reason": "extra need"},
        headers=auth(admin),
    )
    assert raise_.status == 201
    assert (await raise_.json())["period_allocated_pence"] == 400_000
    assert (await raise_.json())["status"] == "applied"
    lower = await client.post(
        f"{path}/adjustments",
        json={"delta_pence": -400_001, "reason": "mistake"},
        headers=auth(admin),
    )
    assert lower.status == 422
    assert (await lower.json())["code"] == "exceeds_allocation"
    zero = await client.post(
        f"{path}/adjustments", json={"delta_pence": 0, "reason": "x"}, headers=auth(admin)
    )
    assert zero.status == 422
    next_period = await client.post(
        f"{path}/allocations",
        json={"amount_pence": 400_000, "period_start": "2027-04-01", "period_end": "2028-03-31"},
        headers=auth(admin),
    )
    assert next_period.status == 201
    wrong_start = await client.post(
        f"{path}/allocations",
        json={"amount_pence": 1, "period_start": "2027-05-01"},
        headers=auth(admin),
    )
    assert (await wrong_start.json())["code"] == "invalid_period"
    family = await (await client.get(path, headers=auth(admin))).json()
    assert [p["allocated_pence"] for p in family["periods"]] == [400_000, 400_000]


async def test_exit_disclosure_and_outcome(client: Client, token: Callable[..., str]) -> None:
    """A family can be told its budget, record outcomes, exit once, and then get no allocations."""
    admin = await setup_wigan(client, token)
    worker = token("social_worker", "wigan", sub="w-1", team="t-1")
    path = "/pilots/wigan/families/fam-1"
    await client.post(f"{path}/allocations", json={"amount_pence": 50_000}, headers=auth(admin))
    told = await client.post(
        f"{path}/disclosures",
        json={
            "disclosed_on": "2026-04-02",
            "amount_disclosed_pence": 400_000,
            "method": "in_person",
        },
        headers=auth(worker),
    )
    assert told.status == 201
    outcome = await client.post(
        f"{path}/outcomes",
        json={"outcome": "remained_at_home", "occurred_on": "2026-10-01"},
        headers=auth(worker),
    )
    assert outcome.status == 201
    exited = await client.post(
        f"{path}/exit",
        json={"reason": "case closed", "exited_on": "2026-11-01"},
        headers=auth(worker),
    )
    assert exited.status == 200
    assert (await exited.json())["allocated_pence"] == 50_000
    twice = await client.post(
        f"{path}/exit", json={"reason": "again", "exited_on": "2026-11-02"}, headers=auth(worker)
    )
    assert twice.status == 409
    late = await client.post(f"{path}/allocations", json={"amount_pence": 1}, headers=auth(admin))
    assert (await late.json())["code"] == "family_exited"
    family = await (await client.get(path, headers=auth(worker))).json()
    assert family["status"] == "exited"
    assert family["disclosures"] == 1
    assert family["outcomes"] == [{"outcome": "remained_at_home", "occurred_on": "2026-10-01"}]


async def test_control_arm_gets_no_budget(client: Client, token: Callable[..., str]) -> None:
    """A family randomised to control cannot be allocated money."""
    admin = token("admin", "darlington")
    await client.put("/pilots/darlington", json=DARLINGTON, headers=auth(admin))
    arms = {}
    for number in range(4):
        response = await client.post(
            "/pilots/darlington/families",
            json={
                "family_id": f"c-{number}",
                "team": "t",
                "worker": "w",
                "enrolled_on": "2026-01-01",
                "stratum": "0-4",
            },
            headers=auth(admin),
        )
        arms[f"c-{number}"] = (await response.json())["arm"]
    control = next(family for family, arm in arms.items() if arm == "control")
    refused = await client.post(
        f"/pilots/darlington/families/{control}/allocations",
        json={"amount_pence": 100},
        headers=auth(admin),
    )
    assert refused.status == 422
    assert (await refused.json())["code"] == "control_arm"


OTHER_SECRET = "another-secret-long-enough-for-any-hmac-algorithm-" + "x" * 24


def _token_with(claims: dict[str, Any], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    base = {
        "sub": "x",
        "role": "admin",
        "pilot": "wigan",
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
    }
    return jwt.encode({**base, **claims}, secret, algorithm=algorithm)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "bad_token"),
        ({"Authorization": "Basic abc"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({}, algorithm='HS512')}"}, 401, "bad_token"),
        (
            {"Authorization": f"Bearer {_token_with({}, secret=OTHER_SECRET)}"},
            401,
            "bad_token",
        ),
        ({"Authorization": f"Bearer {_token_with({'exp': 1_000_000})}"}, 401, "token_expired"),
        # RFC 8725: dates are numbers, lifetimes bounded, subjects not blank, teams not optional
        ({"Authorization": f"Bearer {_token_with({'exp': '9999999999'})}"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({'iat': None})}"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({'exp': 4_102_444_800})}"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({'sub': '  '})}"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({'role': 'manager'})}"}, 401, "bad_token"),
        ({"Authorization": f"Bearer {_token_with({'role': 'wizard'})}"}, 401, "bad_token"),
        (
            {"Authorization": f"Bearer {_token_with({'pilot': 'hillingdon'})}"},
            403,
            "forbidden_pilot",
        ),
        ({"Authorization": f"Bearer {_token_with({'role': 'auditor'})}"}, 403, "forbidden_role"),
        ({"Authorization": f"Bearer {_token_with({'role': 'finance'})}"}, 403, "forbidden_role"),
    ],
)
async def test_auth_is_enforced(
    shared: tuple[Client, Settings],
    pilot: str,
    token: Callable[..., str],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    """No, bad, expired, wrong-algorithm, wrong-pilot and wrong-role tokens are refused."""
    client, settings = shared
    await setup_wigan(client, token, pilot)
    before = await event_count(settings)
    response = await client.post(
        f"/pilots/{pilot}/families/fam-1/allocations", json={"amount_pence": 100}, headers=headers
    )
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == code
    assert await event_count(settings) == before


async def test_token_without_expiry_is_refused(
    shared: tuple[Client, Settings], pilot: str, token: Callable[..., str]
) -> None:
    """``exp`` is required."""
    client, _ = shared
    await setup_wigan(client, token, pilot)
    unexpiring = jwt.encode(
        {"sub": "x", "role": "admin", "pilot": pilot}, JWT_SECRET, algorithm="HS256"
    )
    response = await client.get(f"/pilots/{pilot}", headers=auth(unexpiring))
    assert response.status == 401


async def test_workers_see_and_act_for_their_team_only(
    client: Client, token: Callable[..., str]
) -> None:
    """Another team's social worker may not read, act on, or enrol into this team's families:
    to them, another team's family answers as one that does not exist (404), so its
    existence is not given away; enrolling into another team is 403."""
    await setup_wigan(client, token)
    outsider = token("social_worker", "wigan", sub="w-9", team="t-9")
    path = "/pilots/wigan/families/fam-1"
    seen = await client.get(path, headers=auth(outsider))
    unknown = await client.get("/pilots/wigan/families/fam-404", headers=auth(outsider))
    seen_body, unknown_body = await seen.json(), await unknown.json()
    assert (seen.status, seen_body["code"], seen_body["detail"]) == (
        unknown.status,
        unknown_body["code"],
        unknown_body["detail"],
    )
    assert seen.status == 404
    exit_ = await client.post(
        f"{path}/exit", json={"reason": "x", "exited_on": "2026-05-01"}, headers=auth(outsider)
    )
    assert exit_.status == 404
    assert (await exit_.json())["code"] == "not_found"
    enrol = await client.post(
        "/pilots/wigan/families",
        json={"family_id": "fam-2", "team": "t-1", "worker": "w-9", "enrolled_on": "2026-04-01"},
        headers=auth(outsider),
    )
    assert enrol.status == 403
    member = token("social_worker", "wigan", sub="w-1", team="t-1")
    assert (await client.get(path, headers=auth(member))).status == 200


BAD_BODIES: list[tuple[str, str, object, int, str]] = [
    ("PUT", "/pilots/wigan", {**WIGAN, "family_cap_pence": 0}, 422, "validation_failed"),
    ("PUT", "/pilots/wigan", {**WIGAN, "family_cap_pence": 1.5}, 422, "validation_failed"),
    ("PUT", "/pilots/wigan", {**WIGAN, "family_cap_pence": "400000"}, 422, "validation_failed"),
    ("PUT", "/pilots/wigan", {**WIGAN, "categories": []}, 422, "validation_failed"),
    (
        "PUT",
        "/pilots/wigan",
        {
            **WIGAN,
            "approval_tiers": [
                {"up_to_pence": 500, "approver": "auto"},
                {"up_to_pence": 100, "approver": "manager"},
            ],
        },
        422,
        "validation_failed",
    ),
    (
        "PUT",
        "/pilots/wigan",
        {**WIGAN, "allocation": {"mode": "randomised", "treatment_ratio": 0.37}},
        422,
        "validation_failed",
    ),
    (
        "PUT",
        "/pilots/wigan",
        {**WIGAN, "allocation": {"mode": "lottery"}},
        422,
        "validation_failed",
    ),
    (  # an event this large would be refused by Kafka and stop every pilot's relay
        "PUT",
        "/pilots/wigan",
        {**WIGAN, "categories": [f"category-{n:05d}-{'x' * 40}" for n in range(15_000)]},
        422,
        "validation_failed",
    ),
    (
        "PUT",
        "/pilots/wigan",
        {**WIGAN, "categories": [f"c{n}" for n in range(51)]},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {"family_id": "Bad Name", "team": "t-1", "worker": "w", "enrolled_on": "2026-01-01"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {"family_id": "ok", "team": "t-1", "worker": "w", "enrolled_on": "01/02/2026"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {"family_id": "ok", "team": "t-1", "worker": "w", "enrolled_on": 1767225600},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {"family_id": "ok", "team": "t-1", "worker": "w", "enrolled_on": "0001-01-01"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {"family_id": "ok", "team": "t-1", "worker": "w", "enrolled_on": "9435-01-01"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families",
        {
            "family_id": "ok",
            "team": "t-1",
            "worker": "w",
            "enrolled_on": "2026-01-01",
            "name": "Jane",
        },
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/allocations",
        {"amount_pence": -5},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/allocations",
        {"amount_pence": 0},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/allocations",
        {"amount_pence": True},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/allocations",
        {"amount_pence": 10**15},
        422,
        "validation_failed",
    ),
    ("POST", "/pilots/wigan/families/fam-1/allocations", {}, 422, "validation_failed"),
    ("POST", "/pilots/wigan/families/fam-1/allocations", [1, 2], 422, "validation_failed"),
    ("POST", "/pilots/wigan/families/nobody/allocations", {"amount_pence": 5}, 404, "not_found"),
    (
        "POST",
        "/pilots/wigan/families/fam-1/adjustments",
        {"delta_pence": 5},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/exit",
        {"reason": "", "exited_on": "2026-05-01"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/exit",
        {"reason": "x", "exited_on": "2020-05-01"},
        422,
        "invalid_date",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/outcomes",
        {"outcome": "won_lottery", "occurred_on": "2026-05-01"},
        422,
        "validation_failed",
    ),
    (
        "POST",
        "/pilots/wigan/families/fam-1/outcomes",
        {"outcome": "reunified", "occurred_on": "2026-05-01", "occurred_at": "yesterday"},
        422,
        "validation_failed",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_BODIES)
async def test_bad_input_is_a_problem_and_records_nothing(
    shared: tuple[Client, Settings],
    pilot: str,
    token: Callable[..., str],
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
) -> None:
    """Each bad body gets problem+json with a stable code, and no event is recorded."""
    client, settings = shared
    admin = await setup_wigan(client, token, pilot)
    before = await event_count(settings)
    response = await client.request(method, in_pilot(path, pilot), json=body, headers=auth(admin))
    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    if code == "validation_failed":
        assert problem["errors"]
    assert await event_count(settings) == before


async def test_protocol_errors_are_problems(
    shared: tuple[Client, Settings], pilot: str, token: Callable[..., str]
) -> None:
    """Malformed JSON, wrong media type, too large, no such path or method: all problem+json."""
    client, settings = shared
    admin = await setup_wigan(client, token, pilot)
    before = await event_count(settings)
    path = f"/pilots/{pilot}/families/fam-1/allocations"
    headers = auth(admin)
    cases = [
        (
            await client.post(
                path,
                data=b'{"amount_pence": ',
                headers={**headers, "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
        ),
        (
            await client.post(
                path,
                data=b'{"amount_pence": NaN}',
                headers={**headers, "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
        ),
        (
            await client.post(
                path,
                data=b"amount_pence=5",
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported_media_type",
        ),
        (
            await client.post(
                path,
                data=io.BytesIO(b'{"note": "' + b"x" * (1024 * 1024 + 10) + b'"}'),
                headers={**headers, "Content-Type": "application/json"},
            ),
            413,
            "payload_too_large",
        ),
        (await client.get(f"/pilots/{pilot}/nothing-here", headers=headers), 404, "not_found"),
        (await client.delete(f"/pilots/{pilot}", headers=headers), 405, "method_not_allowed"),
        (
            await client.post(
                path, json={"amount_pence": 5}, headers={**headers, "Idempotency-Key": "x" * 129}
            ),
            400,
            "bad_idempotency_key",
        ),
    ]
    for response, status, code in cases:
        assert response.status == status, (code, await response.text())
        assert response.content_type == "application/problem+json"
        assert (await response.json())["code"] == code
    assert await event_count(settings) == before


async def test_events_are_published_with_envelope_and_key(
    client: Client, token: Callable[..., str], settings: Settings
) -> None:
    """Events reach ledger.allocation once, keyed by pilot and family; retries publish nothing."""
    admin = await setup_wigan(client, token)
    headers = {**auth(admin), "Idempotency-Key": "alloc-1", "X-Correlation-Id": "corr-42"}
    first = await client.post(
        "/pilots/wigan/families/fam-1/allocations", json={"amount_pence": 2500}, headers=headers
    )
    again = await client.post(
        "/pilots/wigan/families/fam-1/allocations", json={"amount_pence": 2500}, headers=headers
    )
    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = await client.post(
        "/pilots/wigan/families/fam-1/allocations", json={"amount_pence": 2600}, headers=headers
    )
    assert reused.status == 409
    assert (await reused.json())["code"] == "idempotency_key_reused"
    records = await read_topic(settings, "ledger.allocation", expect=3)
    assert [r.value["type"] for r in records if r.key == "wigan:fam-1"] == [
        "family.enrolled",
        "family.budget_allocated",
    ]
    assert [r.value["type"] for r in records if r.key == "wigan"] == ["pilot.configured"]
    record = next(r for r in records if r.value["type"] == "family.budget_allocated")
    # A CloudEvent in the Kafka binding's structured mode: the ledger's attributes are
    # extensions with names the specification allows, and nothing is null.
    assert record.headers["content-type"] == "application/cloudevents+json"
    allocated = record.value
    assert allocated["data"]["amount_pence"] == 2500
    assert allocated["specversion"] == "1.0"
    assert allocated["datacontenttype"] == "application/json"
    assert allocated["correlationid"] == "corr-42"
    assert (allocated["actorsub"], allocated["actorrole"]) == ("user-1", "admin")
    assert allocated["source"] == "ledger/allocation"
    assert allocated["streamid"] == "family:wigan:fam-1"
    assert allocated["streamversion"] == 2
    assert allocated["schemaversion"] == 1
    assert allocated["ledgerformat"] == 2
    assert set(allocated) == {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "datacontenttype",
        "data",
        "schemaversion",
        "pilotid",
        "familyid",
        "streamid",
        "streamversion",
        "occurredat",
        "actorsub",
        "actorrole",
        "correlationid",
        "prevhash",
        "hash",
        "ledgerformat",
    }  # no causationid: none was given, and a CloudEvent attribute is never null
    assert all(re.fullmatch("[a-z0-9]{1,20}", name) for name in set(allocated) - {"data"})
    enrolled = next(r.value for r in records if r.value["type"] == "family.enrolled")
    assert allocated["prevhash"] == enrolled["hash"]


async def test_occurred_at_is_kept_apart_from_recorded_time(
    client: Client, token: Callable[..., str], settings: Settings
) -> None:
    """A command's business time is recorded as given (in UTC) within the pilot's 31 days
    back; further back, or in the future, it is refused; the ledger's own time is now."""
    admin = await setup_wigan(client, token)
    west = timezone(timedelta(hours=1))
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).astimezone(west).replace(microsecond=0)
    response = await client.post(
        "/pilots/wigan/families/fam-1/outcomes",
        json={
            "outcome": "reunified",
            "occurred_on": "2026-06-01",
            "occurred_at": three_days_ago.isoformat(),
        },
        headers=auth(admin),
    )
    assert response.status == 201
    event_id = (await response.json())["event_id"]
    async with connect_service_db(settings, "allocation") as conn:
        envelope = json.loads(
            await conn.fetchval(
                "SELECT envelope FROM events WHERE event_id = $1", uuid.UUID(event_id)
            )
        )
    assert envelope["occurredat"] == three_days_ago.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    assert datetime.fromisoformat(envelope["time"]) > datetime.now(UTC) - timedelta(minutes=1)
    for moment, code in [
        ("2026-01-01T09:30:00+01:00", "occurred_at_too_old"),
        ((datetime.now(UTC) + timedelta(hours=1)).isoformat(), "occurred_at_in_future"),
    ]:
        refused = await client.post(
            "/pilots/wigan/families/fam-1/outcomes",
            json={"outcome": "reunified", "occurred_on": "2026-06-01", "occurred_at": moment},
            headers=auth(admin),
        )
        assert refused.status == 422
        assert (await refused.json())["code"] == code


async def test_operational_endpoints(shared: tuple[Client, Settings]) -> None:
    """healthz, readyz, metrics and a generated OpenAPI 3.1 document."""
    client, _ = shared
    assert (await client.get("/healthz")).status == 200

    async def ready_now() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_for(ready_now)
    ready = await client.get("/readyz")
    assert (await ready.json())["checks"]["database"] is True
    metrics = await (await client.get("/metrics")).text()
    assert "ledger_http_request_duration_seconds" in metrics
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/pilots/{pilot_id}/families/{family_id}/allocations"]["post"]
    schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert schema["properties"]["amount_pence"]["type"] == "integer"
    assert "amount_pence" in schema["required"]


async def test_free_text_is_sealed_and_erasable(
    client: Client, token: Callable[..., str], settings: Settings
) -> None:
    """Notes never reach Kafka readable; erasure makes them unreadable, amounts and chains stay."""
    admin = await setup_wigan(client, token)
    path = "/pilots/wigan/families/fam-1"
    secret_text = "rent arrears for Jane at 12 Elm Street"
    response = await client.post(
        f"{path}/allocations", json={"amount_pence": 1200, "note": secret_text}, headers=auth(admin)
    )
    assert response.status == 201
    notes = await (await client.get(f"{path}/notes", headers=auth(admin))).json()
    assert "notes" in notes, notes
    assert [n["text"] for n in notes["notes"]] == [secret_text]
    records = await read_topic(settings, "ledger.allocation", expect=3)
    allocated = next(r for r in records if r.value["type"] == "family.budget_allocated")
    assert allocated.value["data"]["note"].startswith("sealed:v1:")
    assert all("Jane" not in json.dumps(r.value) for r in records)
    erased = await client.post(
        f"{path}/erasure",
        json={"basis": "subject_request", "erased_on": "2026-11-01"},
        headers=auth(admin),
    )
    assert erased.status == 200
    assert (await erased.json())["keys_erased"] == 1
    notes = await (await client.get(f"{path}/notes", headers=auth(admin))).json()
    assert [n["text"] for n in notes["notes"]] == ["[erased]"]
    family = await (await client.get(path, headers=auth(admin))).json()
    assert family["periods"][0]["allocated_pence"] == 1200
    async with connect_service_db(settings, "allocation") as conn:
        rows = await conn.fetch(
            "SELECT envelope FROM events WHERE stream_id = $1 ORDER BY stream_version",
            "family:wigan:fam-1",
        )
    envelopes = [Envelope.model_validate(json.loads(row["envelope"])) for row in rows]
    assert [e.type for e in envelopes][-1] == "family.personal_data_erased"
    assert all(e.hash == e.computed_hash() for e in envelopes)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(envelopes))
    auditor = token("auditor", "wigan")
    assert (await client.get(f"{path}/notes", headers=auth(auditor))).status == 403


async def test_a_shorter_period_applies_from_the_next_period(
    client: Client, token: Callable[..., str]
) -> None:
    """A running pilot changed from 12 months to 1: the family's current period keeps its
    twelve months (no second period opens inside it at the cap); the next is one month."""
    admin = await setup_wigan(client, token)
    family = "/pilots/wigan/families/fam-1"
    first = await client.post(
        f"{family}/allocations", json={"amount_pence": 400_000}, headers=auth(admin)
    )
    assert first.status == 201
    period = await first.json()
    assert (period["period_start"], period["period_end"]) == ("2026-04-01", "2027-03-31")
    changed = await client.put(
        "/pilots/wigan", json={**WIGAN, "period_months": 1}, headers=auth(admin)
    )
    assert changed.status == 200
    again = await client.post(
        f"{family}/allocations", json={"amount_pence": 100}, headers=auth(admin)
    )
    assert again.status == 422
    assert (await again.json())["code"] == "exceeds_family_cap"
    following = await client.post(
        f"{family}/allocations",
        json={"amount_pence": 100, "period_start": "2027-04-01", "period_end": "2027-04-30"},
        headers=auth(admin),
    )
    assert following.status == 201, await following.text()
    state = await (await client.get(family, headers=auth(admin))).json()
    assert [(p["period_start"], p["period_end"]) for p in state["periods"]] == [
        ("2026-04-01", "2027-03-31"),
        ("2027-04-01", "2027-04-30"),
    ]


async def test_a_case_system_syncing_many_families_at_once_enrols_every_one(
    client: Client, token: Callable[..., str], settings: Settings
) -> None:
    """400 enrolments into a randomised pilot from 16 workers at once: all 400 answer 201 (before,
    every enrolment appended to the one pilot stream and many gave up with 409), and each
    stratum's sequence is whole and balanced block by block."""
    admin = auth(token("admin", "darlington"))
    await client.put("/pilots/darlington", json=DARLINGTON, headers=admin)
    families = [(f"s-{n:03d}", ("0-4", "5-9")[n % 2]) for n in range(400)]
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in families:
        queue.put_nowait(item)
    statuses: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            family, stratum = queue.get_nowait()
            response = await client.post(
                "/pilots/darlington/families",
                json={
                    "family_id": family,
                    "team": "t-1",
                    "worker": "w-1",
                    "enrolled_on": "2026-01-10",
                    "stratum": stratum,
                },
                headers=admin,
            )
            statuses.append(response.status)

    await asyncio.gather(*(worker() for _ in range(16)))
    assert statuses == [201] * 400
    async with connect_service_db(settings, "allocation") as conn:
        rows = await conn.fetch(
            "SELECT envelope FROM events WHERE type = 'pilot.family_randomised'"
        )
    randomised = [json.loads(row["envelope"])["data"] for row in rows]
    for stratum in ("0-4", "5-9"):
        mine = sorted(
            (r for r in randomised if r["stratum"] == stratum), key=lambda r: r["sequence"]
        )
        assert [r["sequence"] for r in mine] == list(range(200))
        # Blocks of 2, 4 or 6 each hold the ratio: never more than 3 off it, at any point.
        treated = 0
        for index, row in enumerate(mine, start=1):
            treated += row["arm"] == "treatment"
            assert abs(2 * treated - index) <= 6
