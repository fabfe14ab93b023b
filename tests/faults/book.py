"""A case system's book of what it asked the ledger and what the ledger acknowledged, the
load that fills it, and the reconciliation of the book against everything the ledger holds.

The clients do what a careful case system does: every command carries its own
Idempotency-Key and is sent again, with the same key, after a 5xx or a lost connection,
until the ledger acknowledges it. A fault may delay an answer, never change it: after the
fault, every acknowledged command must be in the store once, on the topic, decided once,
in every view, and no family below zero.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shared.core.settings import Settings
from tests.e2e.processes import ServiceProcesses
from tests.e2e.workload import held_by_family
from tests.support import connect_service_db, read_topic, run_ledger

__all__ = ["Book", "Reconciliation", "load", "reconcile"]

BUDGET_PENCE = 4_000_000
# Each request at most £9.99 on a £40,000 budget, under the pilot's automatic tier: approval
# decides every one at once, and none is refused for want of funds.
SPEND_RANGE = (100, 999)


@dataclass
class Book:
    """What was sent, what was answered, and when."""

    # request id -> (family, amount), for every spend request the ledger acknowledged (202)
    spent: dict[str, tuple[str, int]] = field(default_factory=dict)
    # families whose enrolment (with its budget) the ledger acknowledged
    enrolled: set[str] = field(default_factory=set)
    # pence the ledger acknowledged allocating to each family, in every period
    allocated: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # commands, each counted once however often it was sent again
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # "status code" of each 4xx
    connection_errors: int = 0
    # seconds from a command's first attempt to its acknowledgement
    waits: list[float] = field(default_factory=list)
    acknowledged_at: list[float] = field(default_factory=list)  # time.monotonic()

    @property
    def acknowledged(self) -> int:
        return len(self.waits)

    def first_acknowledgement_after(self, moment: float) -> float | None:
        later = [at for at in self.acknowledged_at if at >= moment]
        return min(later) - moment if later else None


async def _until_acknowledged(
    http: aiohttp.ClientSession,
    book: Book,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    acknowledged: int,
) -> dict[str, Any] | None:
    """Send one command until the ledger acknowledges it (its body) or refuses it (None):
    the same key every time."""
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    book.sent += 1
    first = time.monotonic()
    while True:
        book.attempts += 1
        try:
            async with http.post(url, json=body, headers=headers) as response:
                book.statuses[response.status] += 1
                if response.status == acknowledged:
                    book.waits.append(time.monotonic() - first)
                    book.acknowledged_at.append(time.monotonic())
                    return dict(await response.json())
                if response.status < 500:  # refused: counted, and a fault must never cause one
                    problem = await response.json(content_type=None)
                    book.refusals[f"{response.status} {problem.get('code')}"] += 1
                    return None
        except (aiohttp.ClientError, TimeoutError):
            book.connection_errors += 1  # the service is away, stopping or starting
        await asyncio.sleep(0.2)


@asynccontextmanager
async def load(
    http: aiohttp.ClientSession,
    services: ServiceProcesses,
    admin: dict[str, str],
    worker: dict[str, str],
    families: Sequence[str],
    book: Book,
    clients: int = 4,
) -> AsyncIterator[Book]:
    """While the block runs: ``clients`` workers' case systems posting small spend requests
    for random families, and an admin's enrolling a new family with its budget after
    another. Each stops after the command in hand on the way out."""
    stop = asyncio.Event()
    spending = f"{services.url('spending')}/pilots/wigan/spend-requests"
    allocation = f"{services.url('allocation')}/pilots/wigan/families"

    async def spender(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            family, amount = rng.choice(families), rng.randint(*SPEND_RANGE)
            body = {
                "family_id": family,
                "amount_pence": amount,
                "category": "practical",
                "purpose": "a bus pass",
                "requested_by": "sw-1",
                "family_involved": True,
            }
            answer = await _until_acknowledged(http, book, spending, body, worker, 202)
            if answer is not None:
                book.spent[answer["request_id"]] = (family, amount)

    async def enroller() -> None:
        number = 0
        while not stop.is_set():
            family = f"new-{number}"
            number += 1
            body = {
                "family_id": family,
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": "2026-01-05",
            }
            if await _until_acknowledged(http, book, allocation, body, admin, 201) is None:
                continue
            budget = {"amount_pence": BUDGET_PENCE}
            if await _until_acknowledged(
                http, book, f"{allocation}/{family}/allocations", budget, admin, 201
            ):
                book.enrolled.add(family)
                book.allocated[family] = BUDGET_PENCE
            await asyncio.sleep(0.2)  # a family now and then, among the spend requests

    tasks = [asyncio.create_task(spender(seed)) for seed in range(clients)]
    tasks.append(asyncio.create_task(enroller()))
    try:
        yield book
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@dataclass
class Reconciliation:
    """The book against the ledger, once it is quiet again."""

    lost: int  # acknowledged, and missing from a store, the topic or a view
    duplicated: int  # applied more than once anywhere (a topic's second copy excepted)
    redelivered: int  # records a topic holds twice (a relay that died before its delete)
    below_zero: int  # families whose balance any view shows below zero
    audit_verify: int  # ledger audit verify's exit code
    audit_replay: int  # ledger audit replay's exit code (events replayed == events stored)
    problems: list[str]

    @property
    def holds(self) -> bool:
        return not (self.lost or self.duplicated or self.below_zero or self.problems) and (
            self.audit_verify == self.audit_replay == 0
        )


async def _rows(settings: Settings, service: str, query: str) -> list[Any]:
    async with connect_service_db(settings, service) as conn:
        return list(await conn.fetch(query))


async def _undecided(settings: Settings, book: Book, problems: list[str]) -> set[str]:
    """Acknowledged requests that approval has not approved at their amount, or whose
    approval spending's view lacks."""
    missing: set[str] = set()
    decisions = {
        str(row["request_id"]): (row["status"], row["approved_pence"])
        for row in await _rows(settings, "approval", "SELECT * FROM requests")
    }
    spending_saw = {
        str(row["request_id"]): (row["outcome"], row["approved_pence"])
        for row in await _rows(settings, "spending", "SELECT * FROM decision_view")
    }
    for request, (_, amount) in book.spent.items():
        if decisions.get(request) != ("approved", amount):
            missing.add(request)
            problems.append(f"approval: {request} is {decisions.get(request)}")
        if spending_saw.get(request) != ("approved", amount):
            missing.add(request)
            problems.append(f"spending's view: {request} is {spending_saw.get(request)}")
    return missing


