"""Policy what-if: recorded requests judged again under a proposed configuration (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.reporting.whatif import WhatIf, what_if
from shared.contracts.allocation import PilotConfig
from shared.core.events import Envelope
from tests.unit.test_uptake import START, event

CURRENT = PilotConfig.model_validate(
    {
        "name": "P",
        "period_months": 12,
        "family_cap_pence": 200_000,
        "approval_tiers": [{"up_to_pence": 10_000, "approver": "auto"}],
        "categories": ["practical", "therapeutic"],
        "forecast_spend_per_family_pence": 100_000,
    }
)


def proposal(**changes: Any) -> PilotConfig:
    return PilotConfig.model_validate({**CURRENT.model_dump(), **changes})


def request(
    family: str,
    number: int,
    amount: int,
    category: str,
    decision: str,
    hours: float,
    team: str = "t-1",
    spent: int = 0,
) -> list[Envelope]:
    """A request as recorded: its decision after ``hours``, and what was bought against it."""
    rid = f"r{number}"
    at = (START + timedelta(hours=hours)).isoformat()
    made = [
        event(
            "spend_request.requested",
            family,
            request_id=rid,
            amount_pence=amount,
            category=category,
            team=team,
            family_involved=True,
        )
    ]
    if decision == "auto":
        made.append(
            event(
                "decision.approved",
                family,
                request_id=rid,
                decided_at=at,
                approved_pence=amount,
                rule="auto_tier",
            )
        )
    elif decision == "manager":
        made.append(event("decision.referred", family, request_id=rid, team=team))
        made.append(
            event(
                "decision.approved",
                family,
                request_id=rid,
                decided_at=at,
                approved_pence=amount,
                rule="manager",
                decided_by="m-1",
            )
        )
    if spent:
        made.append(
            event(
                "purchase.recorded",
                family,
                request_id=rid,
                amount_pence=spent,
                category=category,
                purchase_id=f"p{number}",
            )
        )
    return made


def pilot() -> list[Envelope]:
    """Two treatment families in two teams and a control family; five requests."""
    events = [
        event("family.enrolled", "a", arm="treatment", team="t-1"),
        event("family.enrolled", "b", arm="treatment", team="t-2"),
        event("family.enrolled", "c", arm="control", team="t-1"),
        event("family.budget_allocated", "a", amount_pence=150_000),
        event("family.budget_allocated", "b", amount_pence=150_000),
    ]
    events += request("a", 1, 5_000, "practical", "auto", 0.1, spent=5_000)
    events += request("a", 2, 60_000, "therapeutic", "manager", 30, spent=60_000)
    events += request("a", 3, 80_000, "practical", "manager", 50)
    events += request("b", 4, 80_000, "practical", "manager", 10, team="t-2", spent=80_000)
    events += request("b", 5, 2_000, "therapeutic", "auto", 0.3, team="t-2")
    return events


def scope(report: WhatIf, name: str) -> Any:
    return next(s for s in report.scopes if s.scope == name)


def test_the_same_policy_changes_nothing() -> None:
    report = what_if("p", pilot(), CURRENT, CURRENT)
    whole = scope(report, "all")
    assert report.requests == 5
    assert whole.recorded == whole.proposed
    assert (whole.recorded.decided_automatically, whole.recorded.referred_to_a_manager) == (2, 3)
    assert report.refusals == ()


def test_workers_approving_up_to_a_thousand_pounds_moves_manager_requests_to_them() -> None:
    """The seeds' question: with an auto tier up to £1,000, the three manager requests are
    decided at once, at the recorded automatic decisions' median (12 minutes)."""
    report = what_if(
        "p",
        pilot(),
        CURRENT,
        proposal(approval_tiers=({"up_to_pence": 100_000, "approver": "auto"},)),
    )
    whole = scope(report, "all")
    assert (whole.proposed.decided_automatically, whole.proposed.referred_to_a_manager) == (5, 0)
    assert whole.recorded.median_hours_to_decision == 10.0  # 0.1, 0.3, 10, 30, 50
    assert whole.proposed.median_hours_to_decision == 0.2
    assert whole.proposed.spent_pence == whole.recorded.spent_pence == 145_000
    team = scope(report, "team:t-2")
    assert (team.requests, team.proposed.decided_automatically) == (2, 2)
    assert scope(report, "arm:treatment").requests == 5


def test_a_category_taken_away_refuses_its_requests_and_their_spend() -> None:
    report = what_if("p", pilot(), CURRENT, proposal(categories=["practical"]))
    whole = scope(report, "all")
    assert whole.proposed.refused == 2
    assert whole.proposed.spent_pence == 145_000 - 60_000
    assert {(r.amount_pence, r.reason) for r in report.refusals} == {
        (60_000, "category_not_allowed"),
        (2_000, "category_not_allowed"),
    }
    # Spend against forecast: two treatment families at £1,000 each.
    assert whole.recorded.spend_vs_forecast == round(145_000 / 200_000, 4)
    assert whole.proposed.spend_vs_forecast == round(85_000 / 200_000, 4)


def test_a_lower_family_cap_refuses_what_it_would_not_have_given() -> None:
    """Capped at £1,000 a period, family a's third request (£800 after £50 and £600) is more
    than it would have had; family b's £800 and £20 still fit."""
    report = what_if("p", pilot(), CURRENT, proposal(family_cap_pence=100_000))
    assert [(r.amount_pence, r.reason, r.team) for r in report.refusals] == [
        (80_000, "over_family_cap", "t-1")
    ]
    assert scope(report, "team:t-1").proposed.refused == 1
    assert scope(report, "team:t-2").proposed.refused == 0


def test_a_pilot_without_requests_answers_empty_scopes() -> None:
    report = what_if("p", pilot()[:5], CURRENT, proposal(family_cap_pence=1))
    assert report.requests == 0
    assert scope(report, "all").proposed.median_hours_to_decision is None


def test_a_decision_recorded_by_a_clock_behind_the_requests_takes_no_time_not_less() -> None:
    """As in uptake: with approval's clock three minutes behind spending's, the recorded
    median came out negative (request times are spending's, decision times approval's)."""
    events = pilot()[:5] + request("a", 1, 5_000, "practical", "auto", -0.05)
    report = what_if("p", events, CURRENT, CURRENT)
    assert scope(report, "all").recorded.median_hours_to_decision == 0.0
