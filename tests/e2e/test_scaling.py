"""Scaled services, as ``docker compose up --scale reporting=3 --scale approval=2`` runs them.

Three reporting processes share one consumer group. Each holds one partition of every topic
(the same number on each, so a family's events on all topics meet in one replica), applies
only what it holds and reports lag only for that. When one is stopped under load, the
others take its partitions over from the offsets stored with its effects.

Two approval processes decide every request once between them, wherever its allocation and
spending events land (they coordinate through approval's database). One of them publishes
approval's events; when it is stopped under load, the other's relay takes over.

Afterwards every event was applied exactly once across the reporting replicas, every
acknowledged request was decided once and reached reporting, and reporting's balances are
the sums of what was acknowledged.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from services.reporting.projections import CONSUMER
from shared.contracts import TOPICS
from shared.core.settings import Settings
from tests.e2e.processes import ServiceProcesses, service_processes
from tests.e2e.system import auth
from tests.e2e.workload import decided, held_by_family, requests_flowing, set_up_pilot
from tests.support import connect_service_db, reporting_caught_up, wait_for

FAMILIES = [f"fam-{n}" for n in range(12)]
REPLICAS = 3
CLIENTS = 3
APPROVALS = ("approval", "approval-2")
_LAG = re.compile(r"^ledger_consumer_lag\{(?P<labels>[^}]*)\}", re.MULTILINE)


@pytest.mark.faults
async def test_replicas_share_the_work_and_take_over_from_one_that_stops(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    partitions = {
        f"{settings.topic(topic)}:{number}"
        for topic in TOPICS
        for number in range(settings.topic_partitions)
    }
    async with (
        service_processes(settings, tmp_path) as services,
        aiohttp.ClientSession() as http,
    ):
        more = [services.start("reporting", replica) for replica in range(2, REPLICAS + 1)]
        replicas = ["reporting", *await asyncio.gather(*more)]
        assert await services.start("approval", 2) == APPROVALS[1]
        shared_out = await wait_for(lambda: assignment(services, replicas, partitions), 60)
        for held in shared_out.values():
            numbers = {name.rsplit(":", 1)[1] for name in held}
            assert len(held) == len(TOPICS)  # one partition of each topic ...
            assert len(numbers) == 1  # ... the same one: co-partitioned
        await set_up_pilot(services, http, token("admin", "wigan"), FAMILIES)

        worker = auth(token("social_worker", "wigan", sub="sw-1", team="t-1"))
        async with requests_flowing(http, services, worker, FAMILIES, CLIENTS) as acknowledged:
            await asyncio.sleep(2.0)  # every replica is applying what it holds
            leaving = replicas.pop()
            code, _ = await services.terminate(leaving)
            assert code == 0
            taken_over = await wait_for(lambda: assignment(services, replicas, partitions), 60)
            await asyncio.sleep(2.0)  # the others carry on with its partitions
            [publishing] = [a for a in APPROVALS if leads_relay(services, a)]
            code, _ = await services.terminate(publishing)
            assert code == 0
            [standing_by] = [a for a in APPROVALS if a != publishing]
            await wait_for(lambda: leads_relay(services, standing_by), timeout=30)
            await asyncio.sleep(2.0)  # it decides and publishes alone
        await wait_for(lambda: decided(settings, set(acknowledged)), timeout=60)
        await wait_for(lambda: reporting_caught_up(settings), timeout=60)

        # Lag is reported for what a replica holds, and for nothing it gave up.
        await wait_for(lambda: lag_reported_as_held(services, taken_over), timeout=30)

    everyone = [*replicas, leaving]
    projections = f"{services.settings.topic_prefix}{CONSUMER.name}"
    applied = Counter(
        line["event_id"]
        for replica in everyone
        for line in services.log_lines(replica)
        if line["event"] == "event_applied" and line["consumer"] == projections
    )
    assert all(count == 1 for count in applied.values())
    for replica in [*everyone, *APPROVALS]:  # each did a share of the work
        assert any(line["event"] == "event_applied" for line in services.log_lines(replica))
    stored: set[str] = set()
    for service in ("allocation", "spending", "approval"):
        async with connect_service_db(settings, service) as conn:
            stored |= {
                str(row["event_id"]) for row in await conn.fetch("SELECT event_id FROM events")
            }
    assert set(applied) == stored

    async with connect_service_db(settings, "reporting") as conn:
        rows = await conn.fetch("SELECT family_id, held_pence FROM balances")
    assert {row["family_id"]: row["held_pence"] for row in rows} == held_by_family(acknowledged)


def holding(services: ServiceProcesses, replica: str) -> set[str] | None:
    """The partitions the replica's reporting consumer holds, by its log; None mid-rebalance."""
    name = f"{services.settings.topic_prefix}{CONSUMER.name}"
    changes = [
        line
        for line in services.log_lines(replica)
        if line["event"] in {"partitions_assigned", "partitions_revoked"}
        and line.get("consumer") == name
    ]
    if not changes or changes[-1]["event"] != "partitions_assigned":
        return None
    return set(changes[-1]["partitions"])


def leads_relay(services: ServiceProcesses, instance: str) -> bool:
    """The instance's relay has taken the lead and publishes the service's events."""
    return any(line["event"] == "relay_leading" for line in services.log_lines(instance))


def assignment(
    services: ServiceProcesses, replicas: list[str], partitions: set[str]
) -> dict[str, set[str]] | None:
    """Who holds what, once the replicas hold every partition between them, each its own."""
    held = {replica: holding(services, replica) for replica in replicas}
    shares = [share for share in held.values() if share]
    if len(shares) < len(replicas):
        return None
    if sum(len(share) for share in shares) != len(partitions) or set().union(*shares) != partitions:
        return None
    return {replica: share for replica, share in held.items() if share}


async def lag_reported_as_held(services: ServiceProcesses, held: dict[str, set[str]]) -> bool:
    """Each replica's ``/metrics`` shows its projections consumer's lag for exactly the
    partitions it holds (its webhooks consumer is a group of its own)."""
    name = f"{services.settings.topic_prefix}{CONSUMER.name}"
    for replica, share in held.items():
        reported = set()
        for match in _LAG.finditer(await services.metrics(replica)):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            if labels["consumer"] == name:
                reported.add(f"{labels['topic']}:{labels['partition']}")
        if reported != share:
            return False
    return True