async def reconcile(settings: Settings, book: Book) -> Reconciliation:
    """Every acknowledged command against the stores, the topics, approval's decisions,
    spending's and reporting's views, and the auditor's two commands."""
    problems: list[str] = []
    requested = Counter(
        str(row["id"])
        for row in await _rows(
            settings,
            "spending",
            "SELECT envelope->'data'->>'request_id' AS id FROM events "
            "WHERE envelope->>'type' = 'spend_request.requested'",
        )
    )
    acknowledged = set(book.spent)
    lost = acknowledged - set(requested)
    duplicated = {request for request, count in requested.items() if count > 1}
    unasked = set(requested) - acknowledged
    if unasked:
        problems.append(f"{len(unasked)} requests recorded that no client was answered for")

    lost |= await _undecided(settings, book, problems)
    decided = Counter(
        str(row["id"])
        for row in await _rows(
            settings,
            "approval",
            "SELECT envelope->'data'->>'request_id' AS id FROM events "
            "WHERE envelope->>'type' = 'decision.approved'",
        )
    )
    duplicated |= {request for request, count in decided.items() if count > 1}

    enrolled = Counter(
        str(row["family_id"])
        for row in await _rows(
            settings, "allocation", "SELECT family_id FROM events WHERE type = 'family.enrolled'"
        )
    )
    lost |= book.enrolled - set(enrolled)
    duplicated |= {family for family, count in enrolled.items() if count > 1}

    balances = await _rows(settings, "reporting", "SELECT * FROM balances")  # a row a period
    held: Counter[str] = Counter()
    budgets: Counter[str] = Counter()
    for row in balances:
        held[row["family_id"]] += row["held_pence"]
        budgets[row["family_id"]] += row["allocated_pence"]
    if +held != held_by_family(book.spent):
        problems.append("reporting's held amounts differ from the book")
    for family, budget in book.allocated.items():
        if budgets[family] != budget:
            lost.add(family)
            problems.append(f"reporting: {family}'s budget is {budgets[family]}, not {budget}")
    below_zero = sum(
        1 for row in balances if row["allocated_pence"] - row["held_pence"] - row["spent_pence"] < 0
    )

    stored: set[str] = set()
    for service in ("allocation", "spending", "approval"):
        stored |= {
            str(row["event_id"])
            for row in await _rows(settings, service, "SELECT event_id FROM events")
        }
    on_topics: Counter[str] = Counter()
    for topic in ("ledger.allocation", "ledger.spending", "ledger.approval"):
        on_topics.update(str(r.envelope.id) for r in await read_topic(settings, topic))

    if set(on_topics) != stored:
        problems.append("the topics and the stores hold different events")
    redelivered = sum(count - 1 for count in on_topics.values())

    verify, _ = await run_ledger(settings, "audit", "verify")
    replay, replayed = await run_ledger(settings, "audit", "replay", "--pilot", "wigan")
    if replay == 0 and len(replayed.splitlines()) != len(stored):
        problems.append(f"audit replay printed {len(replayed.splitlines())} of {len(stored)}")
        replay = 1
    return Reconciliation(
        lost=len(lost),
        duplicated=len(duplicated),
        redelivered=redelivered,
        below_zero=below_zero,
        audit_verify=verify,
        audit_replay=replay,
        problems=problems[:20],
    )
