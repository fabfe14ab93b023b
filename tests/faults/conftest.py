"""The fault suite's rig (``make faults``): a PostgreSQL and a Kafka of the suite's own,
durable as in production, that the scenarios kill, stall and starve; the four services as
processes; the load and its book; and the report, one row per scenario, written to
``.local/artefacts/faults/`` as JSON and as a Markdown table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.stack import LOCAL, Kafka, KafkaCluster, Postgres, free_port, unique_name
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.auth import Role, mint_token
from shared.web.registry import ledger_topics
from tests.conftest import JWT_SECRET, Infrastructure
from tests.e2e.processes import ServiceProcesses, service_processes
from tests.e2e.system import auth
from tests.e2e.workload import set_up_pilot
from tests.faults.book import BUDGET_PENCE, Book, Reconciliation, load, reconcile
from tests.support import (
    connect_service_db,
    own_broker,
    own_postgres,
    reporting_caught_up,
    wait_for,
)

ARTEFACTS = LOCAL / "artefacts" / "faults"
FAMILIES = [f"fam-{n}" for n in range(8)]
# Load before a fault and after its repair, so that each scenario shows the ledger carrying
# on both sides of it.
STEADY_SECONDS = 3.0
# How long the ledger may take to become quiet after the load stops: a bound on recovery,
# not a measure of speed (the report gives the measured times).
SETTLE_SECONDS = 180.0
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def fake_clock(offset: timedelta) -> dict[str, str]:
    """The environment that sets a process's clock ``offset`` from the machine's."""
    return {
        "LD_PRELOAD": FAKETIME,
        "FAKETIME": f"{round(offset.total_seconds()):+d}",  # seconds
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # the event loop's timers keep real time
    }


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal a daemon and every process of its group (PostgreSQL's backends, say)."""
    os.killpg(os.getpgid(pid), sig)


@dataclass
class Rig:
    """One scenario's ledger: its databases and topics, its processes, its clients."""

    postgres: Postgres
    kafka: Kafka | KafkaCluster
    settings: Settings
    services: ServiceProcesses
    http: aiohttp.ClientSession
    admin: dict[str, str]
    worker: dict[str, str]
    book: Book


@dataclass
class Outcome:
    """A row of the report."""

    scenario: str
    sent: int
    acknowledged: int
    server_errors: dict[str, int]  # 5xx answers by status
    connection_errors: int
    lost: int
    duplicated: int
    redelivered: int
    below_zero: int
    longest_wait_seconds: float  # the longest a command took from first attempt to answer
    recovered_seconds: float | None  # repair -> the next acknowledgement
    settled_seconds: float  # load stopped -> every view holds every acknowledged command
    audit_verify: int
    audit_replay: int
    problems: list[str]
    passed: bool


class Report:
    """The run's rows, written after each scenario: ``report.md`` and ``report.json`` for
    the latest run, and the same under the run's start time, so that running one scenario
    again does not take the figures of a whole run away."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._started = datetime.now(UTC)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {_memory()}"
        report = json.dumps(
            {
                "machine": machine,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "outcomes": [asdict(o) for o in self.outcomes],
            },
            indent=2,
        )
        table = markdown(self.outcomes, machine)
        for name in ("report", f"report-{self._started:%Y%m%dT%H%M%SZ}"):
            (ARTEFACTS / f"{name}.json").write_text(report)
            (ARTEFACTS / f"{name}.md").write_text(table)


def _memory() -> str:
    kib = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{kib / 1024 / 1024:.0f} GiB"


def markdown(outcomes: list[Outcome], machine: str) -> str:
    lines = [
        f"Fault suite, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine}.",
        "",
        (
            "| scenario | sent | acknowledged | 5xx | connection errors | lost | duplicated "
            "| redelivered | below zero | longest wait s | recovered s | settled s | audit "
            "| result |"
        ),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        errors = ", ".join(f"{status}: {n}" for status, n in sorted(o.server_errors.items()))
        recovered = "-" if o.recovered_seconds is None else f"{o.recovered_seconds:.1f}"
        audit = "ok" if o.audit_verify == o.audit_replay == 0 else "FAIL"
        lines.append(
            f"| {o.scenario} | {o.sent} | {o.acknowledged} | {errors or '-'} "
            f"| {o.connection_errors} | {o.lost} | {o.duplicated} | {o.redelivered} "
            f"| {o.below_zero} | {o.longest_wait_seconds:.1f} | {recovered} "
            f"| {o.settled_seconds:.1f} | {audit} | {'pass' if o.passed else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def report() -> Report:
    return Report()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The suite's PostgreSQL: durable (fsync on), as in production."""
    home = LOCAL / f"faults-{unique_name()}"
    with own_postgres(Postgres(home / "postgres", free_port(), durable=True)) as server:
        yield server


@pytest.fixture(scope="session")
def kafka() -> Iterator[Kafka]:
    """The suite's single broker (the laptop's stack)."""
    with own_broker(LOCAL / f"faults-kafka-{unique_name()}", heap="512m") as broker:
        yield broker


