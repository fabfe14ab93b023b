"""No overspend under concurrency: 200 requests at once against budgets for about half."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest

from shared.core.settings import Settings
from tests.e2e.system import System, running_system
from tests.support import connect_service_db

FAMILIES = 10
REQUESTS = 200
BUDGET = 100_000


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure(approval_tiers=[{"up_to_pence": 15_000, "approver": "auto"}])
        yield system


async def test_concurrent_requests_never_overspend(system: System, settings: Settings) -> None:
    """Every request is decided; no family's approvals exceed its budget; no rejection was wrong."""
    rng = random.Random(200)
    versions = {}
    for number in range(FAMILIES):
        versions[f"fam-{number}"] = await system.enrol(f"fam-{number}", allocate=BUDGET)
    # About twice each budget is asked for, some of it above the auto tier.
    asks = [(f"fam-{rng.randrange(FAMILIES)}", rng.randint(1_000, 19_000)) for _ in range(REQUESTS)]
    gate = asyncio.Semaphore(40)

    async def ask(family: str, amount: int) -> str:
        async with gate:
            accepted = await system.request(family, amount, version=versions[family])
            return str(accepted["request_id"])

    request_ids = await asyncio.gather(*(ask(family, amount) for family, amount in asks))
    first = await asyncio.gather(
        *(
            system.settled(r, "approved", "rejected", "awaiting_approval", timeout=60)
            for r in request_ids
        )
    )
    referred = [view["request_id"] for view in first if view["status"] == "awaiting_approval"]
    assert referred, "some requests should need a manager"

    async def manage(request_id: str) -> None:
        async with gate:
            path = f"/pilots/wigan/spend-requests/{request_id}"
            response = await system.approval.post(
                f"{path}/approve", json={}, headers=system.manager()
            )
            if response.status == 422:
                assert (await response.json())["code"] == "insufficient_funds"
                response = await system.approval.post(
                    f"{path}/reject", json={"reason": "no funds left"}, headers=system.manager()
                )
            assert response.status == 200, await response.text()

    await asyncio.gather(*(manage(request_id) for request_id in referred))
    final = await asyncio.gather(
        *(system.settled(r, "approved", "rejected", timeout=60) for r in request_ids)
    )
    assert {view["status"] for view in final} <= {"approved", "rejected"}
    approved: dict[str, int] = defaultdict(int)
    for view in final:
        approved[view["family_id"]] += view["approved_pence"]
    assert all(total <= BUDGET for total in approved.values())
    assert sum(view["status"] == "rejected" for view in final) > 0

    # Replay each family's decisions in the order they committed: every automatic rejection
    # was right at the time, and the available balance it recorded was the true one.
    async with connect_service_db(settings, "approval") as conn:
        rows = await conn.fetch(
            "SELECT family_id, envelope FROM events WHERE type IN ('decision.approved', "
            "'decision.rejected') ORDER BY position"
        )
        balances = await conn.fetch(
            "SELECT family_id, allocated_pence, held_pence, spent_pence FROM balances"
        )
    held: dict[str, int] = defaultdict(int)
    checked = 0
    for row in rows:
        data = json.loads(row["envelope"])["data"]
        family = row["family_id"]
        available = BUDGET - held[family]
        if data.get("reason_code") == "insufficient_funds":
            assert data["available_pence"] == available
            assert data["amount_pence"] > available
            checked += 1
        elif "approved_pence" in data:
            assert data["approved_pence"] <= available
            held[family] += data["approved_pence"]
    assert checked > 0, "some requests should have been refused for want of funds"
    for balance in balances:
        assert balance["allocated_pence"] - balance["held_pence"] - balance["spent_pence"] >= 0
        assert balance["held_pence"] == held[balance["family_id"]] == approved[balance["family_id"]]
