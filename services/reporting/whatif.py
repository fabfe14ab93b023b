"""Policy what-if: a pilot's recorded requests replayed under a proposed configuration (pure).

"What if workers could approve up to £1,000 themselves?" Each spend request the pilot
recorded is judged again, in recorded order, under the proposed tiers, family cap and
categories, using only recorded facts; nothing is recorded by asking. Under the proposal a
request is:

- refused ``category_not_allowed`` when its category is not among the proposed ones;
- refused ``over_family_cap`` when the requests approved before it in its family's period,
  and it, come to more than the family was allocated that period, capped at the proposed
  family cap (the money a lower cap would not have given);
- otherwise decided by the tier its amount falls in (``auto`` or ``manager``).

Hours to decision: a request decided as it was recorded keeps its recorded hours; one moved
to an auto tier takes the recorded automatic decisions' median; one moved to a manager takes
the recorded manager decisions' median in its team (the pilot's if its team has none). Spend
against forecast drops the spend on requests the proposal refuses and divides by the
treatment arm's families times the proposed forecast (the control arm gets no budget).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.reporting.uptake import hours_to_decide
from shared.contracts import decode
from shared.contracts.allocation import (
    BudgetAdjusted,
    BudgetAllocated,
    FamilyEnrolled,
    PilotConfig,
    approver_for,
)
from shared.contracts.approval import (
    BudgetReduced,
    RequestApproved,
    RequestReferred,
    RequestRejected,
)
from shared.contracts.balances import movement
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded, SpendRequested
from shared.core.events import Envelope

__all__ = ["Outcomes", "Refusal", "Scope", "WhatIf", "what_if"]

Approver = Literal["auto", "manager"]
Reason = Literal["category_not_allowed", "over_family_cap"]


class Outcomes(BaseModel):
    """How a scope's requests are (or would be) decided, and what follows."""

    model_config = ConfigDict(frozen=True)

    decided_automatically: int = Field(description="Requests an auto tier decides.")
    referred_to_a_manager: int = Field(description="Requests a manager decides.")
    refused: int = Field(description="Requests refused before any tier: see refusals.")
    median_hours_to_decision: float | None = Field(
        description="Median hours from request to decision, of the requests decided."
    )
    spent_pence: int = Field(description="Purchases minus refunds on the requests not refused.")
    spend_vs_forecast: float | None = Field(
        description="spent_pence / (treatment families x forecast per family)."
    )


class Scope(BaseModel):
    """The pilot, an arm or a team: as recorded, and under the proposal."""

    model_config = ConfigDict(frozen=True)

    scope: str = Field(description="all, arm:<arm> or team:<team>.")
    requests: int
    recorded: Outcomes
    proposed: Outcomes


class Refusal(BaseModel):
    """A recorded request the proposal would refuse, and why."""

    model_config = ConfigDict(frozen=True)

    request_id: UUID
    team: str
    arm: str
    amount_pence: int
    category: str
    reason: Reason


class WhatIf(BaseModel):
    """The answer: per scope, recorded against proposed; and each request refused."""

    model_config = ConfigDict(frozen=True)

    pilot_id: str
    requests: int
    scopes: tuple[Scope, ...]
    refusals: tuple[Refusal, ...]


@dataclass
class _Request:
    request_id: UUID
    family: str
    team: str
    amount: int
    category: str
    period: date
    requested_at: datetime
    recorded: Literal["auto", "manager", "refused"] = "manager"
    decision: RequestApproved | RequestRejected | None = None  # the first
    spent: int = 0

    @property
    def hours(self) -> float | None:
        if self.decision is None:
            return None
        return hours_to_decide(self.requested_at, self.decision)


