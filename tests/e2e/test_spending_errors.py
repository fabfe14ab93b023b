"""Spending and approval refuse bad input and wrong callers with problem+json, recording nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.spending.handlers import UNKNOWN_FAMILY_WAIT_SECONDS
from shared.core.settings import Settings
from tests.e2e.system import System, auth, running_system
from tests.support import connect_service_db


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure()
        yield system


async def events(settings: Settings, service: str) -> int:
    async with connect_service_db(settings, service) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


GOOD: dict[str, Any] = {
    "family_id": "fam-1",
    "amount_pence": 1_000,
    "category": "practical",
    "purpose": "bus fares",
    "requested_by": "sw-1",
    "family_involved": True,
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"amount_pence": 10.5}, "validation_failed"),
        ({"amount_pence": "1000"}, "validation_failed"),
        ({"amount_pence": 0}, "validation_failed"),
        ({"amount_pence": -1}, "validation_failed"),
        ({"family_involved": "yes"}, "validation_failed"),
        ({"purpose": ""}, "validation_failed"),
        ({"needed_by": "next week"}, "validation_failed"),
        ({"family_id": "Fam 1"}, "validation_failed"),
        ({"allocation_version": 0}, "validation_failed"),
        ({"colour": "red"}, "validation_failed"),
        ({"category": "holidays"}, "unknown_category"),
    ],
)
async def test_bad_spend_requests_record_nothing(
    system: System, settings: Settings, change: dict[str, Any], code: str
) -> None:
    """Each bad request body gets a problem with a stable code and no event."""
    version = await system.enrol("fam-1", allocate=10_000)
    before = await events(settings, "spending")
    body = {**GOOD, "allocation_version": version, **change}
    response = await system.spending.post(
        "/pilots/wigan/spend-requests", json=body, headers=system.worker()
    )
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert (response.status, problem["code"]) == (422, code)
    assert await events(settings, "spending") == before


async def test_spending_and_approval_check_who_is_calling(
    system: System, settings: Settings
) -> None:
    """Wrong role, wrong pilot, other requester: 403; another team's family or request answers
    as a missing one; auditors read but never write."""
    version = await system.enrol("fam-1", allocate=400_000)
    body = {**GOOD, "allocation_version": version}
    path = "/pilots/wigan/spend-requests"
    checks = [
        (
            await system.spending.post(path, json=body, headers=system.finance()),
            403,
            "forbidden_role",
        ),
        (
            await system.spending.post(
                path, json=body, headers=auth(system.token("auditor", "wigan"))
            ),
            403,
            "forbidden_role",
        ),
        (
            await system.spending.post(
                path,
                json=body,
                headers=auth(system.token("social_worker", "darlington", sub="sw-1", team="t-1")),
            ),
            403,
            "forbidden_pilot",
        ),
        (
            await system.spending.post(path, json=body, headers=system.worker("sw-9", "t-9")),
            403,
            "forbidden_requester",
        ),
        (
            await system.spending.post(
                path, json={**body, "requested_by": "sw-9"}, headers=system.worker("sw-9", "t-9")
            ),
            503,  # another team's family is, to this worker, no family at all: one it says
            "not_yet_consistent",  # it has seen a version of, which spending has not seen yet
        ),
        (await system.spending.post(path, json=body), 401, "missing_token"),
    ]
    for response, status, code in checks:
        assert (response.status, (await response.json())["code"]) == (status, code)
    assert await events(settings, "spending") == 0
    request_id = (await system.request("fam-1", 100_000, version=version))["request_id"]
    await system.settled(request_id, "awaiting_approval")
    decide = f"/pilots/wigan/spend-requests/{request_id}/approve"
    refused = [
        (
            await system.approval.post(
                decide, json={}, headers=auth(system.token("auditor", "wigan"))
            ),
            403,
            "forbidden_role",
        ),
        (
            await system.approval.post(decide, json={}, headers=system.worker()),
            403,
            "forbidden_role",
        ),
        (
            await system.approval.post(decide, json={}, headers=system.manager("m-9", "t-9")),
            404,
            "not_found",  # another team's request is, to this manager, not there
        ),
        (
            await system.approval.post(decide, json={"note": 5}, headers=system.manager()),
            422,
            "validation_failed",
        ),
        (
            await system.approval.post(
                f"/pilots/wigan/spend-requests/{request_id}/reject",
                json={},
                headers=system.manager(),
            ),
            422,
            "validation_failed",
        ),
        (
            await system.approval.post(
                "/pilots/wigan/spend-requests/not-a-uuid/approve", json={}, headers=system.manager()
            ),
            404,
            "not_found",
        ),
        (
            await system.approval.get(
                "/pilots/wigan/approvals?status=everything", headers=system.manager()
            ),
            422,
            "validation_failed",
        ),
    ]
    for response, status, code in refused:
        assert response.content_type == "application/problem+json"
        assert (response.status, (await response.json())["code"]) == (status, code)
    auditor_view = await system.approval.get(
        "/pilots/wigan/approvals", headers=auth(system.token("auditor", "wigan"))
    )
    assert [r["request_id"] for r in (await auditor_view.json())["requests"]] == [request_id]
    assert await events(settings, "approval") == 1  # the referral, nothing more
    other = await system.spending.get(
        f"/pilots/wigan/spend-requests/{request_id}", headers=system.worker("sw-9", "t-9")
    )
    assert other.status == 404  # another team's request is, to this worker, not there


async def test_commands_on_unknown_requests_and_purchases_are_not_found(system: System) -> None:
    """A purchase, close or refund on nothing is a 404 problem."""
    missing = "00000000-0000-0000-0000-000000000000"
    for path, body in [
        (
            f"/pilots/wigan/spend-requests/{missing}/purchases",
            {"amount_pence": 1, "purchased_on": "2026-03-01", "method": "card"},
        ),
        (f"/pilots/wigan/spend-requests/{missing}/close", {}),
        (f"/pilots/wigan/purchases/{missing}/refunds", {"amount_pence": 1, "reason": "r"}),
    ]:
        response = await system.spending.post(path, json=body, headers=system.finance())
        assert (response.status, (await response.json())["code"]) == (404, "not_found")
    wrong_method = await system.spending.post(
        f"/pilots/wigan/spend-requests/{missing}/purchases",
        json={"amount_pence": 1, "purchased_on": "2026-03-01", "method": "cheque"},
        headers=system.finance(),
    )
    # The body is checked before anything is looked up.
    assert (wrong_method.status, (await wrong_method.json())["code"]) == (422, "validation_failed")


async def test_an_allocation_version_no_stream_could_reach_is_a_503_not_a_500(
    system: System,
) -> None:
    """A version past PostgreSQL's integer range (schemathesis sent 2**49 - 1) never arrives:
    503 not_yet_consistent, as for any version not yet seen (it answered 500 when the check
    compared it in SQL)."""
    await system.enrol("fam-1", allocate=1_000)
    response = await system.spending.post(
        "/pilots/wigan/spend-requests",
        json={
            "family_id": "fam-1",
            "amount_pence": 100,
            "category": "practical",
            "purpose": "p",
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": 562_949_953_421_311,
        },
        headers=system.worker(),
    )
    assert response.status == 503, await response.text()
    assert (await response.json())["code"] == "not_yet_consistent"


async def test_another_teams_family_answers_as_a_missing_one_in_status_and_time(
    system: System,
) -> None:
    """A worker naming another team's family is answered as for a family that does not exist:
    the same status and code, after the same wait for spending's view of a family it has not
    seen. The other team's family used to be refused at once, and the missing one after a
    second: the time told a worker which families exist."""
    await system.enrol("fam-1", allocate=100_000)
    outsider = system.worker("sw-9", "t-9")
    answers = []
    for family in ("fam-1", "fam-nobody"):
        body = {**GOOD, "family_id": family, "requested_by": "sw-9"}
        started = time.monotonic()
        response = await system.spending.post(
            "/pilots/wigan/spend-requests", json=body, headers=outsider
        )
        waited = time.monotonic() - started
        problem = await response.json()
        answers.append((response.status, problem["code"], problem["detail"]))
        assert waited >= UNKNOWN_FAMILY_WAIT_SECONDS * 0.9, (family, waited)
    assert answers[0] == answers[1] == (422, "unknown_family", "no such family in this pilot")
