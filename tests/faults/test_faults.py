"""The fault suite (``make faults``): each scenario puts the ledger under a case system's load,
does one thing to it that production will one day do, repairs it, and reconciles the
clients' book against every store, topic and view (``tests/faults/book.py``). Each
scenario's figures go to the report; any loss, duplicate, refusal, 500, balance below
zero or failed audit fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack import LOCAL, Kafka, KafkaCluster, Postgres, free_port, unique_name
from shared.contracts.periods import add_months
from shared.core.kafka import connection
from shared.web.batches import NDJSON
from tests.faults.book import BUDGET_PENCE
from tests.faults.conftest import (
    ARTEFACTS,
    FAMILIES,
    STEADY_SECONDS,
    Report,
    Rig,
    Rigging,
    fake_clock,
    kill_group,
    run,
    views_reach,
)
from tests.faults.netns import Namespace, namespace
from tests.support import SERVICE_NAMES, connect_service_db, own_postgres, run_ledger, wait_for


def _server_processes(postgres: Postgres) -> list[int]:
    """The postmaster and every process it started (each in a session of its own, so that
    a signal to the postmaster's group reaches none of them)."""
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The parent's pid is the second field after the ")" that ends the name.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kafka_pid(node: Kafka) -> int:
    pid = node.pid()
    assert pid is not None, f"{node.home} is not running"
    return pid


# Kafka, one broker.


async def test_kafka_killed(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        kill_group(_kafka_pid(kafka), signal.SIGKILL)
        await asyncio.sleep(8)
        await asyncio.to_thread(kafka.start)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "Kafka killed for 8 s", fault)


async def test_kafka_stalled(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        kill_group(_kafka_pid(kafka), signal.SIGSTOP)
        await asyncio.sleep(8)
        kill_group(_kafka_pid(kafka), signal.SIGCONT)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "Kafka stalled for 8 s", fault)


# PostgreSQL.


async def test_postgres_stopped_immediately(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        await asyncio.to_thread(postgres.stop, "immediate")  # no checkpoint: crash recovery
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.start)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "PostgreSQL stopped immediately for 3 s", fault)


async def test_postgres_stalled(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        stalled = _server_processes(postgres)
        _signal_all(stalled, signal.SIGSTOP)
        await asyncio.sleep(8)
        _signal_all(stalled, signal.SIGCONT)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "PostgreSQL stalled for 8 s", fault)


@pytest.fixture
def small_wal() -> Iterator[Postgres]:
    """A PostgreSQL whose write-ahead log is on a filesystem of 96 MiB (tmpfs)."""
    home = LOCAL / f"faults-{unique_name()}"
    wal = home / "wal-disk"
    wal.mkdir(parents=True)
    mounted = _command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(wal))
    assert mounted == 0, "mounting a tmpfs needs root"
    server = Postgres(home / "postgres", free_port(), durable=True, wal=wal / "pg_wal")
    try:
        server.start()
        yield server
    finally:
        server.stop(mode="immediate")
        _command("umount", str(wal))
        shutil.rmtree(home, ignore_errors=True)


def _command(*command: str) -> int:
    """Its exit code (dd's, filling a filesystem, is 1 by design)."""
    return subprocess.run(command, check=False, capture_output=True).returncode