@dataclass
class _Facts:
    arms: dict[str, str] = field(default_factory=dict)  # family -> arm
    teams: dict[str, str] = field(default_factory=dict)  # family -> team
    allocated: dict[tuple[str, date], int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[UUID, _Request] = field(default_factory=dict)  # in recorded order

    def add(self, envelope: Envelope) -> None:
        family = envelope.family_id or ""
        match decode(envelope):
            case FamilyEnrolled() as event:
                self.arms[family], self.teams[family] = event.arm, event.team
            case BudgetAllocated() | BudgetAdjusted() | BudgetReduced() as event:
                move = movement(event)
                assert move is not None
                self.allocated[family, event.period_start] += move.allocated_pence
            case SpendRequested() as event:
                self.requests[event.request_id] = _Request(
                    event.request_id,
                    family,
                    event.team,
                    event.amount_pence,
                    event.category,
                    event.period_start,
                    envelope.time,  # record time, as a decision's decided_at
                )
            case RequestReferred() as event if event.request_id in self.requests:
                self.requests[event.request_id].recorded = "manager"
            case (RequestApproved() | RequestRejected()) as event if (
                event.request_id in self.requests
            ):
                request = self.requests[event.request_id]
                if request.decision is None:  # the first decision counts
                    request.decision = event
                    request.recorded = _recorded(event)
            case PurchaseRecorded() as event if event.request_id in self.requests:
                self.requests[event.request_id].spent += event.amount_pence
            case PurchaseRefunded() as event if event.request_id in self.requests:
                self.requests[event.request_id].spent -= event.amount_pence


def _recorded(event: RequestApproved | RequestRejected) -> Literal["auto", "manager", "refused"]:
    if isinstance(event, RequestApproved):
        return "auto" if event.rule == "auto_tier" else "manager"
    return "refused" if event.reason_code == "insufficient_funds" else "manager"


def _judge(facts: _Facts, proposal: PilotConfig) -> tuple[dict[UUID, Approver], dict[UUID, Reason]]:
    """Each request under the proposal, in recorded order (the family cap runs through it):
    who would decide it, or why it would be refused."""
    approved: dict[tuple[str, date], int] = defaultdict(int)
    deciders: dict[UUID, Approver] = {}
    refused: dict[UUID, Reason] = {}
    for request in facts.requests.values():
        key = (request.family, request.period)
        allowed = min(facts.allocated[key], proposal.family_cap_pence)
        if request.category not in proposal.categories:
            refused[request.request_id] = "category_not_allowed"
        elif approved[key] + request.amount > allowed:
            refused[request.request_id] = "over_family_cap"
        else:
            deciders[request.request_id] = approver_for(proposal.approval_tiers, request.amount)
            approved[key] += request.amount
    return deciders, refused


def _families_of(facts: _Facts) -> dict[str, set[str]]:
    """The families of each scope: the pilot, each arm, each team (one pass, not one per
    family)."""
    found: dict[str, set[str]] = defaultdict(set)
    found["all"] = set(facts.arms)
    for family, arm in facts.arms.items():
        found[f"arm:{arm}"].add(family)
    for family, team in facts.teams.items():
        found[f"team:{team}"].add(family)
    return found


def _median(values: Iterable[float | None]) -> float | None:
    found = [value for value in values if value is not None]
    return round(statistics.median(found), 4) if found else None


def what_if(
    pilot_id: str, events: Iterable[Envelope], current: PilotConfig, proposal: PilotConfig
) -> WhatIf:
    """The pilot's recorded requests, decided as recorded and as the proposal would."""
    facts = _Facts()
    for envelope in events:
        facts.add(envelope)
    deciders, reasons = _judge(facts, proposal)
    requests = list(facts.requests.values())
    auto_hours = _median(r.hours for r in requests if r.recorded == "auto") or 0.0
    manager_hours = {
        team: _median(r.hours for r in requests if r.recorded == "manager" and r.team == team)
        for team in {r.team for r in requests}
    }
    pilot_manager_hours = _median(r.hours for r in requests if r.recorded == "manager")

    def proposed_hours(request: _Request) -> float | None:
        decider = deciders.get(request.request_id)
        if decider == request.recorded and request.hours is not None:
            return request.hours  # decided as it was: as long as it took
        match decider:
            case "auto":
                return auto_hours
            case "manager":
                return manager_hours.get(request.team) or pilot_manager_hours
        return None

    arm = {r.request_id: facts.arms.get(r.family, "treatment") for r in requests}
    scopes: dict[str, list[_Request]] = {"all": requests}
    for request in requests:
        scopes.setdefault(f"arm:{arm[request.request_id]}", []).append(request)
    for request in requests:
        scopes.setdefault(f"team:{request.team}", []).append(request)
    families_of = _families_of(facts)

    def outcomes(
        members: list[_Request],
        families: set[str],
        decide: Mapping[UUID, str],
        forecast: int | None,
        hours: dict[UUID, float | None],
    ) -> Outcomes:
        spent = sum(r.spent for r in members if decide[r.request_id] != "refused")
        treated = sum(facts.arms.get(f) == "treatment" for f in families)
        return Outcomes(
            decided_automatically=sum(decide[r.request_id] == "auto" for r in members),
            referred_to_a_manager=sum(decide[r.request_id] == "manager" for r in members),
            refused=sum(decide[r.request_id] == "refused" for r in members),
            median_hours_to_decision=_median(
                hours[r.request_id] for r in members if decide[r.request_id] != "refused"
            ),
            spent_pence=spent,
            spend_vs_forecast=round(spent / (treated * forecast), 4)
            if forecast and treated
            else None,
        )

    recorded = {r.request_id: r.recorded for r in requests}
    proposed = {r.request_id: deciders.get(r.request_id, "refused") for r in requests}
    recorded_hours = {r.request_id: r.hours for r in requests}
    hours = {r.request_id: proposed_hours(r) for r in requests}
    return WhatIf(
        pilot_id=pilot_id,
        requests=len(requests),
        scopes=tuple(
            Scope(
                scope=name,
                requests=len(members),
                recorded=outcomes(
                    members,
                    families_of.get(name, set()),
                    recorded,
                    current.forecast_spend_per_family_pence,
                    recorded_hours,
                ),
                proposed=outcomes(
                    members,
                    families_of.get(name, set()),
                    proposed,
                    proposal.forecast_spend_per_family_pence,
                    hours,
                ),
            )
            for name, members in scopes.items()
        ),
        refusals=tuple(
            Refusal(
                request_id=r.request_id,
                team=r.team,
                arm=arm[r.request_id],
                amount_pence=r.amount,
                category=r.category,
                reason=reasons[r.request_id],
            )
            for r in requests
            if r.request_id in reasons
        ),
    )