@pytest.fixture(scope="session")
def cluster() -> Iterator[KafkaCluster]:
    """Three brokers, each partition on all three and written to two before it counts."""
    nodes = KafkaCluster.of(
        LOCAL / f"faults-{unique_name()}" / "kafka-cluster",
        [(free_port(), free_port()) for _ in range(3)],
        password=secrets.token_urlsafe(24),
        heap="384m",
        partitions=3,
    )
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop(grace=0)
        shutil.rmtree(nodes.nodes[0].home.parent.parent, ignore_errors=True)


Rigging = Callable[..., Any]


@pytest.fixture
def rigged(tmp_path: Path) -> Rigging:
    """``async with rigged(postgres, kafka, **settings) as rig``: a fresh ledger (databases,
    topics, four services as processes, a pilot with FAMILIES funded) on that
    infrastructure, the load not yet running. With ``clock``, the four services' clocks
    and the tokens' times are that far from the machine's (PostgreSQL's and Kafka's are
    not); ``enrolled_on`` is when FAMILIES joined."""

    @asynccontextmanager
    async def rig(
        postgres: Postgres,
        kafka: Kafka | KafkaCluster,
        *,
        clock: timedelta = timedelta(0),
        enrolled_on: date = date(2026, 1, 5),
        **overrides: object,
    ) -> AsyncIterator[Rig]:
        node = kafka.nodes[0] if isinstance(kafka, KafkaCluster) else kafka
        settings = Infrastructure(postgres, node).settings(
            pg_pool_max=10,
            log_format="json",
            kafka_bootstrap=kafka.bootstrap,  # every node of a cluster
            topic_replicas=kafka.replicas,
            **overrides,
        )
        await ensure_topics(settings, ledger_topics())

        def token(role: Role, sub: str, team: str | None = None) -> str:
            now = datetime.now(UTC) + clock
            return mint_token(JWT_SECRET, sub=sub, role=role, pilot="wigan", team=team, now=now)

        async with (
            service_processes(settings, tmp_path, fake_clock(clock) if clock else None) as services,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            admin = token("admin", "user-1")
            await set_up_pilot(services, http, admin, FAMILIES, enrolled_on)
            # Enrolled and funded (stream version 2): no request may overtake the budget.
            await views_reach(settings, dict.fromkeys(FAMILIES, 2))
            worker = token("social_worker", "sw-1", team="t-1")
            book = Book(allocated=dict.fromkeys(FAMILIES, BUDGET_PENCE))
            yield Rig(postgres, kafka, settings, services, http, auth(admin), auth(worker), book)

    return rig


async def views_reach(settings: Settings, versions: dict[str, int]) -> None:
    """Wait until spending's and approval's views hold each family at its stream version."""

    async def reached() -> bool:
        for service in ("spending", "approval"):
            async with connect_service_db(settings, service) as conn:
                rows = await conn.fetch("SELECT family_id, stream_version FROM family_view")
            held = {row["family_id"]: row["stream_version"] for row in rows}
            if any(held.get(family, 0) < version for family, version in versions.items()):
                return False
        return True

    await wait_for(reached, timeout=60)


Fault = Callable[[Rig], Awaitable[float]]


async def run(rig: Rig, report: Report, scenario: str, fault: Fault) -> Outcome:
    """Load, the fault (which returns the moment it was repaired), load again, then the
    ledger left to settle and reconciled against the book; reported, and asserted."""
    async with load(rig.http, rig.services, rig.admin, rig.worker, FAMILIES, rig.book):
        await wait_for(lambda: rig.book.acknowledged >= 20, timeout=60)
        repaired = await fault(rig)
        await wait_for(lambda: rig.book.first_acknowledgement_after(repaired), timeout=120)
        await asyncio.sleep(STEADY_SECONDS)
    stopped = time.monotonic()

    async def settled() -> bool:
        if not await reporting_caught_up(rig.settings):
            return False
        found = await reconcile(rig.settings, rig.book)
        return found.lost == 0 and not found.problems

    with contextlib.suppress(AssertionError):  # reconciled below all the same: reported
        await wait_for(settled, timeout=SETTLE_SECONDS, interval=1.0)
    settled_seconds = time.monotonic() - stopped
    found: Reconciliation = await reconcile(rig.settings, rig.book)
    book = rig.book
    outcome = Outcome(
        scenario=scenario,
        sent=book.sent,
        acknowledged=book.acknowledged,
        server_errors={str(s): n for s, n in sorted(book.statuses.items()) if s >= 500},
        connection_errors=book.connection_errors,
        lost=found.lost,
        duplicated=found.duplicated,
        redelivered=found.redelivered,
        below_zero=found.below_zero,
        longest_wait_seconds=max(book.waits, default=0.0),
        recovered_seconds=book.first_acknowledgement_after(repaired),
        settled_seconds=settled_seconds,
        audit_verify=found.audit_verify,
        audit_replay=found.audit_replay,
        problems=found.problems,
        passed=found.holds and not _refused(book) and 500 not in book.statuses,
    )
    report.add(outcome)
    assert found.holds, found
    assert not _refused(book), book.refusals
    assert 500 not in book.statuses, book.statuses
    return outcome


def _refused(book: Book) -> dict[int, int]:
    """Answers that were neither an acknowledgement nor a "try again": a fault must delay an
    answer, never change it."""
    return {s: n for s, n in book.statuses.items() if 400 <= s < 500}
