"""A seeded pilot simulated through HTTP; reporting's figures against the test's own books.

The test keeps its own account of everything it posts (a small model of the pilot: arms,
allocations, requests, decisions, purchases, refunds, closes, disclosures, outcomes) and
computes every uptake figure, every balance and every CSV row from that account alone.
Times to decision cannot be known to the millisecond from outside, so the test bounds each
one by the moments before and after it acted, and checks the median lies within the bounds.
"""

from __future__ import annotations

import csv
import io
import random
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.core.settings import Settings
from tests.conftest import Infrastructure
from tests.e2e.cloudevents_check import console_consumer_headers, every_record_is_a_cloudevent
from tests.e2e.system import System, running_system
from tests.support import reporting_caught_up, wait_for

SEED = 20_261_123
FAMILIES = 24
REQUESTS = 60
AUTO_UP_TO = 5_000
FORECAST = 50_000
CATEGORIES = ("practical", "therapeutic", "relationship", "other")
OUTCOMES = ("remained_at_home", "entered_care", "reunified")


@dataclass
class Family:
    arm: str
    allocated: int = 0
    held: int = 0
    spent: int = 0
    requested: bool = False
    told: bool = False
    outcome: str | None = None

    @property
    def available(self) -> int:
        return self.allocated - self.held - self.spent


@dataclass
class Books:
    """Everything the test posted, as it understands it."""

    families: dict[str, Family] = field(default_factory=dict)
    requests: list[tuple[str, bool]] = field(default_factory=list)  # family, involved
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # family, approved|rejected
    hours: list[tuple[float, float]] = field(default_factory=list)  # bounds per decision
    purchases: list[dict[str, str]] = field(default_factory=list)  # as CSV rows
    refunds: list[dict[str, str]] = field(default_factory=list)

    def figures(self, arm: str | None) -> dict[str, Any]:
        members = {f for f, family in self.families.items() if arm in {None, family.arm}}
        families = [self.families[f] for f in members]
        bought = [int(p["amount_pence"]) for p in self.purchases if p["family_id"] in members]
        by_category: Counter[str] = Counter()
        for line in self.purchases + self.refunds:
            if line["family_id"] in members:
                by_category[line["category"]] += int(line["amount_pence"])
        net = {
            f: sum(
                int(line["amount_pence"])
                for line in self.purchases + self.refunds
                if line["family_id"] == f
            )
            for f in members
        }
        enrolled = len(families)
        with_spend = sum(pence > 0 for pence in net.values())
        spent = sum(net.values())
        involved = [i for f, i in self.requests if f in members]

        def share(part: int, whole: int) -> float | None:
            return round(part / whole, 4) if whole else None

        return {
            "families_enrolled": enrolled,
            "families_with_request": sum(family.requested for family in families),
            "families_with_spend": with_spend,
            "uptake_rate": share(with_spend, enrolled),
            "requests": len(involved),
            "approved": sum(f in members and v == "approved" for f, v in self.verdicts),
            "rejected": sum(f in members and v == "rejected" for f, v in self.verdicts),
            "allocated_pence": sum(family.allocated for family in families),
            "spent_pence": spent,
            # Only the treatment arm gets a budget, so only it has a forecast.
            "spend_vs_forecast": share(
                spent, sum(family.arm == "treatment" for family in families) * FORECAST
            ),
            "median_transaction_pence": statistics.median_low(bought) if bought else None,
            "share_transactions_under_2000_pence": share(
                sum(b < 2_000 for b in bought), len(bought)
            ),
            "spent_by_category_pence": dict(sorted(by_category.items())),
            "share_requests_family_involved": share(sum(involved), len(involved)),
            "share_families_told_budget": share(sum(f.told for f in families), enrolled),
            "outcomes": dict(sorted(Counter(f.outcome for f in families if f.outcome).items())),
        }


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure(
            allocation={"mode": "randomised", "treatment_ratio": 0.5, "method": "permuted_blocks"},
            approval_tiers=[{"up_to_pence": AUTO_UP_TO, "approver": "auto"}],
            categories=list(CATEGORIES),
            forecast_spend_per_family_pence=FORECAST,
        )
        yield system


