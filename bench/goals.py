"""The performance goals (P1 to P6), each a ratio to floors and a peer measured in the same
run, on a machine too noisy for absolute numbers alone.

Floors: a bare aiohttp + pydantic service with one PostgreSQL commit per request (wrk, 32
connections); asyncpg appends one per transaction, 100 per transaction and COPY; aiokafka
produce (acks=all, idempotent) and consume. Peer: the ``eventsourcing`` library on the same
PostgreSQL, one event per save, 16 threads. Then the ledger: the four services as ``ledger
serve`` processes, as ``make up`` runs them, and the goals measured on them.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.bare import BODY
from bench.batches import batch_ingest
from bench.cpu import CpuMeter, Measured, measured
from bench.statements import StatementCounter, per_unit
from deploy.stack import Postgres, free_port, port_open, serve_command, wait_until
from services.reporting.rebuild import rebuild
from shared.cli.main import replay, verify
from shared.cli.progress import ProgressBar, progress_bar
from shared.core.db import dsn
from shared.core.kafka import connection, ensure_topics
from shared.core.schema import ensure_database
from shared.core.settings import Settings
from shared.web.auth import Role, mint_token
from shared.web.registry import migrate, services

__all__ = ["Goal", "measure_goals"]

PILOT = "bench"
CONFIG = {
    "name": "Bench",
    "period_months": 12,
    "family_cap_pence": 10**9,
    "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
    "categories": ["practical"],
}
LOAD_FAMILIES = 400
PROBE_FAMILIES = 120
WRK_SECONDS = 20
LEDGER = str(Path(sys.executable).parent / "ledger")

# wrk's script: a distinct Idempotency-Key per request, families spread over the load's;
# done() prints one JSON line (wrk counts statuses over 399 as errors).
_WRK_SCRIPT = """
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  local n = tid * 10000000 + counter
  local body = string.gsub(BODY, "FAMILY", "f" .. (n % FAMILIES))
  wrk.headers["Idempotency-Key"] = RUN .. "-" .. n
  return wrk.format("POST", PATH, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "refused": %d, "socket_errors": %d, '
    .. '"p50_ms": %f, "p99_ms": %f}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass(frozen=True)
class Goal:
    """One goal: what was measured, against what, and whether it holds."""

    name: str
    what: str
    measured: str
    ratio: float | None  # measured / floor, where the goal is a ratio
    target: str
    passed: bool


def _token(secret: str, role: Role, team: str | None = None, sub: str = "bench") -> str:
    return mint_token(secret, sub=sub, role=role, pilot=PILOT, team=team, now=datetime.now(UTC))


async def wrk(
    url: str,
    path: str,
    body: str,
    headers: dict[str, str],
    *,
    families: int,
    connections: int = 32,
    seconds: int = WRK_SECONDS,
) -> dict[str, Any]:
    """wrk POSTing ``body`` (FAMILY replaced per request) to ``path``; its summary."""
    header = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = (
        f'PATH = "{path}"\nFAMILIES = {families}\nRUN = "{uuid.uuid4().hex[:8]}"\n'
        f"BODY = [[{body}]]\n{header}\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + _WRK_SCRIPT
    )
    with tempfile.TemporaryDirectory() as folder:
        lua = Path(folder) / "requests.lua"
        await asyncio.to_thread(lua.write_text, script)
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    summary["accepted_per_s"] = (summary["requests"] - summary["refused"]) / summary["seconds"]
    return summary


def postmaster(pg: Postgres) -> int:
    """PostgreSQL's first process: its backends are its children."""
    return int((pg.data / "postmaster.pid").read_text().splitlines()[0])


def _per(measure: Measured, count: float) -> float:
    """CPU milliseconds per unit of work."""
    return _per_seconds(measure.cpu_seconds, count)


def _per_seconds(seconds: float, count: float) -> float:
    return round(1000 * seconds / count, 3) if count else float("nan")


async def bare_service_floor(
    settings: Settings, pg: Postgres, loop: str = "uvloop"
) -> dict[str, Any]:
    """The bare aiohttp + pydantic + one commit service under wrk, 32 connections, and
    its CPU (the service's and PostgreSQL's) per accepted request, on ``loop``."""
    await ensure_database(dsn(settings, "postgres"), settings.database_of("bare"))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bare",
        "--port",
        str(port),
        "--dsn",
        dsn(settings, settings.database_of("bare")),
        "--loop",
        loop,
    )
    try:
        await asyncio.to_thread(wait_until, lambda: port_open(port), 30, "the bare service")
        meter = CpuMeter([process.pid, postmaster(pg)])
        summary, cost = await measured(
            meter,
            lambda: wrk(
                f"http://127.0.0.1:{port}",
                "/items",
                BODY.replace("fam-1", "FAMILY"),
                {},
                families=LOAD_FAMILIES,
            ),
        )
        accepted = summary["requests"] - summary["refused"]
        return {**summary, "cpu_ms_per_request": _per(cost, accepted), "cpu": cost.totals()}
    finally:
        process.terminate()
        await process.wait()


