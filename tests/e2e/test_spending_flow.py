"""Spending and approval end to end through HTTP, on the real services, PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.core.settings import Settings
from shared.web.service import CONSUMERS
from tests.e2e.system import System, auth, running_system
from tests.support import connect_service_db, wait_for


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure()
        yield system


async def test_small_request_is_approved_then_bought_and_closed(system: System) -> None:
    """Within the auto tier and affordable: approved at once; purchase; close releases the rest."""
    version = await system.enrol("fam-1", allocate=100_000)
    accepted = await system.request("fam-1", 2_000, version=version)
    assert accepted["status"] == "submitted"
    request_id = accepted["request_id"]
    approved = await system.settled(request_id, "approved", "rejected")
    assert approved["status"] == "approved"
    assert approved["approved_pence"] == 2_000
    path = f"/pilots/wigan/spend-requests/{request_id}"
    purchase = await system.spending.post(
        f"{path}/purchases",
        json={
            "amount_pence": 1_500,
            "purchased_on": "2026-03-01",
            "method": "card",
            "vendor": "supermarket",
        },
        headers=system.worker(),
    )
    assert purchase.status == 201, await purchase.text()
    assert (await system.status(request_id))["status"] == "partially_spent"
    closed = await system.spending.post(f"{path}/close", json={}, headers=system.worker())
    assert closed.status == 200
    body = await closed.json()
    assert body["status"] == "closed"
    assert body["spent_pence"] == 1_500
    assert body["released_pence"] == 500


async def test_large_request_goes_to_a_manager(system: System) -> None:
    """Above the auto tier: awaiting a manager of the team; approved; purchases; a refund."""
    version = await system.enrol("fam-2", allocate=400_000)
    request_id = (await system.request("fam-2", 150_000, version=version))["request_id"]
    await system.settled(request_id, "awaiting_approval")
    queue = await (
        await system.approval.get(
            "/pilots/wigan/approvals?status=pending", headers=system.manager()
        )
    ).json()
    assert [item["request_id"] for item in queue["requests"]] == [request_id]
    assert queue["requests"][0]["available_pence"] == 400_000
    other_team = await (
        await system.approval.get("/pilots/wigan/approvals", headers=system.manager("m-9", "t-9"))
    ).json()
    assert other_team["requests"] == []
    approve = await system.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/approve",
        json={"note": "agreed in supervision"},
        headers=system.manager(),
    )
    assert approve.status == 200, await approve.text()
    assert (await approve.json())["available_pence"] == 250_000
    path = f"/pilots/wigan/spend-requests/{request_id}"
    first = await system.spending.post(
        f"{path}/purchases",
        json={"amount_pence": 100_000, "purchased_on": "2026-03-02", "method": "invoice"},
        headers=system.finance(),
    )
    assert first.status == 201, await first.text()
    second = await system.spending.post(
        f"{path}/purchases",
        json={"amount_pence": 50_000, "purchased_on": "2026-03-03", "method": "transfer"},
        headers=system.finance(),
    )
    assert second.status == 201
    assert (await system.status(request_id))["status"] == "spent"
    purchase_id = (await first.json())["purchase_id"]
    refund = await system.spending.post(
        f"/pilots/wigan/purchases/{purchase_id}/refunds",
        json={"amount_pence": 20_000, "reason": "returned"},
        headers=system.finance(),
    )
    assert refund.status == 201, await refund.text()
    too_much = await system.spending.post(
        f"/pilots/wigan/purchases/{purchase_id}/refunds",
        json={"amount_pence": 80_001, "reason": "x"},
        headers=system.finance(),
    )
    assert (await too_much.json())["code"] == "exceeds_purchase"
    assert (await system.status(request_id))["spent_pence"] == 130_000


async def test_self_approval_is_refused(system: System) -> None:
    """A manager cannot approve a request made in their name."""
    version = await system.enrol("fam-3", allocate=400_000)
    body = {
        "family_id": "fam-3",
        "amount_pence": 90_000,
        "category": "therapeutic",
        "purpose": "therapy",
        "requested_by": "m-1",
        "family_involved": False,
        "allocation_version": version,
    }
    case_system = auth(system.token("case_system", "wigan", sub="cms"))
    response = await system.spending.post(
        "/pilots/wigan/spend-requests", json=body, headers=case_system
    )
    assert response.status == 202, await response.text()
    request_id = (await response.json())["request_id"]
    await system.settled(request_id, "awaiting_approval")
    refused = await system.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/approve", json={}, headers=system.manager("m-1")
    )
    assert refused.status == 403
    assert (await refused.json())["code"] == "self_approval"
    other = await system.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/approve", json={}, headers=system.manager("m-2")
    )
    assert other.status == 200


async def test_purchases_may_not_exceed_the_approval(system: System) -> None:
    """Total purchases above the approved amount are refused with exceeds_approved."""
    version = await system.enrol("fam-4", allocate=100_000)
    request_id = (await system.request("fam-4", 3_000, version=version))["request_id"]
    await system.settled(request_id, "approved")
    path = f"/pilots/wigan/spend-requests/{request_id}/purchases"
    ok = await system.spending.post(
        path,
        json={"amount_pence": 2_000, "purchased_on": "2026-03-01", "method": "cash"},
        headers=system.worker(),
    )
    assert ok.status == 201
    over = await system.spending.post(
        path,
        json={"amount_pence": 1_001, "purchased_on": "2026-03-01", "method": "cash"},
        headers=system.worker(),
    )
    assert over.status == 422
    assert (await over.json())["code"] == "exceeds_approved"


async def test_unaffordable_request_is_rejected(system: System) -> None:
    """More than is available: rejected with insufficient_funds, whatever the tier."""
    version = await system.enrol("fam-5", allocate=1_000)
    request_id = (await system.request("fam-5", 1_001, version=version))["request_id"]
    rejected = await system.settled(request_id, "rejected", "approved", "awaiting_approval")
    assert rejected["status"] == "rejected"


async def test_a_backdated_request_cannot_reopen_what_is_closed(
    system: System, settings: Settings
) -> None:
    """Eligibility is judged when the ledger records the request: a family that left is
    refused however the request is dated. occurred_at is business time, bounded (the pilot's
    31 days back, 5 minutes ahead) and kept in UTC whatever offset the caller wrote."""
    await system.enrol("left", allocate=10_000)
    exit_ = await system.allocation.post(
        "/pilots/wigan/families/left/exit",
        json={"reason": "moved", "exited_on": "2026-02-01"},
        headers=system.admin(),
    )
    version = (await exit_.json())["stream_version"]
    before = await _events(settings)
    backdated = await system.request(
        "left", 100, version=version, occurred_at="2026-01-20T10:00:00Z", expect=422
    )
    assert backdated["code"] == "family_exited"
    version = await system.enrol("here", allocate=10_000)
    for when, code in [
        ("1970-01-01T00:00:00Z", "validation_failed"),  # outside business time, 2000-2099
        ("2024-03-01T12:00:00Z", "occurred_at_too_old"),
        ((datetime.now(UTC) + timedelta(days=400)).isoformat(), "occurred_at_in_future"),
    ]:
        refused = await system.request("here", 100, version=version, occurred_at=when, expect=422)
        assert refused["code"] == code, refused
    assert await _events(settings) == before
    east = timezone(timedelta(hours=14))
    moment = (datetime.now(UTC) - timedelta(days=2)).astimezone(east).replace(microsecond=0)
    accepted = await system.request("here", 100, version=version, occurred_at=moment.isoformat())
    async with connect_service_db(settings, "spending") as conn:
        envelope = await conn.fetchval(
            "SELECT envelope FROM events WHERE stream_id LIKE $1", f"%{accepted['request_id']}"
        )
    recorded = json.loads(envelope)
    assert recorded["occurredat"] == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _events(settings: Settings) -> int:
    async with connect_service_db(settings, "spending") as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


async def test_refused_families_and_categories(system: System) -> None:
    """Unknown, exited and control-arm families and unknown categories: 422, nothing recorded."""
    await system.enrol("gone", allocate=10_000)
    exit_ = await system.allocation.post(
        "/pilots/wigan/families/gone/exit",
        json={"reason": "moved", "exited_on": "2026-02-01"},
        headers=system.admin(),
    )
    version = (await exit_.json())["stream_version"]
    exited = await system.request("gone", 100, version=version, expect=422)
    assert exited["code"] == "family_exited"
    unknown = await system.request("nobody", 100, expect=422)
    assert unknown["code"] == "unknown_family"
    version = await system.enrol("fam-6", allocate=10_000)
    category = await system.request("fam-6", 100, version=version, category="holidays", expect=422)
    assert category["code"] == "unknown_category"
    # Blocks: four families hold both arms, whatever the seed the ledger draws.
    await system.configure(
        allocation={"mode": "randomised", "treatment_ratio": 0.5, "method": "permuted_blocks"}
    )
    arms = {}
    for number in range(4):
        response = await system.allocation.post(
            "/pilots/wigan/families",
            json={
                "family_id": f"r-{number}",
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": "2026-01-05",
            },
            headers=system.admin(),
        )
        body = await response.json()
        arms[f"r-{number}"] = (body["arm"], body["stream_version"])
    control, (_, control_version) = next((f, v) for f, v in arms.items() if v[0] == "control")
    refused = await system.request(control, 100, version=control_version, expect=422)
    assert refused["code"] == "control_arm"


async def test_manager_rejection_and_withdrawal(system: System) -> None:
    """A manager may reject; a worker may withdraw before buying; the hold comes back."""
    version = await system.enrol("fam-7", allocate=400_000)
    first = (await system.request("fam-7", 100_000, version=version))["request_id"]
    second = (await system.request("fam-7", 100_000, version=version))["request_id"]
    await system.settled(first, "awaiting_approval")
    await system.settled(second, "awaiting_approval")
    reject = await system.approval.post(
        f"/pilots/wigan/spend-requests/{first}/reject",
        json={"reason": "try the school fund"},
        headers=system.manager(),
    )
    assert reject.status == 200
    assert (await system.settled(first, "rejected"))["approved_pence"] == 0
    approve = await system.approval.post(
        f"/pilots/wigan/spend-requests/{second}/approve", json={}, headers=system.manager()
    )
    assert (await approve.json())["available_pence"] == 300_000
    await system.settled(second, "approved")
    withdrawn = await system.spending.post(
        f"/pilots/wigan/spend-requests/{second}/withdraw",
        json={"reason": "no longer needed"},
        headers=system.worker(),
    )
    assert withdrawn.status == 200
    assert (await withdrawn.json())["released_pence"] == 100_000
    third = (await system.request("fam-7", 400_000, version=version))["request_id"]
    # Only affordable once the withdrawn hold is released.
    assert (await system.settled(third, "awaiting_approval", "rejected"))[
        "status"
    ] == "awaiting_approval"


async def test_request_waits_for_the_allocation_it_was_made_after(
    system: System, settings: Settings
) -> None:
    """Allocate, then request at once while approval has not read the allocation: approved later."""

    async def has_policy() -> bool:
        async with connect_service_db(settings, "approval") as conn:
            return bool(await conn.fetchval("SELECT count(*) FROM policy_view"))

    await wait_for(has_policy)  # so that only the allocation can be what the request waits for
    held_back = system.approval.app[CONSUMERS]["approval.allocation"]
    await held_back.stop()
    await system.enrol("fam-c")
    version = await system.allocate("fam-c", 10_000)
    request_id = (await system.request("fam-c", 5_000, version=version))["request_id"]

    async def waiting() -> bool:
        async with connect_service_db(settings, "approval") as conn:
            status = await conn.fetchval(
                "SELECT status FROM requests WHERE request_id = $1", uuid.UUID(request_id)
            )
        return bool(status == "waiting")

    await wait_for(waiting)
    await asyncio.sleep(0.5)
    assert (await system.status(request_id))["status"] == "submitted"
    await held_back.start()
    assert (await system.settled(request_id, "approved", "rejected"))["status"] == "approved"


async def test_an_allocation_version_spending_has_not_seen_is_a_documented_503(
    system: System, settings: Settings
) -> None:
    """A request made after an allocation version spending never sees answers 503
    not_yet_consistent with Retry-After, records nothing, and the OpenAPI document says so."""
    version = await system.enrol("fam-w", allocate=1_000)
    before = await _events(settings)
    response = await system.spending.post(
        "/pilots/wigan/spend-requests",
        json={
            "family_id": "fam-w",
            "amount_pence": 100,
            "category": "practical",
            "purpose": "a bus pass",
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": version + 50,
        },
        headers=system.worker(),
    )
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == "not_yet_consistent"
    assert int(response.headers["Retry-After"]) >= 1
    assert await _events(settings) == before
    document = await (await system.spending.get("/openapi.json")).json()
    unavailable = document["paths"]["/pilots/{pilot_id}/spend-requests"]["post"]["responses"]
    assert "Retry-After" in unavailable["503"]["headers"]


async def test_a_wait_that_cannot_succeed_is_not_waited_for(system: System) -> None:
    """While spending's views consumer is not reading, a request after an allocation it has
    not seen is answered 503 at once (the detail says why), not after the 5 s wait."""
    version = await system.enrol("fam-v", allocate=1_000)
    await system.request("fam-v", 100, version=version)  # spending has seen the family
    stopped = system.spending.app[CONSUMERS]["spending.views"]
    await stopped.stop()
    version = await system.allocate("fam-v", 1_000)
    body = {
        "family_id": "fam-v",
        "amount_pence": 100,
        "category": "practical",
        "purpose": "a bus pass",
        "requested_by": "sw-1",
        "family_involved": True,
        "allocation_version": version,
    }
    response = await system.spending.post(
        "/pilots/wigan/spend-requests", json=body, headers=system.worker()
    )
    assert response.status == 503
    problem = await response.json()
    assert problem["code"] == "not_yet_consistent"
    assert "not reading allocation's events now" in problem["detail"]
    await stopped.start()
    await system.request("fam-v", 100, version=version)  # reading again: it waits and succeeds


async def test_a_cut_is_decided_by_approval_against_what_is_held_and_spent(
    system: System, settings: Settings
) -> None:
    """A cut below what is held and spent is refused by approval; one it covers is
    accepted; the caller follows both as it follows a spend request; an exit records the
    balance as it stood."""
    version = await system.enrol("fam-8", allocate=400_000)
    request_id = (await system.request("fam-8", 300_000, version=version))["request_id"]
    await system.settled(request_id, "awaiting_approval")
    approved = await system.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/approve", json={}, headers=system.manager()
    )
    assert approved.status == 200
    path = "/pilots/wigan/families/fam-8/adjustments"

    async def cut(delta: int, outcome: str) -> dict[str, Any]:
        response = await system.allocation.post(
            path, json={"delta_pence": delta, "reason": "need was smaller"}, headers=system.admin()
        )
        assert response.status == 202, await response.text()
        pending = await response.json()
        assert (pending["status"], pending["period_allocated_pence"]) == ("pending", None)
        found: dict[str, Any] = {}

        async def decided() -> bool:
            answer = await system.allocation.get(
                f"{path}/{pending['adjustment_id']}", headers=system.admin()
            )
            assert answer.status == 200, await answer.text()
            found.update(await answer.json())
            return bool(found["status"] != "pending")

        await wait_for(decided)
        assert found["status"] == outcome, found
        return found

    refused = await cut(-100_001, "refused")
    assert refused["available_pence"] == 100_000
    await system.settled(request_id, "approved")
    purchase = await system.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/purchases",
        json={"amount_pence": 120_000, "purchased_on": "2026-04-01", "method": "invoice"},
        headers=system.finance(),
    )
    assert purchase.status == 201
    closed = await system.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/close", json={}, headers=system.finance()
    )
    assert closed.status == 200

    async def allocation_knows(held: int, spent: int) -> bool:
        async with connect_service_db(settings, "allocation") as conn:
            row = await conn.fetchrow(
                "SELECT held_pence, spent_pence FROM balances WHERE family_id = 'fam-8'"
            )
        return row is not None and (row["held_pence"], row["spent_pence"]) == (held, spent)

    # Approval judges a cut by what it has heard: once the hold's release is out (allocation
    # hears of it from approval), approval knows the close.
    await wait_for(lambda: allocation_knows(0, 120_000))
    accepted = await cut(-280_000, "accepted")
    assert accepted["available_pence"] == 0
    family = await system.allocation.get("/pilots/wigan/families/fam-8", headers=system.admin())
    assert [p["allocated_pence"] for p in (await family.json())["periods"]] == [120_000]
    exited = await system.allocation.post(
        "/pilots/wigan/families/fam-8/exit",
        json={"reason": "case closed", "exited_on": "2026-05-01"},
        headers=system.admin(),
    )
    body = await exited.json()
    assert (body["allocated_pence"], body["committed_pence"], body["spent_pence"]) == (
        120_000,
        0,
        120_000,
    )
    assert body["available_pence"] == 0


async def test_erasure_reaches_every_service(system: System, settings: Settings) -> None:
    """After an erasure, no service holds a key that opens the family's free text."""
    version = await system.enrol("fam-9", allocate=400_000)
    request_id = (await system.request("fam-9", 100_000, version=version))["request_id"]
    await system.settled(request_id, "awaiting_approval")
    rejected = await system.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/reject",
        json={"reason": "speak to the family first"},
        headers=system.manager(),
    )
    assert rejected.status == 200

    async def live_keys(service: str) -> int:
        async with connect_service_db(settings, service) as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM personal_keys WHERE subject = 'wigan:fam-9' "
                    "AND wrapped IS NOT NULL"
                )
            )

    assert await live_keys("spending") == 1
    assert await live_keys("approval") == 1
    erased = await system.allocation.post(
        "/pilots/wigan/families/fam-9/erasure",
        json={"basis": "subject_request", "erased_on": "2026-11-01"},
        headers=system.admin(),
    )
    assert erased.status == 200

    async def all_erased() -> bool:
        return sum([await live_keys(s) for s in ("allocation", "spending", "approval")]) == 0

    await wait_for(all_erased)
    view = await system.status(request_id)
    assert (view["status"], view["amount_pence"]) == ("rejected", 100_000)


