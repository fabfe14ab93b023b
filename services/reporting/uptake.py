"""Uptake and evaluation figures, computed from a pilot's recorded events (pure).

Definitions (also in the OpenAPI document): a family "with spend" has purchases minus
refunds above zero; medians and the share under £20 are over purchases (not refunds);
spend against forecast is net spend / (families in the treatment arm x forecast per family),
as the control arm gets no budget; time to
decision runs from the request to its first approval or rejection (a referral to a manager
is not a decision); the median transaction is the lower median, so it stays whole pence.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import decode
from shared.contracts.allocation import (
    BudgetAdjusted,
    BudgetAllocated,
    BudgetDisclosed,
    FamilyEnrolled,
    FamilyExited,
    OutcomeRecorded,
)
from shared.contracts.approval import (
    BudgetReduced,
    DecisionMade,
    RequestApproved,
    RequestRejected,
)
from shared.contracts.balances import movement
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded, SpendRequested
from shared.core.events import Envelope

__all__ = [
    "SMALL_CELL",
    "Facts",
    "Figures",
    "by_team",
    "compute",
    "gather",
    "hours_to_decision",
    "hours_to_decision_by_family",
    "small_cell",
    "spent_by_category",
    "spent_by_category_by_family",
]

SMALL_CELL = 5


@dataclass
class _Family:
    arm: str = "treatment"
    requested: bool = False
    net_spend: int = 0
    told: bool = False
    allocated: int = 0  # every period's, net of accepted cuts
    stratum: str | None = None
    team: str = ""
    enrolled_on: date | None = None
    exited_on: date | None = None
    outcomes: dict[str, date] = field(default_factory=dict)  # each outcome's first date


class Figures(BaseModel):
    """The figures of a pilot, or of one arm of it. Published with small cells suppressed
    (:func:`suppress`), a count of 1 to 4 families reads "<5" and a figure that rests on so
    few families, or that would give one away, reads null."""

    model_config = ConfigDict(frozen=True)

    families_enrolled: int | str | None = Field(0, description="Families enrolled.")
    families_with_request: int | str | None = Field(0, description="Families with a spend request.")
    families_with_spend: int | str | None = Field(
        0, description="Families whose purchases minus refunds are above zero."
    )
    uptake_rate: float | None = Field(None, description="families_with_spend / families_enrolled.")
    requests: int | None = Field(0, description="Spend requests made.")
    approved: int | None = Field(
        0, description="Requests approved (automatically or by a manager)."
    )
    rejected: int | None = Field(
        0, description="Requests rejected (insufficient funds or by a manager)."
    )
    allocated_pence: int | None = Field(
        0, description="Allocations and top-ups less the cuts approval accepted, every period."
    )
    spent_pence: int | None = Field(0, description="Purchases minus refunds.")
    spend_vs_forecast: float | None = Field(
        None,
        description="spent_pence / (families in the treatment arm x forecast per family): "
        "the control arm gets no budget, so it has none (null).",
    )
    median_transaction_pence: int | None = Field(
        None, description="Lower median of purchase amounts (refunds excluded)."
    )
    share_transactions_under_2000_pence: float | None = Field(
        None, description="Share of purchases under £20."
    )
    spent_by_category_pence: dict[str, int | None] | None = Field(
        default_factory=dict,
        description="Purchases minus refunds by category (null: hidden, as it rests on "
        "fewer than five families or would give one away).",
    )
    median_hours_to_decision: float | None = Field(
        None, description="Median hours from request to its first approval or rejection."
    )
    share_requests_family_involved: float | None = Field(
        None, description="Share of requests made with the family involved."
    )
    share_families_told_budget: float | None = Field(
        None, description="Share of families told what their budget is."
    )
    outcomes: dict[str, int | str | None] = Field(
        default_factory=dict, description="Families' recorded outcomes, counted by outcome."
    )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Facts:
    """What the figures (and the dashboard's charts) are counted from, in one pass."""

    families: dict[str, _Family] = field(default_factory=lambda: defaultdict(_Family))
    requests: dict[UUID, tuple[str, bool, datetime]] = field(default_factory=dict)
    decided: dict[UUID, RequestApproved | RequestRejected] = field(default_factory=dict)  # first
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # family, approved|rejected
    # family, pence, category, day (a purchase's date; a refund's date of record)
    purchases: list[tuple[str, int, str, date]] = field(default_factory=list)
    refunds: list[tuple[str, int, str, date]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def add(self, envelope: Envelope) -> None:
        """Count one recorded event (types that no figure counts are passed over)."""
        family_id = envelope.family_id or ""
        family = self.families[family_id] if family_id else None
        match decode(envelope):
            case OutcomeRecorded() as event:
                self.outcomes.append((family_id, event.outcome))
                if family is not None:
                    family.outcomes.setdefault(event.outcome, event.occurred_on)
            case RequestApproved() | RequestRejected() as event:
                verdict = "approved" if isinstance(event, RequestApproved) else "rejected"
                self.verdicts.append((family_id, verdict))
                first = self.decided.get(event.request_id)
                if first is None or event.decided_at < first.decided_at:
                    self.decided[event.request_id] = event
            case event if family is not None:
                self._add_to_family(envelope, family, event)

    def _add_to_family(self, envelope: Envelope, family: _Family, event: object) -> None:
        family_id = envelope.family_id or ""
        match event:
            case FamilyEnrolled():
                family.arm, family.stratum, family.team = event.arm, event.stratum, event.team
                family.enrolled_on = event.enrolled_on
            case FamilyExited():
                family.exited_on = event.exited_on
            case BudgetAllocated() | BudgetAdjusted() | BudgetReduced():
                move = movement(event)
                assert move is not None
                family.allocated += move.allocated_pence  # the balances' rule
            case BudgetDisclosed():
                family.told = True
            case SpendRequested():
                family.requested = True
                self.requests[event.request_id] = (
                    family_id,
                    event.family_involved,
                    envelope.time,  # record time, as a decision's: time to decision is one clock
                )
            case PurchaseRecorded():
                line = (family_id, event.amount_pence, event.category, event.purchased_on)
                self.purchases.append(line)
                family.net_spend += event.amount_pence
            case PurchaseRefunded():
                day = envelope.occurred_at.date()  # its business day, as a purchase's purchased_on
                self.refunds.append((family_id, event.amount_pence, event.category, day))
                family.net_spend -= event.amount_pence


def gather(events: Iterable[Envelope]) -> Facts:
    """The facts of a pilot's events, given in recorded order."""
    facts = Facts()
    for event in events:
        facts.add(event)
    return facts


def compute(facts: Facts, forecast_pence: int | None) -> dict[str, Figures]:
    """Figures for the whole pilot (key ``all``) and for each arm when families differ."""
    arms = sorted({family.arm for family in facts.families.values()})
    scopes: dict[str, set[str]] = {"all": set(facts.families)}
    if arms != ["treatment"]:
        for arm in arms:
            scopes[arm] = {f for f, family in facts.families.items() if family.arm == arm}
    return {scope: _figures(facts, members, forecast_pence) for scope, members in scopes.items()}


def _figures(facts: Facts, members: set[str], forecast_pence: int | None) -> Figures:
    families = [facts.families[f] for f in members]
    requests = {r: v for r, v in facts.requests.items() if v[0] in members}
    amounts = [amount for f, amount, _, _ in facts.purchases if f in members]
    hours = hours_to_decision(facts, members)
    enrolled = len(families)
    treated = sum(family.arm == "treatment" for family in families)
    spent = sum(family.net_spend for family in families)
    with_spend = sum(family.net_spend > 0 for family in families)
    return Figures(
        families_enrolled=enrolled,
        families_with_request=sum(family.requested for family in families),
        families_with_spend=with_spend,
        uptake_rate=_share(with_spend, enrolled),
        requests=len(requests),
        approved=sum(f in members and v == "approved" for f, v in facts.verdicts),
        rejected=sum(f in members and v == "rejected" for f, v in facts.verdicts),
        allocated_pence=sum(family.allocated for family in families),
        spent_pence=spent,
        spend_vs_forecast=_share(spent, treated * forecast_pence) if forecast_pence else None,
        median_transaction_pence=statistics.median_low(amounts) if amounts else None,
        share_transactions_under_2000_pence=_share(sum(a < 2000 for a in amounts), len(amounts)),
        spent_by_category_pence=spent_by_category(facts, members),
        median_hours_to_decision=round(statistics.median(hours), 4) if hours else None,
        share_requests_family_involved=_share(
            sum(involved for _, involved, _ in requests.values()), len(requests)
        ),
        share_families_told_budget=_share(sum(family.told for family in families), enrolled),
        outcomes=dict(sorted(Counter(o for f, o in facts.outcomes if f in members).items())),
    )


def by_team(facts: Facts, forecast_pence: int | None) -> dict[str, Figures]:
    """Figures for the whole pilot (key ``all``) and for each team, by team name."""
    teams: dict[str, set[str]] = defaultdict(set)
    for family_id, family in facts.families.items():
        teams[family.team].add(family_id)
    scopes = {"all": set(facts.families), **dict(sorted(teams.items()))}
    return {scope: _figures(facts, members, forecast_pence) for scope, members in scopes.items()}


def spent_by_category(facts: Facts, members: Collection[str]) -> dict[str, int]:
    """Purchases minus refunds of these families, per category, in category order."""
    categories: Counter[str] = Counter()
    for family, amount, category, _ in facts.purchases:
        if family in members:
            categories[category] += amount
    for family, amount, category, _ in facts.refunds:
        if family in members:
            categories[category] -= amount
    return dict(sorted(categories.items()))


def spent_by_category_by_family(facts: Facts) -> dict[str, dict[str, int]]:
    """:func:`spent_by_category` of every family at once, in one pass."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for family, amount, category, _ in facts.purchases:
        found[family][category] += amount
    for family, amount, category, _ in facts.refunds:
        found[family][category] -= amount
    return {family: dict(sorted(counts.items())) for family, counts in found.items()}


def hours_to_decision(facts: Facts, members: Collection[str]) -> list[float]:
    """Hours from each decided request of these families to its first decision."""
    return [hours for family, hours in hours_to_decision_by_family(facts) if family in members]


def hours_to_decide(requested_at: datetime, decision: DecisionMade) -> float:
    """Hours from a request to its decision, in record time (a request's occurred_at is
    business time, which a migration backdates by months: measured from it, a decision taken
    in milliseconds took 1,204 hours), read from one clock: approval's, from when it
    recorded the request (the decision's received_at) to its decision. The Kafka hop before
    it, milliseconds (an outage's length during one), is not in it. A decision recorded
    before received_at was kept is measured from ``requested_at``, when spending recorded
    the request, on spending's clock: where approval's ran behind it, such a decision
    counts as taking no time, never less."""
    start = requested_at if decision.received_at is None else decision.received_at
    return max(0.0, (decision.decided_at - start).total_seconds() / 3600)


def hours_to_decision_by_family(facts: Facts) -> Iterator[tuple[str, float]]:
    """Each decided request's family and hours from the request to its first decision."""
    for request, (family, _, at) in facts.requests.items():
        if request in facts.decided:
            yield family, hours_to_decide(at, facts.decided[request])


def small_cell(value: int | str) -> int | str:
    """A count of families as published: 1 to 4 shown as "<5"."""
    return "<5" if isinstance(value, int) and 0 < value < SMALL_CELL else value