async def kafka_floors(settings: Settings, count: int = 50_000) -> dict[str, float]:
    """aiokafka: produce (acks=all, idempotent) then consume ``count`` event-sized records."""
    topic = settings.topic("floor.kafka")
    value = json.dumps({"type": "family.budget_allocated", "data": {"note": "x" * 400}}).encode()
    producer = AIOKafkaProducer(
        **connection(settings.kafka), acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)  # the topic exists before timing starts
        started = time.perf_counter()
        sent = [await producer.send(topic, value, key=str(n % 64).encode()) for n in range(count)]
        await asyncio.gather(*sent)
        produced = count / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **connection(settings.kafka), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        started, seen = time.perf_counter(), 0
        while seen < count + 1:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        consumed = seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return {"produce_per_s": round(produced), "consume_per_s": round(consumed)}


def eventsourcing_peer(
    pg: Postgres, database: str, seconds: float = 10, threads: int = 16
) -> dict[str, float]:
    """The ``eventsourcing`` library on PostgreSQL: one event per save, ``threads`` at once."""
    from eventsourcing.application import Application  # noqa: PLC0415 - bench-only package
    from eventsourcing.domain import Aggregate, event  # noqa: PLC0415

    class Budget(Aggregate):
        @event("Opened")
        def __init__(self) -> None:
            self.spent = 0

        @event("Spent")
        def spend(self, amount: int) -> None:
            self.spent += amount

    app: Application[Any] = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": database,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": "",
            "POSTGRES_POOL_SIZE": str(threads),
            "CREATE_TABLE": "y",
        }
    )
    saved = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(index: int) -> None:
        budget = Budget()
        app.save(budget)
        while time.perf_counter() < deadline:
            budget.spend(1)
            app.save(budget)
            saved[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    app.close()
    elapsed = time.perf_counter() - started
    return {"appends_per_s": round(sum(saved) / elapsed), "seconds": round(elapsed, 2)}


@dataclass
class Stack:
    """The four services as processes: their URLs and process ids."""

    urls: dict[str, str]
    pids: dict[str, int]

    def peak_rss_mb(self) -> dict[str, float]:
        """Each service's peak resident memory so far (VmHWM), in MB."""
        peaks = {}
        for name, pid in self.pids.items():
            status = Path(f"/proc/{pid}/status").read_text()
            line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
            peaks[name] = round(int(line.split()[1]) / 1024, 1)
        return peaks


@asynccontextmanager
async def ledger_processes(settings: Settings, logs: Path) -> AsyncIterator[Stack]:
    """``ledger serve`` for each service, ready; stopped on the way out."""
    names = [definition.name for definition in services()]
    ports = {name: free_port() for name in names}
    settings = settings.model_copy(update={"ports": ports})
    await migrate(settings, names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= settings.as_environment()
    processes = {}
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    try:
        for name in names:
            with (logs / f"{name}.log").open("ab") as log:
                processes[name] = await asyncio.create_subprocess_exec(
                    LEDGER, *serve_command(name), env=env, stdout=log, stderr=log
                )
        async with aiohttp.ClientSession() as http:
            for name in names:
                url = f"http://127.0.0.1:{ports[name]}/readyz"
                for _ in range(600):
                    try:
                        async with http.get(url) as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"{name} did not become ready")
        yield Stack(
            {name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
            {name: process.pid for name, process in processes.items()},
        )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            await process.wait()


async def _batch(
    http: aiohttp.ClientSession, url: str, token: str, lines: list[dict[str, Any]]
) -> None:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    async with http.post(
        f"{url}/pilots/{PILOT}/batches",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
    ) as response:
        answers = [json.loads(line) for line in (await response.text()).splitlines()]
    assert all(a["status"] == 201 for a in answers), answers[:3]


async def prepare(stack: Stack, secret: str) -> None:
    """The pilot, and families enrolled and funded (load families, then probe families)."""
    admin = _token(secret, "admin")
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{stack.urls['allocation']}/pilots/{PILOT}",
            json=CONFIG,
            headers={"Authorization": f"Bearer {admin}"},
        ) as response:
            assert response.status in {200, 201}, await response.text()
        families = [f"f{n}" for n in range(LOAD_FAMILIES)] + [
            f"probe{n}" for n in range(PROBE_FAMILIES)
        ]
        for first in range(0, len(families), 500):
            chunk = families[first : first + 500]
            await _batch(
                http,
                stack.urls["allocation"],
                admin,
                [
                    {
                        "method": "POST",
                        "path": f"/pilots/{PILOT}/families",
                        "idempotency_key": f"enrol-{f}",
                        "body": {
                            "family_id": f,
                            "team": "t",
                            "worker": "w",
                            "enrolled_on": "2026-01-05",
                        },
                    }
                    for f in chunk
                ],
            )
            await _batch(
                http,
                stack.urls["allocation"],
                admin,
                [
                    {
                        "method": "POST",
                        "path": f"/pilots/{PILOT}/families/{f}/allocations",
                        "idempotency_key": f"fund-{f}",
                        "body": {"amount_pence": 10**8},
                    }
                    for f in chunk
                ],
            )
    await asyncio.sleep(3)  # spending and reporting take in the families


def _spend_body(family: str, amount: int = 1_500) -> dict[str, Any]:
    return {**json.loads(BODY), "family_id": family, "amount_pence": amount}


async def spend_ingest(
    stack: Stack, secret: str, infrastructure: list[int], statements: StatementCounter
) -> dict[str, Any]:
    """P1: wrk, 32 connections, spend requests with distinct keys, auto-approved; and the
    CPU every process of the stack spent per accepted request (the four services,
    PostgreSQL, Kafka: ``infrastructure``), until approval has decided each and reporting
    projected it, with the statements each service's database ran for it."""
    worker = _token(secret, "case_system")
    meter = CpuMeter([*stack.pids.values(), *infrastructure])
    idle_statements = await statements.rate(3.0)
    statements_before = await statements.counts()
    summary, cost = await measured(
        meter,
        lambda: wrk(
            stack.urls["spending"],
            f"/pilots/{PILOT}/spend-requests",
            json.dumps(_spend_body("FAMILY")),
            {"Authorization": f"Bearer {worker}"},
            families=LOAD_FAMILIES,
        ),
    )
    accepted = summary["requests"] - summary["refused"]
    names = {pid: name for name, pid in stack.pids.items()}
    names |= dict(zip(infrastructure, ("postgresql", "kafka"), strict=True))
    shares = {names[pid]: _per_seconds(cpu, accepted) for pid, cpu in cost.by_root.items()}
    ran = per_unit(
        statements_before,
        await statements.counts(),
        idle_statements,
        cost.wall_seconds,
        accepted,
    )
    return {
        **summary,
        "cpu_ms_per_request": _per(cost, accepted),
        "cpu": {**cost.totals(), "by_process_ms_per_request": shares},
        "statements_per_request": {**ran, "total": round(sum(ran.values()), 1)},
    }


async def freshness(
    stack: Stack, secret: str, probes: range, background_rate: float = 0.0
) -> dict[str, float]:
    """P2: from a spend request's 2xx to its hold in reporting's balance, one probe family
    each, while ``background_rate`` other requests a second arrive (0: light load)."""
    worker = {"Authorization": f"Bearer {_token(secret, 'case_system')}"}
    reader = {"Authorization": f"Bearer {_token(secret, 'admin')}"}
    delays: list[float] = []
    stop = asyncio.Event()

    async def background(http: aiohttp.ClientSession) -> None:
        number, started = 0, time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            number += 1
            due = started + number / background_rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

            async def one(n: int) -> None:
                async with http.post(
                    f"{stack.urls['spending']}/pilots/{PILOT}/spend-requests",
                    json=_spend_body(f"f{n % LOAD_FAMILIES}"),
                    headers={**worker, "Idempotency-Key": f"bg-{uuid.uuid4()}"},
                ) as response:
                    await response.read()

            task = asyncio.create_task(one(number))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async with aiohttp.ClientSession() as http:
        loader = asyncio.create_task(background(http)) if background_rate else None
        await asyncio.sleep(1 if loader else 0)
        for number in probes:
            family = f"probe{number}"
            balance = f"{stack.urls['reporting']}/pilots/{PILOT}/families/{family}/balance"
            async with http.get(balance, headers=reader) as response:
                before = (await response.json())["available_pence"]
            async with http.post(
                f"{stack.urls['spending']}/pilots/{PILOT}/spend-requests",
                json=_spend_body(family, 700),
                headers={**worker, "Idempotency-Key": f"probe-{uuid.uuid4()}"},
            ) as response:
                assert response.status == 202, await response.text()
            answered = time.perf_counter()
            while True:
                async with http.get(balance, headers=reader) as response:
                    if (await response.json())["available_pence"] <= before - 700:
                        break
                await asyncio.sleep(0.001)
            delays.append((time.perf_counter() - answered) * 1000)
            await asyncio.sleep(0.05)
        stop.set()
        if loader:
            await loader
    ordered = sorted(delays)
    return {
        "probes": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


async def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await work()
    return result, time.perf_counter() - started


async def measure_goals(
    settings: Settings,
    pg: Postgres,
    kafka_pid: int,
    logs: Path,
    floors: dict[str, Any],
    batch_families: int,
) -> dict[str, Any]:
    """Every floor, the peer and P1 to P6 in one run; the goals with their verdicts."""
    secret = settings.jwt_secret.get_secret_value()
    found: dict[str, Any] = {"asyncpg_floors_per_s": floors}
    found["bare_service_floor"] = await bare_service_floor(settings, pg)
    # What the event loop costs: the same floor on asyncio's own loop.
    found["bare_service_floor_asyncio"] = await bare_service_floor(settings, pg, "asyncio")
    await ensure_database(dsn(settings, "postgres"), settings.database_of("peer"))
    # The peer runs in this process (its threads) against the same PostgreSQL.
    peer, cost = await measured(
        CpuMeter([os.getpid(), postmaster(pg)]),
        lambda: asyncio.to_thread(eventsourcing_peer, pg, settings.database_of("peer")),
    )
    appended = peer["appends_per_s"] * peer["seconds"]
    found["eventsourcing_peer"] = {**peer, "cpu_ms_per_append": _per(cost, appended)}
    await ensure_topics(settings, ["floor.kafka"])
    found["kafka_floors"] = await kafka_floors(settings)
    async with ledger_processes(settings, logs) as stack:
        await prepare(stack, secret)
        databases = {settings.database_of(name): name for name in stack.pids}
        statements = StatementCounter(dsn(settings, "postgres"), databases)
        found["p1_ingest"] = await spend_ingest(
            stack, secret, [postmaster(pg), kafka_pid], statements
        )
        found["p6_peak_rss_mb"] = stack.peak_rss_mb()
        await asyncio.sleep(5)  # approval and reporting finish what the load left them
        found["p2_light"] = await freshness(stack, secret, range(60))
        half = found["p1_ingest"]["accepted_per_s"] / 2
        found["p2_half_load"] = await freshness(stack, secret, range(60, 120), half)
        found["p2_half_load"]["background_per_s"] = round(half)
    found["p5_batches"] = await batch_ingest(
        settings.model_copy(update={"ports": {"allocation": free_port(), "spending": free_port()}}),
        batch_families,
    )
    await asyncio.sleep(3)  # the relays publish the last batch
    with progress_bar("rebuilding projections", unit="offset", total=0) as bar:
        report = await rebuild(settings, ProgressBar(bar), accept_differences=True)
    found["p3_rebuild"] = {
        "events": report.records,
        "events_per_s": round(report.records_per_second),
    }
    verified, seconds = await timed(lambda: verify(settings, None))
    found["p4_verify"] = {
        "events": verified.events,
        "events_per_s": round(verified.events / seconds),
    }
    replayed, seconds = await timed(lambda: replay(settings, None, None, None))
    events = len(replayed.events)
    found["p4_replay"] = {"events": events, "events_per_s": round(events / seconds)}
    found["goals"] = [goal.__dict__ for goal in verdicts(found)]
    return found


def _listed(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {figure}" for name, figure in figures.items())


def verdicts(found: dict[str, Any]) -> list[Goal]:
    """Each goal's ratio and PASS/FAIL from what the run measured."""
    bare = found["bare_service_floor"]["accepted_per_s"]
    peer = found["eventsourcing_peer"]["appends_per_s"]
    copy = found["asyncpg_floors_per_s"]["copy"]
    p1 = found["p1_ingest"]
    light, half = found["p2_light"], found["p2_half_load"]
    rss = found["p6_peak_rss_mb"]
    batches = found["p5_batches"]
    slowest_batch = min(
        batches[f"{kind}_per_s"] for kind in ("enrolments", "allocations", "spend_requests")
    )
    rebuild_rate, events = found["p3_rebuild"]["events_per_s"], found["p3_rebuild"]["events"]
    audit_rate = min(found["p4_verify"]["events_per_s"], found["p4_replay"]["events_per_s"])
    p1_cpu, bare_cpu = p1["cpu_ms_per_request"], found["bare_service_floor"]["cpu_ms_per_request"]
    return [
        Goal(
            "P1 cost",
            "whole-system CPU per accepted spend request (decided, projected)",
            f"{p1_cpu} ms against the bare floor's {bare_cpu} ms (on asyncio's loop "
            f"{found['bare_service_floor_asyncio']['cpu_ms_per_request']} ms) and the "
            f"peer's {found['eventsourcing_peer']['cpu_ms_per_append']} ms an append; "
            f"statements per request: {_listed(p1['statements_per_request'])}",
            p1_cpu / bare_cpu,
            "≤ 5x the bare floor's",
            p1_cpu <= 5 * bare_cpu,
        ),
        Goal(
            "P1",
            "spend requests accepted/s over HTTP, whole system, 32 connections",
            f"{p1['accepted_per_s']:.0f}/s, p99 {p1['p99_ms']:.0f} ms",
            p1["accepted_per_s"] / bare,
            "≥ 0.3x bare floor, ≥ 2x peer, p99 ≤ 100 ms",
            p1["accepted_per_s"] >= 0.3 * bare
            and p1["accepted_per_s"] >= 2 * peer
            and p1["p99_ms"] <= 100,
        ),
        Goal(
            "P2",
            "2xx → hold in reporting's balance",
            f"light p50 {light['p50_ms']} ms, p99 {light['p99_ms']} ms; half load p99 "
            f"{half['p99_ms']} ms",
            None,
            "light p50 ≤ 15, p99 ≤ 50; half load p99 ≤ 150 (ms)",
            light["p50_ms"] <= 15 and light["p99_ms"] <= 50 and half["p99_ms"] <= 150,
        ),
        Goal(
            "P3",
            "projections rebuild, events/s",
            f"{rebuild_rate}/s over {events} events",
            rebuild_rate / copy,
            "≥ 0.25x COPY, on ≥ 1,000,000 events",
            rebuild_rate >= 0.25 * copy and events >= 1_000_000,
        ),
        Goal(
            "P4",
            "audit verify and replay, events/s (the slower)",
            f"{audit_rate}/s",
            audit_rate / 50_000,
            "≥ 50,000/s on ≥ 1,000,000 events",
            audit_rate >= 50_000 and events >= 1_000_000,
        ),
        Goal(
            "P5",
            "batch commands/s (the slowest kind)",
            f"{slowest_batch:.0f}/s",
            slowest_batch / 10_000,
            "≥ 10,000/s",
            slowest_batch >= 10_000,
        ),
        Goal(
            "P6",
            "peak RSS per service at P1's load (MB)",
            ", ".join(f"{k} {v}" for k, v in rss.items()),
            max(rss.values()) / 150,
            "≤ 150 MB each",
            max(rss.values()) <= 150,
        ),
    ]
