"""P5: commands through the batch endpoint, as a case system syncing a year of history would
send them: enrolments, allocations and spend requests within the auto tier."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from tqdm import tqdm

from shared.core.db import dsn, open_pool
from shared.core.settings import Settings
from shared.web.auth import Role, mint_token
from shared.web.batches import MAX_LINES, NDJSON
from shared.web.registry import service

PILOT = "sync"
CONFIG = {
    "name": "Sync",
    "period_months": 12,
    "family_cap_pence": 10**9,
    "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
    "categories": ["practical"],
}


@asynccontextmanager
async def served(settings: Settings, name: str) -> AsyncIterator[str]:
    """A service in this process on a real port; its URL."""
    runner = web.AppRunner(service(name).create_app(settings), access_log=None)
    await runner.setup()
    port = settings.port_of(name, 0)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _token(secret: str, role: Role, team: str | None = None) -> dict[str, str]:
    token = mint_token(secret, sub="sync", role=role, pilot=PILOT, team=team, now=datetime.now(UTC))
    return {"Authorization": f"Bearer {token}"}


async def _send(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], lines: list[dict[str, Any]]
) -> list[int]:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    async with http.post(
        f"{url}/pilots/{PILOT}/batches", data=body, headers={**headers, "Content-Type": NDJSON}
    ) as response:
        assert response.status == 200, await response.text()
        return [json.loads(line)["status"] for line in (await response.text()).splitlines()]


async def _timed(
    what: str,
    send: Callable[[list[dict[str, Any]]], Any],
    lines: list[dict[str, Any]],
    expect: int,
) -> float:
    """Send ``lines`` in full batches, one after another; commands per second."""
    started = time.perf_counter()
    with tqdm(total=len(lines), desc=what, unit="cmd") as bar:
        for first in range(0, len(lines), MAX_LINES):
            chunk = lines[first : first + MAX_LINES]
            statuses = await send(chunk)
            assert set(statuses) == {expect}, {s: statuses.count(s) for s in set(statuses)}
            bar.update(len(chunk))
    return len(lines) / (time.perf_counter() - started)


async def batch_ingest(settings: Settings, families: int) -> dict[str, Any]:
    """Enrol ``families``, fund each, and make one spend request for each, in batches."""
    secret = settings.jwt_secret.get_secret_value()
    admin, worker = _token(secret, "admin"), _token(secret, "case_system")
    async with (
        served(settings, "allocation") as allocation,
        served(settings, "spending") as spending,
        aiohttp.ClientSession() as http,
    ):
        configured = await http.put(f"{allocation}/pilots/{PILOT}", json=CONFIG, headers=admin)
        assert configured.status in {200, 201}, await configured.text()
        ids = [f"f{n}" for n in range(families)]
        enrolments = [_enrolment(family) for family in ids]
        allocations = [_allocation(family) for family in ids]
        requests = [
            {
                "method": "POST",
                "path": f"/pilots/{PILOT}/spend-requests",
                "idempotency_key": f"request-{family}",
                "body": {
                    "family_id": family,
                    "amount_pence": 2_500,
                    "category": "practical",
                    "purpose": "school uniform",
                    "requested_by": "w",
                    "family_involved": True,
                },
            }
            for family in ids
        ]
        rates = {
            "enrolments": await _timed(
                "enrolments", lambda c: _send(http, allocation, admin, c), enrolments, 201
            ),
            "allocations": await _timed(
                "allocations", lambda c: _send(http, allocation, admin, c), allocations, 201
            ),
        }
        # A batch's line never waits for spending's views (it answers 503, or 422 for a
        # family not seen yet): wait until they hold every family, as a sync would.
        database = dsn(settings, settings.database_of("spending"))
        async with open_pool(database, min_size=1, max_size=1) as pool:
            started = time.perf_counter()
            while time.perf_counter() - started < 120:
                if await pool.fetchval(_SEEN, PILOT) == families:
                    break
                await asyncio.sleep(0.2)
        probe = await _send(http, spending, worker, requests[:1])
        assert probe == [202], probe
        rates["spend_requests"] = await _timed(
            "spend requests", lambda c: _send(http, spending, worker, c), requests[1:], 202
        )
        again = await _timed(
            "the enrolments again", lambda c: _send(http, allocation, admin, c), enrolments, 201
        )
    return {
        "families": families,
        **{f"{name}_per_s": round(rate) for name, rate in rates.items()},
        "replayed_enrolments_per_s": round(again),
    }


_SEEN = "SELECT count(*) FROM family_view WHERE pilot_id = $1"


def _enrolment(family: str) -> dict[str, Any]:
    """A batch line enrolling ``family`` into the sync pilot."""
    return {
        "method": "POST",
        "path": f"/pilots/{PILOT}/families",
        "idempotency_key": f"enrol-{family}",
        "body": {"family_id": family, "team": "t", "worker": "w", "enrolled_on": "2026-01-05"},
    }


def _allocation(family: str) -> dict[str, Any]:
    """A batch line funding ``family`` with £1,000."""
    return {
        "method": "POST",
        "path": f"/pilots/{PILOT}/families/{family}/allocations",
        "idempotency_key": f"fund-{family}",
        "body": {"amount_pence": 100_000},
    }


async def sync_ledger(settings: Settings, events: int) -> dict[str, Any]:
    """A ledger of ``events`` events made through allocation's batch endpoint, as a case
    system's sync would make it: each family enrolled and funded (two lines, two events),
    in full batches one after another; done when the relay has published all of it."""
    secret = settings.jwt_secret.get_secret_value()
    admin = _token(secret, "admin")
    families = events // 2
    async with served(settings, "allocation") as allocation, aiohttp.ClientSession() as http:
        configured = await http.put(f"{allocation}/pilots/{PILOT}", json=CONFIG, headers=admin)
        assert configured.status in {200, 201}, await configured.text()
        started = time.perf_counter()
        with tqdm(total=families * 2, desc="syncing through batches", unit="cmd") as bar:
            for first in range(0, families, MAX_LINES // 2):
                lines = []
                for n in range(first, min(first + MAX_LINES // 2, families)):
                    lines += [_enrolment(f"f{n}"), _allocation(f"f{n}")]
                statuses = await _send(http, allocation, admin, lines)
                assert set(statuses) == {201}, {s: statuses.count(s) for s in set(statuses)}
                bar.update(len(lines))
        synced = time.perf_counter() - started
        database = dsn(settings, settings.database_of("allocation"))
        async with open_pool(database, min_size=1, max_size=1) as pool:
            while True:
                if not await pool.fetchval("SELECT count(*) FROM outbox"):
                    break
                await asyncio.sleep(1.0)  # not more often: the count is a scan of the outbox
        published = time.perf_counter() - started
    return {
        "commands": families * 2,
        "commands_per_s": round(families * 2 / synced),
        "published_after_s": round(published, 1),
    }