async def test_postgres_wal_on_a_full_filesystem(
    small_wal: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        assert small_wal.wal is not None
        filler = small_wal.wal.parent / "filler"
        # Everything the filesystem has left, so that the next WAL segment cannot be made.
        await asyncio.to_thread(
            _command, "sh", "-c", f"dd if=/dev/zero of={filler} bs=1M 2>/dev/null"
        )
        refused_before = rig.book.statuses[503] + rig.book.connection_errors
        await wait_for(
            lambda: rig.book.statuses[503] + rig.book.connection_errors > refused_before + 20,
            timeout=120,
        )
        filler.unlink()
        if not small_wal.running():  # it stopped, as it must when its WAL cannot be written
            await asyncio.to_thread(small_wal.start)
        return time.monotonic()

    async with rigged(small_wal, kafka) as rig:
        await run(rig, report, "PostgreSQL's WAL filesystem full", fault)


@pytest.fixture
def archived() -> Iterator[Postgres]:
    """A PostgreSQL that archives each finished write-ahead log segment, as compose's does."""
    home = LOCAL / f"faults-{unique_name()}"
    server = Postgres(home / "postgres", free_port(), durable=True, archive=home / "archive")
    with own_postgres(server):
        yield server


@pytest.mark.parametrize("service", ["spending", "approval", "allocation"])
async def test_a_database_restored_to_a_moment_and_rolled_forward(
    service: str, archived: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    """The restore drill (docs/operations.md): under load, a base backup; a moment; more
    load; the service's database lost. It is restored from the base backup and the archive
    to the moment on a new cluster, taken from there into the live one, rolled forward from
    the service's topic (``ledger recover``), and the service started again. Nothing it
    published may be lost, nothing decided twice, and the book must reconcile as after any
    other fault."""
    archive = archived.archive
    assert archive is not None
    home = archived.home.parent
    database = ""
    recovered: dict[str, Any] = {}

    async def fault(rig: Rig) -> float:
        async def every_family_spent() -> bool:
            return {family for family, _ in rig.book.spent.values()} >= set(FAMILIES)

        # Each family's key sealed a purpose before the backup: no text is lost with it.
        await wait_for(every_family_spent, timeout=60)
        await asyncio.to_thread(archived.base_backup, home / "backup")
        await asyncio.sleep(STEADY_SECONDS)
        async with connect_service_db(rig.settings, service) as conn:
            moment = await conn.fetchval("SELECT clock_timestamp()::text")
        acknowledged = rig.book.acknowledged
        await asyncio.sleep(STEADY_SECONDS)  # acknowledged after the moment, and published
        recovered["acknowledged_after_moment"] = rig.book.acknowledged - acknowledged

        await rig.services.terminate(service)  # its database is about to be lost
        lost = time.monotonic()
        async with connect_service_db(rig.settings, service) as conn:
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")

            async def archived_past_moment() -> bool:
                done = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
                return bool(done is not None and done >= segment)

            await wait_for(archived_past_moment, timeout=60)

        clone = Postgres(home / "clone", free_port())
        try:
            await asyncio.to_thread(clone.restore, home / "backup", archive, moment)
            await asyncio.to_thread(clone.dump, database, home / f"{service}.dump")
        finally:
            await asyncio.to_thread(clone.stop)
        await asyncio.to_thread(archived.load, database, home / f"{service}.dump")
        code, said = await run_ledger(rig.settings, "recover", service)
        assert code == 0, said
        recovered["put_back"] = int(said.split(":")[1].split()[0])
        recovered["said"] = said.strip()
        await rig.services.start(service)
        recovered["seconds_without_service"] = round(time.monotonic() - lost, 1)
        return time.monotonic()

    async with rigged(archived, kafka) as rig:
        database = rig.settings.database_of(service)
        outcome = await run(rig, report, f"{service}'s database restored to a moment", fault)
    (ARTEFACTS / f"restore-drill-{service}.json").write_text(json.dumps(recovered, indent=2))
    assert outcome.lost == 0
    assert recovered["put_back"] > 0  # the fault happened: events after the moment came back
    assert "sealed under keys made after the moment" not in recovered["said"]


# The services.


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_service_killed(
    service: str, postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        await rig.services.kill(service)
        await asyncio.sleep(2)
        await rig.services.start(service)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, f"{service} killed (SIGKILL)", fault)


async def test_spending_killed_twelve_times_in_a_minute(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        for _ in range(12):
            started = time.monotonic()
            await rig.services.kill("spending")
            await rig.services.start("spending")
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - started)))
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "spending killed 12 times in a minute", fault)


async def test_one_of_two_approval_replicas_killed(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        await rig.services.start("approval", replica=2)
        await asyncio.sleep(3)  # both hold partitions
        await rig.services.kill("approval")
        return time.monotonic()  # not restarted: the other replica carries on

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "one of two approval replicas killed", fault)


