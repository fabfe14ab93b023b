"""A service's database restored to a moment, then rolled forward from its own topic
(``ledger recover``): nothing it published is lost, and it carries on from there.

The moment is a dump of the three publishing services' databases taken while the ledger
runs (docs/operations.md restores one from a cluster restored to a moment; ``make faults``
does that under load). After it: spend requests decided at once, one a manager approves,
one left for a manager, a purchase, a cut and a top-up, each published. The three are
stopped, their databases replaced by the dumps, and rolled forward. What the events put
back write besides the store must be there again: the request a purchase is against (a
refund finds it), the team a request is for (its view), an adjustment's row (the cut,
settled again by approval's decision on its topic), approval's request rows and balances
as they were; and approval, meeting the requests again on spending's topic, decides none
of them a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from shared.core.settings import Settings
from tests.conftest import Infrastructure
from tests.e2e.processes import ServiceProcesses, service_processes
from tests.e2e.system import auth
from tests.e2e.workload import post_until_acknowledged, set_up_pilot
from tests.support import connect_service_db, run_ledger, wait_for

FAMILIES = ["fam-1", "fam-2"]
RESTORED = ("allocation", "spending", "approval")


async def _spend(
    http: aiohttp.ClientSession,
    services: ServiceProcesses,
    worker: dict[str, str],
    family: str,
    amount_pence: int = 1_250,
) -> str:
    accepted = await post_until_acknowledged(
        http,
        f"{services.url('spending')}/pilots/wigan/spend-requests",
        {
            "family_id": family,
            "amount_pence": amount_pence,
            "category": "practical",
            "purpose": "school shoes",
            "requested_by": "sw-1",
            "family_involved": True,
        },
        worker,
    )
    return str(accepted["request_id"])


async def _send(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def _async_eq(value: Awaitable[object], expected: object) -> bool:
    return bool(await value == expected)


async def _published(settings: Settings) -> bool:
    """Every event of the restored services' stores is on its topic (outboxes empty)."""
    for service in RESTORED:
        async with connect_service_db(settings, service) as conn:
            if await conn.fetchval("SELECT count(*) FROM outbox"):
                return False
    return True


async def _approvals(settings: Settings) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Approval's request rows and balances (but for when it received each request)."""
    async with connect_service_db(settings, "approval") as conn:
        requests = await conn.fetch(
            "SELECT request_id, status, approved_pence, purchased_pence, decided_at "
            "FROM requests ORDER BY request_id"
        )
        held = await conn.fetch("SELECT * FROM balances ORDER BY family_id, period_start")
    return [tuple(row) for row in requests], [tuple(row) for row in held]


async def _events(settings: Settings, service: str) -> list[tuple[str, int, str]]:
    async with connect_service_db(settings, service) as conn:
        rows = await conn.fetch(
            "SELECT stream_id, stream_version, envelope->>'hash' AS hash FROM events "
            "ORDER BY stream_id, stream_version"
        )
    return [(row["stream_id"], row["stream_version"], row["hash"]) for row in rows]


