"""Every command of the API from many clients at once, checked against an independent model.

Clients share six families of one pilot and issue, in random interleavings: allocations
(some backdated in business time, some in batches, some batches sent twice), top-ups and
cuts, requests under and over the automatic tier (some backdated inside the window, some
outside it or in the future), approvals, rejections, purchases and partial purchases,
refunds, withdrawals, closes, exits, configuration changes (``period_months`` included), and
forgeries: another service's facts published on a topic with its owner's credentials. The
model knows nothing of the services' code: it keeps what each answer
acknowledged -- money allocated, cuts accepted, holds approved, purchases, refunds -- and,
once the system is quiet, checks that

- no family's available balance is below zero in allocation, approval or reporting, and
  no period's allocation is above the cap;
- the three services agree with the model on every family's allocated, committed and spent;
- every acknowledged command's event is in its service's store once and on Kafka once, and
  every stored event is on its topic once;
- reporting's uptake equals the model's;
- every forged record was rejected by every consumer that read it, and moved nothing;
- every answer was one the API allows for it, and a family that had left was refused.

Which of two racing commands wins is the services' to decide, so the model checks outcomes
after the fact rather than predicting them. A seed fixes every draw of every client (the
commands, their order within each client, their amounts); the scheduling between clients is
the machine's. A failure names its seed: ``LEDGER_INTERLEAVINGS_SEEDS=<seed>`` runs it
again. ``make soak`` runs the long version (``LEDGER_INTERLEAVINGS_COMMANDS``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from shared.contracts.allocation import BudgetAllocated
from shared.contracts.approval import RequestApproved
from shared.contracts.spending import PurchaseRecorded
from shared.core.events import DomainEvent
from shared.core.kafka import new_producer
from shared.core.settings import Settings
from tests.e2e.cloudevents_check import every_record_is_a_cloudevent
from tests.e2e.system import Client, System, running_system
from tests.support import connect_service_db, forged_record, quiet, read_topic, wait_for

CAP = 200_000
AUTO_UP_TO = 30_000
BACKDATING_DAYS = 31  # out_of_window sends 45 days back and expects occurred_at_too_old
FAMILIES = tuple(f"mix-{number}" for number in range(6))
CLIENTS = 8
SEEDS = tuple(int(s) for s in os.environ.get("LEDGER_INTERLEAVINGS_SEEDS", "11").split(","))
ARTEFACTS = Path(".local/artefacts")  # each run's answers, counted
COMMANDS = int(os.environ.get("LEDGER_INTERLEAVINGS_COMMANDS", "400"))
START = 100_000  # each family's first allocation

# How often each command is drawn.
WEIGHTS = {
    "allocate": 3,
    "top_up": 2,
    "cut": 3,
    "request": 10,
    "backdated": 2,
    "out_of_window": 1,
    "decide": 4,
    "purchase": 6,
    "refund": 2,
    "withdraw": 1,
    "close": 2,
    "exit": 1,
    "configure": 1,
    "batch": 2,
    "forge": 1,
}


@dataclass
class Request:
    """One spend request as its answers acknowledged it."""

    request_id: str
    family: str
    amount: int
    status: str
    approved: int = 0
    ever_approved: bool = False
    purchases: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)

    @property
    def purchased(self) -> int:
        return sum(self.purchases.values())

    @property
    def held(self) -> int:
        return self.approved - self.purchased if self.status == "approved" else 0

    @property
    def spent(self) -> int:
        return self.purchased - sum(self.refunds.values())


@dataclass
class Family:
    """One family as its answers acknowledged it."""

    given: int = 0  # allocations and top-ups
    cut: int = 0  # cuts approval accepted
    version: int = 0  # the latest allocation stream version an answer named
    exiting: bool = False  # an exit was sent
    exited: bool = False  # an exit was acknowledged


@dataclass
class Model:
    """The ledger as the plainest bookkeeping of acknowledged answers."""

    families: dict[str, Family] = field(default_factory=lambda: {f: Family() for f in FAMILIES})
    requests: list[Request] = field(default_factory=list)
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (service, event id)
    answers: Counter[str] = field(default_factory=Counter)
    forged: dict[str, str] = field(default_factory=dict)  # forged event id -> its topic

    def balance(self, family: str) -> tuple[int, int, int]:
        """Allocated, committed and spent."""
        mine = [r for r in self.requests if r.family == family]
        allocated = self.families[family].given - self.families[family].cut
        return allocated, sum(r.held for r in mine), sum(r.spent for r in mine)


class Mix:
    """One client's seeded script, run against the shared model."""

    def __init__(
        self, system: System, settings: Settings, model: Model, seed: int, client: int
    ) -> None:
        self.system = system
        self.system_settings = settings
        self.model = model
        self.chance = random.Random(f"{seed}:{client}")
        self.mine: list[Request] = []

    async def run(self, commands: int) -> None:
        names, weights = zip(*WEIGHTS.items(), strict=True)
        for _ in range(commands):
            name = self.chance.choices(names, weights)[0]
            await getattr(self, name)()

    def _family(self) -> tuple[str, Family]:
        name = self.chance.choice(FAMILIES)
        return name, self.model.families[name]

    def _answer(self, command: str, status: int, body: dict[str, Any], *allowed: str) -> str:
        """The answer's code (or status); fail unless the API allows it for the command."""
        outcome = str(body.get("code", status)) if status >= 400 else str(status)
        self.model.answers[f"{command} {outcome}"] += 1
        assert outcome in allowed, f"{command} answered {status} {body}"
        return outcome

    async def _post(self, client: Client, path: str, body: dict[str, Any], headers: Any) -> Any:
        response = await client.post(path, json=body, headers=headers)
        return response.status, await response.json()

    # Allocation

    async def allocate(self) -> None:
        await self._give("allocations", {"amount_pence": self.chance.randint(1_000, 40_000)})

    async def top_up(self) -> None:
        body = {"delta_pence": self.chance.randint(1_000, 20_000), "reason": "more need"}
        await self._give("adjustments", body)

    async def _give(self, what: str, body: dict[str, Any]) -> None:
        name, family = self._family()
        had_left = family.exited
        if self.chance.random() < 0.3:  # business time, backdated inside the window
            body = {**body, "occurred_at": self._backdated()}
        status, answer = await self._post(
            self.system.allocation,
            f"/pilots/wigan/families/{name}/{what}",
            body,
            self.system.admin(),
        )
        self._given(what, family, had_left, body, status, answer)

    def _given(
        self,
        what: str,
        family: Family,
        had_left: bool,
        body: dict[str, Any],
        status: int,
        answer: dict[str, Any],
    ) -> None:
        allowed = _unless_exited(family, had_left, "201", "exceeds_family_cap")
        if self._answer(what, status, answer, *allowed) == "201":
            family.given += body.get("amount_pence", body.get("delta_pence", 0))
            family.version = max(family.version, answer["stream_version"])
            self.model.acknowledged.append(("allocation", answer["event_id"]))

    def _backdated(self) -> str:
        return (datetime.now(UTC) - timedelta(days=self.chance.randint(1, 20))).isoformat()

    async def batch(self) -> None:
        """Allocations for several families in one batch, as a case system syncs them; some
        sent again, as after a dropped connection: each line answers as its own request
        would, a line applied replays its answer, applying nothing twice, and a line refused
        (which recorded nothing) is judged afresh."""
        names = self.chance.sample(FAMILIES, self.chance.randint(2, 4))
        self.batches = getattr(self, "batches", 0) + 1
        lines: list[dict[str, Any]] = [
            {
                "method": "POST",
                "path": f"/pilots/wigan/families/{name}/allocations",
                "idempotency_key": f"{id(self)}-{self.batches}-{name}",
                "body": {
                    "amount_pence": self.chance.randint(1_000, 30_000),
                    **({"occurred_at": self._backdated()} if self.chance.random() < 0.3 else {}),
                },
            }
            for name in names
        ]
        left = {name: self.model.families[name].exited for name in names}
        answers = await self._batch(lines)
        for name, line, answer in zip(names, lines, answers, strict=True):
            family = self.model.families[name]
            self._given("batch", family, left[name], line["body"], answer["status"], answer["body"])
        if self.chance.random() < 0.3:
            left = {name: self.model.families[name].exited for name in names}
            again = await self._batch(lines)
            for name, line, first, answer in zip(names, lines, answers, again, strict=True):
                self.model.answers[f"batch again replayed={answer['replayed']}"] += 1
                if first["status"] == 201:
                    assert (answer["status"], answer["body"], answer["replayed"]) == (
                        201,
                        first["body"],
                        True,
                    )
                else:
                    family = self.model.families[name]
                    self._given(
                        "batch again",
                        family,
                        left[name],
                        line["body"],
                        answer["status"],
                        answer["body"],
                    )

    async def _batch(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await self.system.allocation.post(
            "/pilots/wigan/batches",
            data="".join(json.dumps(line) + "\n" for line in lines),
            headers={**self.system.admin(), "Content-Type": "application/x-ndjson"},
        )
        assert response.status == 200, await response.text()
        return [json.loads(line) for line in (await response.text()).splitlines()]

    async def forge(self) -> None:
        """A holder of a service's Kafka credentials publishes, on that service's topic, a
        fact only another service may decide: money for a family, an approval, a purchase.
        Every consumer must reject it, and the books must not move."""
        name, _ = self._family()
        topic, source, event = self.chance.choice(_forgeries(name, self.chance))
        key, value = forged_record(
            source, event, f"{_STREAMS[topic]}:wigan:{uuid4()}", "wigan", name
        )
        producer = new_producer(self.system_settings.kafka, "forger")
        await producer.start()
        try:
            await producer.send_and_wait(
                self.system_settings.topic(topic),
                value=value,
                key=key,
                # dressed as the relay dresses a record: nothing but its content tells
                headers=[
                    ("content-type", b"application/cloudevents+json"),
                    ("type", event.event_type.encode()),
                ],
            )
        finally:
            await producer.stop()
        self.model.forged[json.loads(value)["id"]] = topic
        self.model.answers[f"forge {event.event_type} on {topic}"] += 1

    async def cut(self) -> None:
        name, family = self._family()
        had_left = family.exited
        amount = self.chance.randint(1_000, 30_000)
        path = f"/pilots/wigan/families/{name}/adjustments"
        body = {"delta_pence": -amount, "reason": "budget review"}
        status, answer = await self._post(self.system.allocation, path, body, self.system.admin())
        allowed = _unless_exited(family, had_left, "202", "exceeds_allocation")
        if self._answer("cut", status, answer, *allowed) != "202":
            return
        family.version = max(family.version, answer["stream_version"])
        self.model.acknowledged.append(("allocation", answer["event_id"]))
        decided: dict[str, Any] = {}

        async def settled() -> bool:
            response = await self.system.allocation.get(
                f"{path}/{answer['adjustment_id']}", headers=self.system.admin()
            )
            decided.update(await response.json())
            return bool(decided["status"] != "pending")

        await wait_for(settled, timeout=30)
        assert decided["status"] in {"accepted", "refused"}, decided
        self.model.answers[f"cut {decided['status']}"] += 1
        if decided["status"] == "accepted":
            family.cut += amount

    async def exit(self) -> None:
        name = self.chance.choice(FAMILIES[-2:])  # the others keep spending to the end
        family = self.model.families[name]
        if family.exiting:
            return
        family.exiting = True
        body = {"reason": "case closed", "exited_on": datetime.now(UTC).date().isoformat()}
        status, answer = await self._post(
            self.system.allocation, f"/pilots/wigan/families/{name}/exit", body, self.system.admin()
        )
        self._answer("exit", status, answer, "200")
        family.version = max(family.version, answer["stream_version"])
        family.exited = True
        self.model.acknowledged.append(("allocation", answer["event_id"]))

    async def configure(self) -> None:
        await self.system.configure(
            family_cap_pence=CAP,
            backdating_days=BACKDATING_DAYS,
            period_months=self.chance.choice([12, 6, 1]),
            approval_tiers=[
                {"up_to_pence": self.chance.choice([20_000, AUTO_UP_TO]), "approver": "auto"}
            ],
        )
        self.model.answers["configure 200"] += 1

    # Spending and approval

    async def request(self, occurred_at: str | None = None) -> None:
        name, family = self._family()
        had_left = family.exited
        amount = self.chance.choice(  # under and over the automatic tier
            [self.chance.randint(500, 25_000), self.chance.randint(25_000, 60_000)]
        )
        body: dict[str, Any] = {
            "family_id": name,
            "amount_pence": amount,
            "category": "practical",
            "purpose": "what the family needs",
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": family.version or None,
        }
        if occurred_at is not None:
            body["occurred_at"] = occurred_at
        status, answer = await self._post(
            self.system.spending, "/pilots/wigan/spend-requests", body, self.system.worker()
        )
        allowed = _unless_exited(family, had_left, "202")
        if self._answer("request", status, answer, *allowed) != "202":
            return
        seen = await self.system.settled(
            answer["request_id"], "approved", "rejected", "awaiting_approval", timeout=30
        )
        request = Request(answer["request_id"], name, amount, seen["status"])
        if seen["status"] == "approved":
            request.approved, request.ever_approved = seen["approved_pence"], True
        self.model.requests.append(request)
        self.mine.append(request)

    async def backdated(self) -> None:
        days = self.chance.randint(1, 20)
        await self.request((datetime.now(UTC) - timedelta(days=days)).isoformat())

    async def out_of_window(self) -> None:
        name = self.chance.choice(FAMILIES[:-2])  # never exited: one refusal to expect
        late = self.chance.random() < 0.5
        moment = datetime.now(UTC) + (timedelta(hours=2) if late else -timedelta(days=45))
        body = {
            "family_id": name,
            "amount_pence": 1_000,
            "category": "practical",
            "purpose": "out of time",
            "requested_by": "sw-1",
            "family_involved": True,
            "occurred_at": moment.isoformat(),
        }
        status, answer = await self._post(
            self.system.spending, "/pilots/wigan/spend-requests", body, self.system.worker()
        )
        self._answer(
            "out_of_window",
            status,
            answer,
            "occurred_at_in_future" if late else "occurred_at_too_old",
        )

    def _pick(self, *statuses: str) -> Request | None:
        matching = [r for r in self.mine if r.status in statuses]
        return self.chance.choice(matching) if matching else None

    async def decide(self) -> None:
        request = self._pick("awaiting_approval")
        if request is None:
            return
        path = f"/pilots/wigan/spend-requests/{request.request_id}"
        if self.chance.random() < 0.7:
            status, answer = await self._post(
                self.system.approval, f"{path}/approve", {}, self.system.manager()
            )
            if self._answer("approve", status, answer, "200", "insufficient_funds") == "200":
                request.status, request.approved, request.ever_approved = (
                    "approved",
                    request.amount,
                    True,
                )
                await self.system.settled(request.request_id, "approved")
                return
        status, answer = await self._post(
            self.system.approval, f"{path}/reject", {"reason": "not now"}, self.system.manager()
        )
        self._answer("reject", status, answer, "200")
        request.status = "rejected"

    async def purchase(self) -> None:
        request = self._pick("approved")
        if request is None or request.purchased == request.approved:
            return
        left = request.approved - request.purchased
        amount = left if self.chance.random() < 0.5 else self.chance.randint(1, left)
        status, answer = await self._post(
            self.system.spending,
            f"/pilots/wigan/spend-requests/{request.request_id}/purchases",
            {"amount_pence": amount, "purchased_on": _today(), "method": "card"},
            self.system.finance(),
        )
        self._answer("purchase", status, answer, "201")
        request.purchases[answer["purchase_id"]] = amount

    async def refund(self) -> None:
        bought = [
            (request, purchase, amount - request.refunds.get(purchase, 0))
            for request in self.mine
            for purchase, amount in request.purchases.items()
            if amount > request.refunds.get(purchase, 0)
        ]
        if not bought:
            return
        request, purchase, left = self.chance.choice(bought)
        amount = self.chance.randint(1, left)
        status, answer = await self._post(
            self.system.spending,
            f"/pilots/wigan/purchases/{purchase}/refunds",
            {"amount_pence": amount, "reason": "returned"},
            self.system.finance(),
        )
        self._answer("refund", status, answer, "201")
        request.refunds[purchase] = request.refunds.get(purchase, 0) + amount

    async def withdraw(self) -> None:
        request = self._pick("approved", "awaiting_approval")
        if request is None or request.purchases:
            return
        await self._end(request, "withdraw", {"reason": "not needed"}, "withdrawn")

    async def close(self) -> None:
        request = self._pick("approved")
        if request is not None:
            await self._end(request, "close", {}, "closed")

    async def _end(self, request: Request, verb: str, body: dict[str, Any], status: str) -> None:
        code, answer = await self._post(
            self.system.spending,
            f"/pilots/wigan/spend-requests/{request.request_id}/{verb}",
            body,
            self.system.worker(),
        )
        self._answer(verb, code, answer, "200")
        request.status = status


def _unless_exited(family: Family, had_left: bool, *answers: str) -> list[str]:
    """What a command for the family may be answered, judged once its answer is back.

    If the family's exit was acknowledged before the command was sent (``had_left``), only
    family_exited. If an exit was sent at any time before the answer came back, it may have
    landed first, so family_exited too: judging that when the command was sent missed an exit
    another client sent while this command was in flight (seed 11 saw one win).
    """
    if had_left:
        return ["family_exited"]
    return [*answers, "family_exited"] if family.exiting else list(answers)


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        yield system


@pytest.mark.parametrize("seed", SEEDS)
async def test_every_interleaving_keeps_the_books(
    system: System, settings: Settings, seed: int
) -> None:
    """Many clients, every command, one model: the invariants hold after quiescence."""
    try:
        await _run(system, settings, seed)
    except AssertionError as error:
        raise AssertionError(f"seed {seed} (LEDGER_INTERLEAVINGS_SEEDS={seed}): {error}") from error


async def _run(system: System, settings: Settings, seed: int) -> None:
    model = Model()
    await system.configure(
        family_cap_pence=CAP,
        backdating_days=BACKDATING_DAYS,
        approval_tiers=[{"up_to_pence": AUTO_UP_TO, "approver": "auto"}],
    )
    for name in FAMILIES:
        model.families[name].version = await system.enrol(name, allocate=START)
        model.families[name].given = START
    clients = [Mix(system, settings, model, seed, client) for client in range(CLIENTS)]
    await asyncio.gather(*(client.run(COMMANDS // CLIENTS) for client in clients))
    await wait_for(lambda: quiet(settings), timeout=60, interval=0.2)
    await _check_balances(system, settings, model)
    await _check_events(settings, model)
    await _check_uptake(system, model)
    await _check_forgeries_rejected(settings, model)
    await every_record_is_a_cloudevent(settings, f"interleavings-{seed}")
    _keep_summary(seed, model)


def _keep_summary(seed: int, model: Model) -> None:
    """What the run did, counted by command and answer (the soak's report)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    summary = {"seed": seed, "clients": CLIENTS, "answers": dict(sorted(model.answers.items()))}
    (ARTEFACTS / f"interleavings-{seed}.json").write_text(json.dumps(summary, indent=2))


async def _check_balances(system: System, settings: Settings, model: Model) -> None:
    views: dict[str, dict[str, tuple[int, int, int]]] = {}
    for service in ("allocation", "approval", "reporting"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch(
                "SELECT family_id, allocated_pence, held_pence, spent_pence FROM balances "
                "WHERE pilot_id = 'wigan'"
            )
        views[service] = {row["family_id"]: tuple(row.values())[1:] for row in rows}
    for name in FAMILIES:
        expected = model.balance(name)
        response = await system.allocation.get(
            f"/pilots/wigan/families/{name}", headers=system.admin()
        )
        periods = (await response.json())["periods"]
        allocated = sum(period["allocated_pence"] for period in periods)
        assert all(period["allocated_pence"] <= CAP for period in periods), periods
        _, held, spent = views["allocation"].get(name, (0, 0, 0))  # allocation sums holds only
        found = {
            "allocation": (allocated, held, spent),
            "approval": views["approval"].get(name, (0, 0, 0)),
            "reporting": views["reporting"].get(name, (0, 0, 0)),
        }
        for service, figures in found.items():
            assert figures == expected, f"{name}: {service} has {figures}, the model {expected}"
            assert figures[0] - figures[1] - figures[2] >= 0, f"{name}: {service} below zero"


async def _check_events(settings: Settings, model: Model) -> None:
    for service in ("allocation", "spending", "approval"):
        async with connect_service_db(settings, service) as conn:
            stored = {
                str(row["event_id"]) for row in await conn.fetch("SELECT event_id FROM events")
            }
        records = await read_topic(settings, f"ledger.{service}", expect=len(stored))
        published = Counter(record.value["id"] for record in records)
        forged = {i for i, topic in model.forged.items() if topic == f"ledger.{service}"}
        assert forged <= set(published), f"{service}: a forgery did not reach the topic"
        for event_id in forged:
            del published[event_id]
        assert set(published) == stored, f"{service}: the store and the topic differ"
        assert max(published.values()) == 1, f"{service}: an event twice on the topic"
        mine = [event for owner, event in model.acknowledged if owner == service]
        assert set(mine) <= stored, f"{service}: an acknowledged command is not stored"
    async with connect_service_db(settings, "spending") as conn:
        requested = Counter(
            str(row["request_id"])
            for row in await conn.fetch(
                "SELECT envelope->'data'->>'request_id' AS request_id FROM events "
                "WHERE type = 'spend_request.requested'"
            )
        )
    assert requested == Counter(r.request_id for r in model.requests)


async def _check_forgeries_rejected(settings: Settings, model: Model) -> None:
    """Every consumer that read a forged record parked it as rejected, nothing else."""
    for service in ("allocation", "spending", "approval", "reporting"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch("SELECT value, error FROM consumer_parked")
        for row in rows:
            event_id = json.loads(bytes(row["value"]))["id"]
            assert event_id in model.forged, f"{service} parked a true event: {row['error']}"
            assert row["error"].startswith("rejected: "), f"{service}: {row['error']}"


# The kind of stream each topic's owner keeps, on which its forgeries come.
_STREAMS = {
    "ledger.allocation": "family",
    "ledger.spending": "request",
    "ledger.approval": "decision",
}


def _forgeries(family: str, chance: random.Random) -> list[tuple[str, str, DomainEvent]]:
    """A fact of one service, published on another's topic as that other's source."""
    period = {"period_start": date(2026, 1, 5), "period_end": date(2027, 1, 4)}
    money = BudgetAllocated(
        allocation_id=uuid4(),
        amount_pence=chance.randint(100_000, 5_000_000),
        note=None,
        pilot_version=1,
        period_allocated_pence=0,
        **period,
    )
    approved = RequestApproved(
        request_id=uuid4(),
        family_id=family,
        amount_pence=50_000,
        policy_version=1,
        requested_at=datetime.now(UTC),
        decided_at=datetime.now(UTC),
        decided_by="policy",
        approved_pence=50_000,
        rule="auto_tier",
        **period,
    )
    bought = PurchaseRecorded(
        purchase_id=uuid4(),
        request_id=uuid4(),
        amount_pence=1_000,
        purchased_on=date(2026, 2, 1),
        category="practical",
        method="card",
        vendor=None,
        receipt_ref=None,
        **period,
    )
    return [
        ("ledger.spending", "ledger/spending", money),
        ("ledger.approval", "ledger/approval", money),
        ("ledger.allocation", "ledger/allocation", approved),
        ("ledger.spending", "ledger/spending", approved),
        ("ledger.allocation", "ledger/allocation", bought),
        ("ledger.approval", "ledger/approval", bought),
    ]


async def _check_uptake(system: System, model: Model) -> None:
    assert system.reporting is not None
    response = await system.reporting.get("/pilots/wigan/uptake", headers=system.admin())
    figures = (await response.json())["all"]
    balances = [model.balance(name) for name in FAMILIES]
    expected = {
        "requests": len(model.requests),
        "approved": sum(r.ever_approved for r in model.requests),
        "rejected": sum(r.status == "rejected" for r in model.requests),
        "allocated_pence": sum(b[0] for b in balances),
        "spent_pence": sum(b[2] for b in balances),
    }
    assert {key: figures[key] for key in expected} == expected


def _today() -> str:
    """A purchase's day: today, which any backdating window takes."""
    return datetime.now(UTC).date().isoformat()
