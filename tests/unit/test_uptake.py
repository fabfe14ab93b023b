"""Uptake figures from a hand-made history: every figure, per arm, and small-cell suppression."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from services.reporting.disclosure import Published, publish
from services.reporting.uptake import (
    Facts,
    Figures,
    by_team,
    compute,
    gather,
    hours_to_decision_by_family,
)
from shared.contracts import PUBLISHED
from shared.contracts.approval import RequestApproved
from shared.core.events import Envelope

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
_ids = count(1)
_PERIOD = {"period_start": "2026-01-01", "period_end": "2026-12-31"}
_DECISION = {
    "family_id": "f",
    "amount_pence": 1_000,
    "policy_version": 1,
    "requested_at": START.isoformat(),
    "decided_at": START.isoformat(),
    "decided_by": "policy",
    **_PERIOD,
}
# What each event says besides what a test names: every field its contract requires.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "family.enrolled": {
        "family_id": "f",
        "team": "t",
        "worker": "w",
        "enrolled_on": "2026-01-01",
        "stratum": None,
        "arm": "treatment",
        "pilot_version": 1,
    },
    "family.budget_allocated": {
        "allocation_id": "a",
        "amount_pence": 1,
        "note": None,
        "pilot_version": 1,
        "period_allocated_pence": 0,  # for reading only: balances add up the amounts
        **_PERIOD,
    },
    "family.budget_adjusted": {
        "adjustment_id": "a",
        "delta_pence": 1,
        "reason": "r",
        "period_allocated_pence": 0,
        **_PERIOD,
    },
    "decision.budget_reduced": {
        "reduction_id": "x",
        "amount_pence": 1,
        "decided_at": START.isoformat(),
        "available_pence": 0,
        **_PERIOD,
    },
    "family.budget_disclosed": {
        "disclosed_on": "2026-01-02",
        "amount_disclosed_pence": None,
        "method": "in_person",
    },
    "family.outcome_recorded": {"occurred_on": "2026-06-01"},
    "spend_request.requested": {
        "family_id": "f",
        "team": "t",
        "amount_pence": 1_000,
        "category": "practical",
        "purpose": "p",
        "requested_by": "w",
        "needed_by": None,
        "pilot_version": 1,
        "allocation_version": 1,
        **_PERIOD,
    },
    "family.budget_reduction_requested": {"reduction_id": "x", "reason": "r", **_PERIOD},
    "decision.budget_reduction_refused": {
        "reduction_id": "x",
        "decided_at": START.isoformat(),
        "available_pence": 0,
        **_PERIOD,
    },
    "decision.referred": {"team": "t", **_DECISION},
    "decision.approved": {"approved_pence": 1_000, "rule": "auto_tier", **_DECISION},
    "decision.rejected": {"reason_code": "manager", **_DECISION},
    "decision.hold_released": {
        "request_id": "r",
        "released_pence": 0,
        "cause": "closed",
        **_PERIOD,
    },
    "purchase.recorded": {
        "purchase_id": "b",
        "purchased_on": "2026-02-01",
        "category": "practical",
        "request_id": "r",
        "method": "card",
        "vendor": None,
        "receipt_ref": None,
        **_PERIOD,
    },
    "purchase.refunded": {
        "refund_id": "c",
        "category": "practical",
        "purchase_id": "b",
        "request_id": "r",
        "reason": "r",
        **_PERIOD,
    },
}


def _id(key: str, value: Any, family: str) -> Any:
    """The event's family, and a short test id ("r1") as the UUID it stands for."""
    if key == "family_id":
        return family
    if not key.endswith("_id"):
        return value
    try:
        UUID(str(value))
    except ValueError:
        return str(uuid5(NAMESPACE_URL, str(value)))
    return value


def event(kind: str, family: str, version: int = 1, hours: float = 0, **given: Any) -> Envelope:
    """An envelope whose data is a whole event of its contract: the defaults, then ``given``."""
    moment = START + timedelta(hours=hours)
    data = {**_DEFAULTS[kind], **given}
    data = {key: _id(key, value, family) for key, value in data.items()}
    envelope = Envelope.model_validate(
        {
            "id": f"00000000-0000-0000-0000-{next(_ids):012d}",
            "type": kind,
            "source": "test",
            "time": moment,
            "subject": "s",
            "schema_version": 1,
            "pilot_id": "p",
            "family_id": family,
            "stream_id": f"s:{family}",
            "stream_version": version,
            "occurred_at": moment,
            "actor": {"sub": "x", "role": "admin"},
            "correlation_id": "c",
            "causation_id": None,
            "data": data,
            "prev_hash": "0",
            "hash": "0",
        }
    )
    PUBLISHED.decode(envelope)  # a test's own event must be one a producer could publish
    return envelope


