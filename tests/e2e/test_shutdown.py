"""SIGTERM under load: each service drains and exits 0 in time, and nothing is lost or doubled.

Clients keep posting spend requests (each with its own Idempotency-Key, retried with the
same key whenever a service is away) while every service in turn is sent SIGTERM and
started again. Afterwards every acknowledged request was decided once, Kafka holds each
event once, and the balances of approval, allocation and reporting agree with the sums of
what was acknowledged: nothing applied twice, nothing dropped.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from shared.settings import SERVICE_NAMES, Settings
from tests.e2e.processes import ServiceProcesses, service_processes
from tests.e2e.system import auth
from tests.support import connect_service_db, read_topic, reporting_caught_up, wait_for

FAMILIES = [f"fam-{n}" for n in range(6)]
CLIENTS = 4
GRACE_LIMIT_SECONDS = 10


async def set_up_pilot(services: ServiceProcesses, http: aiohttp.ClientSession, admin: str) -> None:
    headers = auth(admin)
    url = services.url("allocation")
    async with http.put(
        f"{url}/pilots/wigan",
        json={
            "name": "Wigan",
            "period_months": 12,
            "family_cap_pence": 4_000_000,
            "approval_tiers": [{"up_to_pence": 100_000, "approver": "auto"}],
            "categories": ["practical"],
        },
        headers=headers,
    ) as response:
        assert response.status == 201, await response.text()
    for family in FAMILIES:
        async with http.post(
            f"{url}/pilots/wigan/families",
            json={
                "family_id": family,
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": "2026-01-05",
            },
            headers=headers,
        ) as response:
            assert response.status == 201, await response.text()
        async with http.post(
            f"{url}/pilots/wigan/families/{family}/allocations",
            json={"amount_pence": 4_000_000},
            headers=headers,
        ) as response:
            assert response.status == 201, await response.text()


async def post_until_acknowledged(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """A case system's retry loop: the same Idempotency-Key until the ledger says 202."""
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    while True:
        try:
            async with http.post(url, json=body, headers=headers) as response:
                if response.status == 202:
                    return dict(await response.json())
                assert response.status >= 500, await response.text()  # away, not refused
        except aiohttp.ClientError:
            pass  # the service is stopping or starting
        await asyncio.sleep(0.1)


async def test_sigterm_under_load_loses_nothing_and_repeats_nothing(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    acknowledged: dict[str, tuple[str, int]] = {}  # request id -> family, amount
    async with (
        service_processes(settings, tmp_path) as services,
        aiohttp.ClientSession() as http,
    ):
        await set_up_pilot(services, http, token("admin", "wigan"))
        worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
        stop = asyncio.Event()

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                family, amount = rng.choice(FAMILIES), rng.randint(100, 999)
                accepted = await post_until_acknowledged(
                    http,
                    f"{services.url('spending')}/pilots/wigan/spend-requests",
                    {
                        "family_id": family,
                        "amount_pence": amount,
                        "category": "practical",
                        "purpose": "a bus pass",
                        "requested_by": "sw-1",
                        "family_involved": True,
                    },
                    worker,
                )
                acknowledged[accepted["request_id"]] = (family, amount)

        clients = [asyncio.create_task(client(seed)) for seed in range(CLIENTS)]
        try:
            for name in SERVICE_NAMES:
                await asyncio.sleep(1.0)  # requests are flowing through every service
                code, seconds = await services.terminate(name)
                assert code == 0, name
                assert seconds < GRACE_LIMIT_SECONDS, (name, seconds)
                await services.start(name)
            await asyncio.sleep(1.0)  # the restarted services carry on
        finally:
            stop.set()
            await asyncio.gather(*clients)

        for name in SERVICE_NAMES:
            assert any(line["event"] == "service_stopped" for line in services.log_lines(name))
        assert len(acknowledged) > 50
        await wait_for(lambda: decided(settings, set(acknowledged)), timeout=60)
        await wait_for(lambda: reporting_caught_up(settings), timeout=60)

    async with connect_service_db(settings, "spending") as conn:
        requested = Counter(
            row["id"]
            for row in await conn.fetch(
                "SELECT envelope->'data'->>'request_id' AS id FROM events "
                "WHERE envelope->>'type' = 'spend_request.requested'"
            )
        )
    assert requested == Counter(set(acknowledged))  # each acknowledged request, once
    on_kafka = await read_topic(settings, "ledger.spending", expect=len(acknowledged))
    assert (
        Counter(
            r.value["data"]["request_id"]
            for r in on_kafka
            if r.value["type"] == "spend_request.requested"
        )
        == requested
    )

    held: dict[str, int] = defaultdict(int)
    for family, amount in acknowledged.values():
        held[family] += amount
    for service in ("approval", "allocation", "reporting"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch("SELECT family_id, held_pence FROM balances")
        assert {row["family_id"]: row["held_pence"] for row in rows} == held, service


async def decided(settings: Settings, requests: set[str]) -> bool:
    """Approval has approved every request, each exactly once."""
    async with connect_service_db(settings, "approval") as conn:
        rows = await conn.fetch(
            "SELECT envelope->'data'->>'request_id' AS id FROM events "
            "WHERE envelope->>'type' = 'decision.approved'"
        )
    approved = Counter(row["id"] for row in rows)
    assert all(count == 1 for count in approved.values())
    return set(approved) == requests