async def test_stores_restored_to_a_moment_and_rolled_forward_lose_nothing_published(
    settings: Settings, infra: Infrastructure, token: Callable[..., str], tmp_path: Path
) -> None:
    async with (
        service_processes(settings, tmp_path) as services,
        aiohttp.ClientSession() as http,
    ):
        admin_token = token("admin", "wigan")
        admin = auth(admin_token)
        worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
        await set_up_pilot(services, http, admin_token, FAMILIES)
        await _spend(http, services, worker, "fam-1")
        await wait_for(lambda: _published(settings), timeout=30)
        for service in RESTORED:  # the moment restored to
            database = settings.database_of(service)
            await asyncio.to_thread(infra.postgres.dump, database, tmp_path / f"{service}.dump")

        # After the moment, each published.
        spending, allocation = services.url("spending"), services.url("allocation")
        later = [await _spend(http, services, worker, family) for family in FAMILIES]
        status, purchase = await _send(
            http,
            "POST",
            f"{spending}/pilots/wigan/spend-requests/{later[0]}/purchases",
            {"amount_pence": 1_000, "purchased_on": datetime.now(UTC).date().isoformat(),
             "method": "card"},
            worker,
        )  # fmt: skip
        assert status == 201, purchase
        adjustments = f"{allocation}/pilots/wigan/families/fam-2/adjustments"
        status, cut = await _send(
            http, "POST", adjustments, {"delta_pence": -300, "reason": "moved"}, admin
        )
        assert status == 202, cut
        cut_url = f"{adjustments}/{cut['adjustment_id']}"

        async def cut_accepted() -> bool:
            _, found = await _send(http, "GET", cut_url, None, admin)
            return found.get("status") == "accepted"

        await wait_for(cut_accepted, timeout=30)
        status, top_up = await _send(  # room under the family's cap, after the cut
            http, "POST", adjustments, {"delta_pence": 300, "reason": "a bed"}, admin
        )
        assert status == 201, top_up
        approval = f"{services.url('approval')}/pilots/wigan"
        manager = auth(token("manager", "wigan", sub="mgr-1", team="t-1"))

        async def pending() -> set[str]:
            status, found = await _send(http, "GET", f"{approval}/approvals", None, manager)
            assert status == 200, found
            return {item["request_id"] for item in found["requests"]}

        approved = await _spend(http, services, worker, "fam-1", amount_pence=150_000)
        waiting = await _spend(http, services, worker, "fam-2", amount_pence=120_000)
        await wait_for(lambda: _async_eq(pending(), {approved, waiting}), timeout=30)
        status, decided = await _send(
            http, "POST", f"{approval}/spend-requests/{approved}/approve", {}, manager
        )
        assert status == 200, decided
        await wait_for(lambda: _published(settings), timeout=30)
        held = {service: await _events(settings, service) for service in RESTORED}
        rows = await _approvals(settings)

        code, _ = await run_ledger(settings, "recover", "spending")
        assert code == 2  # spending still runs: it must be stopped first
        assert await _events(settings, "spending") == held["spending"]

        # Lost: the databases go back to the moment, with the services stopped.
        for service in RESTORED:
            await services.terminate(service)
            database = settings.database_of(service)
            await asyncio.to_thread(infra.postgres.load, database, tmp_path / f"{service}.dump")
            assert len(await _events(settings, service)) < len(held[service])
            code, said = await run_ledger(settings, "recover", service)
            assert code == 0, said
            assert "events put back from its topic" in said
            if service == "spending":  # fam-2 first sealed text after the moment, twice
                assert "2 of them hold text sealed under keys made after the moment" in said
            assert await _events(settings, service) == held[service]  # the same, in order
            code, said = await run_ledger(settings, "recover", service)
            assert code == 0, said
            assert said.startswith(f"{service}: 0 events put back"), said
        code, _ = await run_ledger(settings, "recover", "reporting")
        assert code == 2  # it publishes nothing: it says so
        for service in RESTORED:
            await services.start(service)

        # Approval met every request after the moment again and decided none twice.
        await wait_for(lambda: _async_eq(_approvals(settings), rows), timeout=60)
        assert await _events(settings, "approval") == held["approval"]
        assert await pending() == {waiting}

        # What the events put back wrote besides the stores is there again.
        status, refund = await _send(
            http,
            "POST",
            f"{spending}/pilots/wigan/purchases/{purchase['purchase_id']}/refunds",
            {"amount_pence": 200, "reason": "one shoe returned"},
            auth(token("finance", "wigan", sub="fin-1")),
        )
        assert status == 201, refund
        for request_id in later:
            status, view = await _send(
                http, "GET", f"{spending}/pilots/wigan/spend-requests/{request_id}", None, worker
            )
            assert status == 200, view

        await wait_for(cut_accepted, timeout=30)  # settled again from approval's topic
        # The streams carry on where the topic left them, and the ledger verifies.
        await _spend(http, services, worker, "fam-2")
        await wait_for(lambda: _published(settings), timeout=30)
        code, said = await run_ledger(settings, "audit", "verify")
        assert code == 0, said