def history() -> list[Envelope]:
    period: dict[str, Any] = {"period_start": "2026-01-01", "period_end": "2026-12-31"}
    events = [
        event("family.enrolled", f, arm=arm)
        for f, arm in [
            ("t1", "treatment"),
            ("t2", "treatment"),
            ("t3", "treatment"),
            ("c1", "control"),
        ]
    ]
    events += [
        event("family.budget_allocated", "t1", 2, amount_pence=100_000, **period),
        event("family.budget_adjusted", "t1", 3, delta_pence=-20_000, **period),  # before cuts
        event("family.budget_adjusted", "t1", 4, delta_pence=5_000, **period),
        event("decision.budget_reduced", "t1", amount_pence=5_000, **period),
        event("family.budget_allocated", "t2", 2, amount_pence=50_000, **period),
        event("family.budget_disclosed", "t1", 4),
        event("spend_request.requested", "t1", request_id="r1", family_involved=True),
        event("spend_request.requested", "t1", request_id="r2", family_involved=False),
        event("spend_request.requested", "t2", request_id="r3", family_involved=True),
        event(
            "decision.referred",
            "t1",
            hours=1,
            request_id="r2",
            decided_at=(START + timedelta(hours=1)).isoformat(),
        ),
        event(
            "decision.approved",
            "t1",
            hours=0.5,
            request_id="r1",
            decided_at=(START + timedelta(hours=0.5)).isoformat(),
        ),
        event(
            "decision.approved",
            "t1",
            hours=3,
            request_id="r2",
            decided_at=(START + timedelta(hours=3)).isoformat(),
        ),
        event(
            "decision.rejected",
            "t2",
            hours=2,
            request_id="r3",
            decided_at=(START + timedelta(hours=2)).isoformat(),
        ),
        event(
            "purchase.recorded",
            "t1",
            amount_pence=1_500,
            category="relationship",
            purchased_on="2026-02-01",
        ),
        event(
            "purchase.recorded",
            "t1",
            amount_pence=30_000,
            category="practical",
            purchased_on="2026-02-01",
        ),
        event(
            "purchase.recorded",
            "t1",
            amount_pence=1_999,
            category="relationship",
            purchased_on="2026-02-01",
        ),
        event("purchase.refunded", "t1", amount_pence=500, category="practical"),
        event("family.outcome_recorded", "t1", outcome="remained_at_home"),
        event("family.outcome_recorded", "c1", outcome="entered_care"),
    ]
    return events


def test_every_figure_follows_its_definition() -> None:
    """Counts, money, shares, medians and time to decision, for the pilot and each arm."""
    figures = compute(gather(history()), forecast_pence=100_000)
    pilot, treatment, control = figures["all"], figures["treatment"], figures["control"]
    assert (pilot.families_enrolled, pilot.families_with_request, pilot.families_with_spend) == (
        4,
        2,
        1,
    )
    assert pilot.uptake_rate == 0.25
    assert (pilot.requests, pilot.approved, pilot.rejected) == (3, 2, 1)
    assert pilot.allocated_pence == 130_000  # t1's allocations, top-ups less cuts, plus t2's
    assert pilot.spent_pence == 1_500 + 30_000 + 1_999 - 500
    # Against the treatment arm's forecast only: the control family never gets a budget
    # (before, the pilot's counted it and read 0.0825).
    assert pilot.spend_vs_forecast == round(32_999 / 300_000, 4)
    assert control.spend_vs_forecast is None
    assert pilot.median_transaction_pence == 1_999
    assert pilot.share_transactions_under_2000_pence == round(2 / 3, 4)
    assert pilot.spent_by_category_pence == {"practical": 29_500, "relationship": 3_499}
    assert pilot.median_hours_to_decision == 2.0  # 0.5, 3 (not the referral at 1) and 2
    assert pilot.share_requests_family_involved == round(2 / 3, 4)
    assert pilot.share_families_told_budget == 0.25
    assert pilot.outcomes == {"entered_care": 1, "remained_at_home": 1}
    assert (treatment.families_enrolled, control.families_enrolled) == (3, 1)
    assert treatment.outcomes == {"remained_at_home": 1}
    assert control.outcomes == {"entered_care": 1}
    assert control.requests == 0
    assert control.median_transaction_pence is None


def test_every_interleaving_gives_the_same_figures() -> None:
    """The order across topics does not matter: reversed, the history adds up the same."""
    assert compute(gather(reversed(history())), forecast_pence=100_000) == compute(
        gather(history()), 100_000
    )


def test_a_pilot_without_arms_reports_one_scope() -> None:
    """No control arm: only the whole pilot."""
    only_treated = [e for e in history() if e.family_id != "c1"]
    assert set(compute(gather(only_treated), None)) == {"all"}
    assert compute(gather(only_treated), None)["all"].spend_vs_forecast is None


def test_small_cells_are_suppressed_for_publication() -> None:
    """Four families: every figure rests on fewer than five, so every figure is hidden,
    money too (before, the money stayed and the count could be worked back from it)."""
    published = publishing(gather(history()), 100_000).arms["all"]
    assert (
        published.families_enrolled,
        published.families_with_request,
        published.families_with_spend,
    ) == ("<5", "<5", "<5")
    assert published.uptake_rate is None
    assert published.share_families_told_budget is None
    assert published.outcomes == {"entered_care": "<5", "remained_at_home": "<5"}
    assert (published.spent_pence, published.spend_vs_forecast) == (None, None)
    assert published.allocated_pence is None