async def ok(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status == status, await response.text()
    return dict(await response.json())


async def simulate(system: System, rng: random.Random) -> Books:  # noqa: C901
    """The pilot's life, one seeded step at a time, kept in the test's books."""
    books = Books()
    for number in range(FAMILIES):
        family_id = f"f{number:02d}"
        enrolled = await ok(
            await system.allocation.post(
                "/pilots/wigan/families",
                json={
                    "family_id": family_id,
                    "team": "t-1",
                    "worker": "sw-1",
                    "enrolled_on": "2026-01-05",
                },
                headers=system.admin(),
            )
        )
        family = books.families[family_id] = Family(enrolled["arm"])
        if family.arm == "treatment":
            amount = rng.choice([20_000, 50_000, 80_000])
            await system.allocate(family_id, amount)
            family.allocated = amount
            if rng.random() < 0.5:
                await ok(
                    await system.allocation.post(
                        f"/pilots/wigan/families/{family_id}/disclosures",
                        json={"disclosed_on": "2026-01-20", "method": "in_person"},
                        headers=system.worker(),
                    )
                )
                family.told = True
    treated = [f for f, family in books.families.items() if family.arm == "treatment"]

    for _ in range(REQUESTS):
        family_id = rng.choice(treated)
        family = books.families[family_id]
        small = rng.random() < 0.8
        amount = rng.randint(300, AUTO_UP_TO) if small else rng.randint(AUTO_UP_TO + 1, 40_000)
        involved = rng.random() < 0.7
        category = rng.choice(CATEGORIES)
        posted_at = datetime.now(UTC)
        request = await ok(
            await system.spending.post(
                "/pilots/wigan/spend-requests",
                json={
                    "family_id": family_id,
                    "amount_pence": amount,
                    "category": category,
                    "purpose": "something the family needs",
                    "requested_by": "sw-1",
                    "family_involved": involved,
                },
                headers=system.worker(),
            ),
            202,
        )
        request_id = request["request_id"]
        family.requested = True
        books.requests.append((family_id, involved))
        affordable = amount <= family.available
        if small or not affordable:
            status = (await system.settled(request_id, "approved", "rejected"))["status"]
            assert status == ("approved" if affordable else "rejected")
            books.hours.append((0.0, _hours(posted_at, datetime.now(UTC))))
        else:
            await system.settled(request_id, "awaiting_approval")
            decided_from = datetime.now(UTC)
            status = "approved" if rng.random() < 0.7 else "rejected"
            path = f"/pilots/wigan/spend-requests/{request_id}/"
            body = {} if status == "approved" else {"reason": "not this time"}
            verb = "approve" if status == "approved" else "reject"
            await ok(
                await system.approval.post(path + verb, json=body, headers=system.manager("m-2")),
                200,
            )
            books.hours.append(
                (_hours(datetime.now(UTC), decided_from), _hours(posted_at, datetime.now(UTC)))
            )
            await system.settled(request_id, status)
        books.verdicts.append((family_id, status))
        if status == "rejected":
            continue
        family.held += amount
        bought = 0
        if rng.random() < 0.85:
            bought = rng.randint(1, amount) if rng.random() < 0.5 else amount
            method = rng.choice(["card", "cash", "invoice", "transfer"])
            purchase = await ok(
                await system.spending.post(
                    f"/pilots/wigan/spend-requests/{request_id}/purchases",
                    json={
                        "amount_pence": bought,
                        "purchased_on": f"2026-0{rng.randint(2, 6)}-1{rng.randint(0, 9)}",
                        "method": method,
                        "vendor": rng.choice(["furniture", "supermarket", "food_and_drink"]),
                    },
                    headers=system.finance(),
                )
            )
            family.held -= bought
            family.spent += bought
            line = {
                "kind": "purchase",
                "family_id": family_id,
                "request_id": request_id,
                "purchase_id": purchase["purchase_id"],
                "category": category,
                "method": method,
                "amount_pence": str(bought),
            }
            books.purchases.append(line)
            if rng.random() < 0.2:
                back = rng.randint(1, bought)
                refund = await ok(
                    await system.spending.post(
                        f"/pilots/wigan/purchases/{purchase['purchase_id']}/refunds",
                        json={"amount_pence": back, "reason": "returned"},
                        headers=system.finance(),
                    )
                )
                family.spent -= back
                books.refunds.append(
                    {
                        **line,
                        "kind": "refund",
                        "refund_id": refund["refund_id"],
                        "amount_pence": str(-back),
                    }
                )
        if bought < amount and rng.random() < 0.5:
            await ok(
                await system.spending.post(
                    f"/pilots/wigan/spend-requests/{request_id}/close",
                    json={},
                    headers=system.worker(),
                ),
                200,
            )
            family.held -= amount - bought  # approval releases what was not bought

    for family_id, family in books.families.items():
        if rng.random() < 0.4:
            family.outcome = rng.choice(OUTCOMES)
            await ok(
                await system.allocation.post(
                    f"/pilots/wigan/families/{family_id}/outcomes",
                    json={"outcome": family.outcome, "occurred_on": "2026-06-30"},
                    headers=system.admin(),
                )
            )
    return books


def _hours(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600)


async def test_a_seeded_pilot_adds_up_in_every_figure_balance_and_row(
    system: System, settings: Settings, infra: Infrastructure
) -> None:
    books = await simulate(system, random.Random(SEED))
    arms = Counter(family.arm for family in books.families.values())
    assert arms["treatment"] > 5
    assert arms["control"] > 5
    assert {v for _, v in books.verdicts} == {"approved", "rejected"}
    assert books.refunds
    await wait_for(lambda: reporting_caught_up(settings), timeout=60)

    # Every event the pilot recorded, read from the topics by clients nobody here wrote.
    seen = await every_record_is_a_cloudevent(settings, "pilot-simulation")
    assert len({kind for _, kind in seen}) >= 12, seen
    printed = await console_consumer_headers(infra.kafka, settings, "ledger.spending")
    assert printed.count("content-type:application/cloudevents+json") == sum(
        n for (topic, _), n in seen.items() if topic == "ledger.spending"
    ), printed[:2000]

    uptake = await ok(await system.reports.get("/pilots/wigan/uptake", headers=system.admin()), 200)
    scopes = {"all": uptake["all"], **uptake["arms"]}
    assert set(scopes) == {"all", "treatment", "control"}
    for scope, figures in scopes.items():
        hours = figures.pop("median_hours_to_decision")
        assert figures == books.figures(None if scope == "all" else scope), scope
        decided = books.hours if scope != "control" else []
        if decided:
            low = statistics.median(bound[0] for bound in decided)
            high = statistics.median(bound[1] for bound in decided)
            assert low - 1e-4 <= hours <= high + 1e-4
        else:
            assert hours is None

    published = await ok(
        await system.reports.get(
            "/pilots/wigan/uptake?suppress_small_cells=true", headers=system.admin()
        ),
        200,
    )
    for scope, figures in {"all": published["all"], **published["arms"]}.items():
        expected = books.figures(None if scope == "all" else scope)
        for name in ("families_enrolled", "families_with_request", "families_with_spend"):
            count = expected[name]
            assert figures[name] == ("<5" if 0 < count < 5 else count), (scope, name)

    for family_id, family in books.families.items():
        if family.arm == "control":
            continue
        balance = await ok(
            await system.reports.get(
                f"/pilots/wigan/families/{family_id}/balance", headers=system.admin()
            ),
            200,
        )
        assert (
            balance["allocated_pence"],
            balance["committed_pence"],
            balance["spent_pence"],
            balance["available_pence"],
        ) == (family.allocated, family.held, family.spent, family.available), family_id

    response = await system.reports.get("/pilots/wigan/transactions.csv", headers=system.finance())
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    columns = (
        "kind",
        "family_id",
        "request_id",
        "purchase_id",
        "category",
        "method",
        "amount_pence",
    )
    assert sorted(tuple(row[c] for c in columns) for row in rows) == sorted(
        tuple(line[c] for c in columns) for line in books.purchases + books.refunds
    )
    refund_ids = {row["refund_id"] for row in rows if row["kind"] == "refund"}
    assert refund_ids == {line["refund_id"] for line in books.refunds}
