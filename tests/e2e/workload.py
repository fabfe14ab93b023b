"""A pilot whose families have budgets, and a case system posting to it as case systems do.

For tests that load the services running as processes (``tests.e2e.processes``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import aiohttp

from shared.core.settings import Settings
from tests.e2e.processes import ServiceProcesses
from tests.e2e.system import auth
from tests.support import connect_service_db

__all__ = [
    "decided",
    "held_by_family",
    "post_until_acknowledged",
    "requests_flowing",
    "set_up_pilot",
]


async def set_up_pilot(
    services: ServiceProcesses,
    http: aiohttp.ClientSession,
    admin: str,
    families: Sequence[str],
    enrolled_on: date = date(2026, 1, 5),
) -> None:
    """Wigan, deciding up to £1,000 on the worker's say, and each family enrolled in team
    t-1 with £40,000 for its current period: enough that no request in a test is refused
    for want of funds."""
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
    for family in families:
        async with http.post(
            f"{url}/pilots/wigan/families",
            json={
                "family_id": family,
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": enrolled_on.isoformat(),
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


@asynccontextmanager
async def requests_flowing(
    http: aiohttp.ClientSession,
    services: ServiceProcesses,
    worker: dict[str, str],
    families: Sequence[str],
    clients: int,
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Clients posting small spend requests for random families while the block runs.

    Yields what the ledger acknowledged, request id -> (family, amount), filled in as it
    goes; the clients stop, each after its request in hand, on the way out.
    """
    acknowledged: dict[str, tuple[str, int]] = {}
    stop = asyncio.Event()

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            family, amount = rng.choice(families), rng.randint(100, 999)
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

    tasks = [asyncio.create_task(client(seed)) for seed in range(clients)]
    try:
        yield acknowledged
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def held_by_family(acknowledged: dict[str, tuple[str, int]]) -> dict[str, int]:
    """What the acknowledged requests hold on each family's balance, once all are approved."""
    held: dict[str, int] = defaultdict(int)
    for family, amount in acknowledged.values():
        held[family] += amount
    return dict(held)


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