async def test_the_relay_killed_between_kafkas_commit_and_the_outbox_delete(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    """A session of the test's own locks each new outbox row of spending as it commits; the
    relay publishes it, commits the Kafka transaction and then waits on the row for its
    delete: that is when spending is killed, and its waiting backend ended. Its successor
    publishes the batch again."""

    async def fault(rig: Rig) -> float:
        async with (
            connect_service_db(rig.settings, "spending") as locker,
            connect_service_db(rig.settings, "spending") as watcher,
        ):
            transaction = locker.transaction()
            await transaction.start()
            while not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'DELETE FROM outbox%'"
            ):
                await locker.fetch("SELECT position FROM outbox FOR UPDATE SKIP LOCKED")
                await asyncio.sleep(0.005)
            await rig.services.kill("spending")
            # The process is gone, but its backend waits on in the server and would delete
            # the rows once they are free: ended too, as a lost host's connection would be.
            await watcher.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM outbox%'"
            )
            await transaction.rollback()

        await rig.services.start("spending")
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        outcome = await run(rig, report, "relay killed between Kafka commit and delete", fault)
    assert outcome.redelivered > 0  # the fault happened: the topic holds a batch twice


async def test_a_batch_cut_in_half_by_a_kill_and_sent_again(
    postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    families = [f"batch-{n}" for n in range(150)]
    lines = "".join(
        json.dumps(line) + "\n"
        for family in families
        for line in (
            {
                "method": "POST",
                "path": "/pilots/wigan/families",
                "idempotency_key": f"enrol-{family}",
                "body": {
                    "family_id": family,
                    "team": "t-1",
                    "worker": "sw-1",
                    "enrolled_on": "2026-01-05",
                },
            },
            {
                "method": "POST",
                "path": f"/pilots/wigan/families/{family}/allocations",
                "idempotency_key": f"fund-{family}",
                "body": {"amount_pence": BUDGET_PENCE},
            },
        )
    )

    async def send(rig: Rig) -> list[dict[str, Any]] | None:
        try:
            async with rig.http.post(
                f"{rig.services.url('allocation')}/pilots/wigan/batches",
                data=lines,
                headers={**rig.admin, "Content-Type": NDJSON},
            ) as response:
                if response.status != 200:
                    return None
                return [json.loads(line) for line in (await response.text()).splitlines()]
        except Exception:  # noqa: BLE001 - the kill cuts the answer off, in any of its ways
            return None

    async def fault(rig: Rig) -> float:
        async def enrolled() -> int:
            async with connect_service_db(rig.settings, "allocation") as conn:
                return int(
                    await conn.fetchval(
                        "SELECT count(*) FROM events WHERE family_id LIKE 'batch-%'"
                    )
                )

        first = asyncio.create_task(send(rig))
        await wait_for(lambda: _at_least(enrolled, 40), timeout=60, interval=0.02)
        await rig.services.kill("allocation")
        assert await first is None  # cut off: no answer
        cut = await enrolled()
        assert 0 < cut < 2 * len(families)
        await rig.services.start("allocation")
        answers = await send(rig)
        assert answers is not None
        assert [a["status"] for a in answers] == [201] * len(answers)
        assert sum(a["replayed"] for a in answers) == cut
        rig.book.enrolled |= set(families)
        return time.monotonic()

    async with rigged(postgres, kafka) as rig:
        await run(rig, report, "a batch cut in half by a kill, sent again", fault)


async def _at_least(count: Any, least: int) -> bool:
    return bool(await count() >= least)


# Clocks.


SKEW = timedelta(minutes=5)
# The services' clocks when the scenario begins: its load crosses midnight in them.
BEFORE_MIDNIGHT = timedelta(seconds=75)


@pytest.mark.parametrize("sign", [+1, -1], ids=["ahead", "behind"])
@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_service_clock_five_minutes_off_across_midnight_and_a_period_end(
    service: str, sign: int, postgres: Postgres, kafka: Kafka, rigged: Rigging, report: Report
) -> None:
    """The four services' clocks cross a midnight that ends every family's budget period
    (a year from their enrolment; each has money in both periods) while one runs five
    minutes ahead of the others or behind them, so that for a while it is on the other
    side of midnight and of the period end. Spending's clock says which period a request
    is in, and approval decides it on that period's balance."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
    clock = midnight - BEFORE_MIDNIGHT - now  # PostgreSQL and Kafka keep the machine's
    new_period = midnight.date()
    enrolled_on = add_months(new_period, -12)

    async def fault(rig: Rig) -> float:
        await rig.services.kill(service)
        await rig.services.start(service, environment=fake_clock(clock + sign * SKEW))
        # Load until the others are well past midnight: with the one ahead, it was past
        # already; with the one behind, it stays before it to the end.
        past = midnight + timedelta(seconds=10)
        await asyncio.sleep(max(0.0, (past - datetime.now(UTC) - clock).total_seconds()))
        return time.monotonic()  # left skewed to the end: the reconciliation runs on it

    async with rigged(postgres, kafka, clock=clock, enrolled_on=enrolled_on) as rig:
        left = midnight - datetime.now(UTC) - clock
        assert left > timedelta(seconds=5), f"the rig took {BEFORE_MIDNIGHT - left} to start"
        url = f"{rig.services.url('allocation')}/pilots/wigan/families"
        versions = {}
        for family in FAMILIES:  # the next period's money, given before it begins
            body = {"amount_pence": BUDGET_PENCE, "period_start": new_period.isoformat()}
            async with rig.http.post(
                f"{url}/{family}/allocations", json=body, headers=rig.admin
            ) as response:
                assert response.status == 201, await response.text()
                versions[family] = (await response.json())["stream_version"]
            rig.book.allocated[family] += BUDGET_PENCE
        await views_reach(rig.settings, versions)
        scenario = f"{service}'s clock {'+' if sign > 0 else '-'}5 min across midnight"
        await run(rig, report, scenario, fault)
        periods = await _request_periods(rig)
    # Spending's clock said which: it was on both sides of midnight unless it was behind.
    behind = service == "spending" and sign < 0
    assert set(periods) == ({enrolled_on} if behind else {enrolled_on, new_period}), periods


async def _request_periods(rig: Rig) -> Counter[date]:
    """How many of the book's requests approval decided in each period."""
    async with connect_service_db(rig.settings, "approval") as conn:
        rows = await conn.fetch("SELECT request_id::text AS id, period_start FROM requests")
    return Counter(row["period_start"] for row in rows if row["id"] in rig.book.spent)


# Three brokers.


async def _leader_of(cluster: KafkaCluster, rig: Rig, topic: str) -> Kafka:
    admin = AIOKafkaAdminClient(**connection(rig.settings.kafka))
    await admin.start()
    try:
        [described] = await admin.describe_topics([rig.settings.topic(topic)])
    finally:
        await admin.close()
    leader = described["partitions"][0]["leader"]
    return cluster.nodes[int(leader) - 1]


async def test_three_brokers_the_partition_leader_killed(
    postgres: Postgres, cluster: KafkaCluster, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        leader = await _leader_of(cluster, rig, "ledger.spending")
        kill_group(_kafka_pid(leader), signal.SIGKILL)
        await asyncio.sleep(10)
        await asyncio.to_thread(leader.start)
        return time.monotonic()

    async with rigged(postgres, cluster) as rig:
        await run(rig, report, "3 brokers: spending's partition leader killed", fault)


async def test_three_brokers_the_active_controller_killed(
    postgres: Postgres, cluster: KafkaCluster, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        controller = await asyncio.to_thread(cluster.active_controller)
        kill_group(_kafka_pid(controller), signal.SIGKILL)
        await asyncio.sleep(10)
        await asyncio.to_thread(controller.start)
        return time.monotonic()

    async with rigged(postgres, cluster) as rig:
        await run(rig, report, "3 brokers: the active controller killed", fault)


async def test_three_brokers_a_follower_stalled(
    postgres: Postgres, cluster: KafkaCluster, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        leader = await _leader_of(cluster, rig, "ledger.spending")
        follower = next(node for node in cluster.nodes if node is not leader)
        kill_group(_kafka_pid(follower), signal.SIGSTOP)
        await asyncio.sleep(15)  # longer than replica.lag.time.max.ms: it leaves the ISR
        kill_group(_kafka_pid(follower), signal.SIGCONT)
        return time.monotonic()

    async with rigged(postgres, cluster) as rig:
        await run(rig, report, "3 brokers: a follower stalled for 15 s", fault)


# The network between one service and the rest: the service in a namespace of its own.


@dataclass
class Network:
    """A PostgreSQL and a Kafka that listen on loopback and on a namespace's link too."""

    namespace: Namespace
    postgres: Postgres
    kafka: Kafka
    kafka_port: int  # the broker's listener on the link

    def settings_inside(self) -> dict[str, str]:
        """What a service inside the namespace is told: where it listens, and where the
        database and the broker are across the link."""
        return {
            "LEDGER_HOST": self.namespace.inside,
            "LEDGER_PG_HOST": self.namespace.host,
            "LEDGER_KAFKA_BOOTSTRAP": f"{self.namespace.host}:{self.kafka_port}",
        }


@pytest.fixture
def network() -> Iterator[Network]:
    home = LOCAL / f"faults-{unique_name()}"
    with namespace(subnet=7) as link:
        postgres = Postgres(
            home / "postgres", free_port(), durable=True, addresses=f"127.0.0.1,{link.host}"
        )
        port, controller, across = free_port(), free_port(), free_port()
        password = secrets.token_urlsafe(24)
        login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
        kafka = Kafka(
            home / "kafka",
            port,
            controller,
            password=password,
            heap="512m",
            partitions=3,
            extra={
                "listeners": f"CLIENTS://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
                f"LINK://{link.host}:{across}",
                "advertised.listeners": f"CLIENTS://127.0.0.1:{port},LINK://{link.host}:{across}",
                "listener.security.protocol.map": "CLIENTS:SASL_PLAINTEXT,"
                "CONTROLLER:SASL_PLAINTEXT,LINK:SASL_PLAINTEXT",
                "listener.name.link.scram-sha-512.sasl.jaas.config": (
                    f'{login} username="kafka" password="{password}";'
                ),
            },
        )
        try:
            postgres.start()
            # The throwaway cluster trusts loopback; the namespace's address too.
            with (postgres.data / "pg_hba.conf").open("a") as rules:
                rules.write(f"host all all {link.inside}/32 trust\n")
            postgres.reload()
            kafka.start()
            yield Network(link, postgres, kafka, across)
        finally:
            kafka.stop(grace=0)
            postgres.stop(mode="immediate")
            shutil.rmtree(home, ignore_errors=True)


async def _moved_inside(rig: Rig, network: Network, service: str) -> None:
    """The service, stopped on loopback and started again inside the namespace."""
    code, _ = await rig.services.terminate(service)
    assert code == 0
    await rig.services.start(
        service, environment=network.settings_inside(), wrapper=network.namespace.wrapper
    )


@pytest.mark.parametrize("service", ["spending", "approval"])
async def test_a_service_cut_off_from_kafka(
    service: str, network: Network, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        network.namespace.cut(network.kafka_port)
        await asyncio.sleep(15)
        network.namespace.heal()
        return time.monotonic()

    async with rigged(network.postgres, network.kafka) as rig:
        await _moved_inside(rig, network, service)
        await run(rig, report, f"{service} cut off from Kafka for 15 s", fault)


async def test_spending_cut_off_from_postgres(
    network: Network, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        network.namespace.cut(network.postgres.port)
        await asyncio.sleep(8)
        network.namespace.heal()
        return time.monotonic()

    async with rigged(network.postgres, network.kafka) as rig:
        await _moved_inside(rig, network, "spending")
        await run(rig, report, "spending cut off from PostgreSQL for 8 s", fault)


async def test_spendings_network_lossy_and_slow(
    network: Network, rigged: Rigging, report: Report
) -> None:
    async def fault(_: Rig) -> float:
        # Both ways, to PostgreSQL, Kafka and the clients alike.
        network.namespace.impair(loss=0.1, rate="2mbit")
        await asyncio.sleep(15)
        network.namespace.heal()
        return time.monotonic()

    async with rigged(network.postgres, network.kafka) as rig:
        await _moved_inside(rig, network, "spending")
        await run(rig, report, "spending's network: 10 % loss, 2 Mbit/s", fault)


async def test_spendings_network_delayed_and_reordered(
    network: Network, rigged: Rigging, report: Report
) -> None:
    async def fault(rig: Rig) -> float:
        # Both ways, to PostgreSQL, Kafka and the clients alike: 50 ms each way, a quarter
        # of the packets overtaking those held.
        with network.namespace.delayed(delay_ms=50, reorder=0.25):
            # The fault is real (not a measure of speed): a new connection and three
            # requests cross the link eight times; all but one overtaking is 1 in 2,500.
            started = time.monotonic()
            async with aiohttp.ClientSession() as fresh:
                for _ in range(3):
                    async with fresh.get(f"{rig.services.url('spending')}/healthz") as answer:
                        assert answer.status == 200
            assert time.monotonic() - started >= 0.1
            await asyncio.sleep(15)
        return time.monotonic()

    async with rigged(network.postgres, network.kafka) as rig:
        await _moved_inside(rig, network, "spending")
        await run(rig, report, "spending's network: 50 ms each way, 25 % reordered", fault)
