"""SIGTERM under load: each service drains and exits 0 in time, and nothing is lost or doubled.

Clients keep posting spend requests (each with its own Idempotency-Key, retried with the
same key whenever a service is away) while every service in turn is sent SIGTERM and
started again. Afterwards every acknowledged request was decided once, Kafka holds each
event once, and the balances of approval, allocation and reporting agree with the sums of
what was acknowledged: nothing applied twice, nothing dropped.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from shared.core.settings import Settings
from tests.e2e.processes import service_processes
from tests.e2e.system import auth
from tests.e2e.workload import decided, held_by_family, requests_flowing, set_up_pilot
from tests.support import (
    SERVICE_NAMES,
    connect_service_db,
    read_topic,
    reporting_caught_up,
    wait_for,
)

FAMILIES = [f"fam-{n}" for n in range(6)]
CLIENTS = 4
GRACE_LIMIT_SECONDS = 10


@pytest.mark.faults
async def test_sigterm_under_load_loses_nothing_and_repeats_nothing(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    async with (
        service_processes(settings, tmp_path) as services,
        aiohttp.ClientSession() as http,
    ):
        await set_up_pilot(services, http, token("admin", "wigan"), FAMILIES)
        worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
        async with requests_flowing(http, services, worker, FAMILIES, CLIENTS) as acknowledged:
            for name in SERVICE_NAMES:
                await asyncio.sleep(1.0)  # requests are flowing through every service
                code, seconds = await services.terminate(name)
                assert code == 0, name
                assert seconds < GRACE_LIMIT_SECONDS, (name, seconds)
                await services.start(name)
            await asyncio.sleep(1.0)  # the restarted services carry on

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

    held = held_by_family(acknowledged)
    for service in ("approval", "allocation", "reporting"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch("SELECT family_id, held_pence FROM balances")
        assert {row["family_id"]: row["held_pence"] for row in rows} == held, service