def trial(treated: int, controls: int, spenders: int) -> list[Envelope]:
    """A randomised pilot: ``spenders`` of the treated families each spend £10.01 more than
    the one before; each control family has an outcome."""
    period: dict[str, Any] = {"period_start": "2026-01-01", "period_end": "2026-12-31"}
    events = [event("family.enrolled", f"t{n}", arm="treatment") for n in range(treated)]
    events += [event("family.enrolled", f"c{n}", arm="control") for n in range(controls)]
    for n in range(spenders):
        events += [
            event("family.budget_allocated", f"t{n}", 2, amount_pence=50_000, **period),
            event("spend_request.requested", f"t{n}", request_id=f"r{n}", family_involved=True),
            event("decision.approved", f"t{n}", request_id=f"r{n}"),
            event(
                "purchase.recorded",
                f"t{n}",
                request_id=f"r{n}",
                purchase_id=f"p{n}",
                amount_pence=1_001 * (n + 1),
                purchased_on="2026-02-01",
            ),
        ]
    events += [
        event("family.outcome_recorded", f"c{n}", outcome="remained_at_home")
        for n in range(controls)
    ]
    return events


def test_no_hidden_figure_can_be_worked_back_from_the_others() -> None:
    """Seven treated families (three spending) and three controls: the controls' figures are
    hidden, and so is each one in the treatment arm, since the pilot's less the treated
    would give the controls'; and no hidden count follows from a rate and an amount shown."""
    facts = gather(trial(treated=7, controls=3, spenders=3))
    raw = compute(facts, forecast_pence=100_000)
    published = publishing(facts, 100_000).arms
    pilot, treated, control = published["all"], published["treatment"], published["control"]
    assert control.families_enrolled == "<5"
    for name in Figures.model_fields:
        if name == "outcomes":
            continue
        if getattr(control, name) in (None, "<5"):
            # all - treatment = control: one of the two must be hidden too
            assert getattr(treated, name) in (None, "<5") or getattr(pilot, name) in (None, "<5"), (
                name
            )
    assert treated.outcomes.get("remained_at_home") in (None, "<5", 0) or (
        pilot.outcomes.get("remained_at_home") in (None, "<5")
    )
    # Three treated families spent: spent and the rates built on it are hidden, so
    # families_with_spend ("<5") cannot be worked out as spent / (mean spend).
    assert (treated.families_with_spend, treated.spent_pence, treated.uptake_rate) == (
        "<5",
        None,
        None,
    )
    assert (pilot.spent_pence, pilot.spend_vs_forecast) == (None, None)
    # What rests on ten families is shown: the pilot's enrolment.
    assert pilot.families_enrolled == 10
    assert raw["all"].spent_pence == 1_001 + 2_002 + 3_003  # the figures were there to hide


def publishing(facts: Facts, forecast: int | None, known_team: str | None = None) -> Published:
    """The figures as the uptake endpoint and the dashboard publish them."""
    return publish(facts, compute(facts, forecast), by_team(facts, forecast), known_team=known_team)


def _approved(request: UUID, decided_at: datetime, received_at: datetime | None) -> RequestApproved:
    return RequestApproved(
        request_id=request,
        family_id="fam-1",
        amount_pence=1_000,
        policy_version=1,
        requested_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        received_at=received_at,
        decided_at=decided_at,
        decided_by="m-1",
        period_start=date(2026, 1, 1),
        period_end=date(2026, 12, 31),
        approved_pence=1_000,
        rule="manager",
    )


def test_a_decision_recorded_before_received_at_was_kept_takes_no_time_not_less() -> None:
    """With approval's clock behind spending's, median_hours_to_decision came out negative:
    such a decision is measured from the request's time, spending's clock."""
    facts = Facts()
    request = uuid4()
    facts.requests[request] = ("fam-1", False, datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    three_minutes_before = datetime(2026, 5, 1, 11, 57, tzinfo=UTC)
    facts.decided[request] = _approved(request, three_minutes_before, None)
    assert list(hours_to_decision_by_family(facts)) == [("fam-1", 0.0)]


def test_time_to_decision_is_read_from_approvals_clock_alone() -> None:
    """Spending recorded the request at 12:00 by its clock; approval, five minutes behind,
    recorded it at 11:55:00.1 by its own and a manager approved it an hour later. The hour
    is what the figure says: measured from spending's 12:00 it read 55 minutes, and with
    approval's clock ahead an hour and five."""
    facts = Facts()
    request = uuid4()
    facts.requests[request] = ("fam-1", False, datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    received = datetime(2026, 5, 1, 11, 55, 0, 100_000, tzinfo=UTC)
    facts.decided[request] = _approved(request, received + timedelta(hours=1), received)
    assert list(hours_to_decision_by_family(facts)) == [("fam-1", 1.0)]