async def test_a_refused_command_leaves_no_sealing_key_behind(
    system: System, settings: Settings
) -> None:
    """After a family's erasure, a withdrawal that is refused (the request has a purchase)
    must not leave a fresh key for the family: its reason was sealed in the transaction that
    the refusal rolled back (before, sealing committed on its own)."""
    version = await system.enrol("fam-k", allocate=10_000)
    request_id = (await system.request("fam-k", 1_000, version=version))["request_id"]
    await system.settled(request_id, "approved")
    purchase = await system.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/purchases",
        json={"amount_pence": 500, "purchased_on": "2026-11-01", "method": "card"},
        headers=system.worker(),
    )
    assert purchase.status == 201
    erased = await system.allocation.post(
        "/pilots/wigan/families/fam-k/erasure",
        json={"basis": "subject_request", "erased_on": "2026-11-30"},
        headers=system.admin(),
    )
    assert erased.status == 200, await erased.text()

    async def live_keys() -> int:
        async with connect_service_db(settings, "spending") as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM personal_keys WHERE subject = 'wigan:fam-k' "
                    "AND wrapped IS NOT NULL"
                )
            )

    await wait_for(lambda: _none(live_keys))
    refused = await system.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/withdraw",
        json={"reason": "no longer needed"},
        headers=system.worker(),
    )
    assert refused.status == 422
    assert (await refused.json())["code"] == "already_purchased"
    assert await live_keys() == 0


async def _none(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0
