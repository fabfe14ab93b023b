"""The approval decider: tiers, affordability, managers, releases, given/when/then."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

import pytest

from services.approval import decisions
from shared.contracts import approval as contract
from shared.contracts.allocation import ApprovalTier
from shared.core.errors import ConflictError, ForbiddenError, UnprocessableError
from shared.core.events import DomainEvent

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
FACTS = decisions.RequestFacts(
    request_id=UUID(int=1),
    family_id="f",
    team="t-1",
    amount_pence=20_000,
    requested_by="sw-1",
    requested_at=datetime(2026, 3, 1, 9, tzinfo=UTC),
    received_at=datetime(2026, 3, 1, 9, 0, 1, tzinfo=UTC),
    period_start=date(2026, 1, 1),
    period_end=date(2026, 12, 31),
)
HILLINGDON = decisions.Policy(
    version=3, tiers=(ApprovalTier(up_to_pence=100_000, approver="auto"),)
)
DARLINGTON = decisions.Policy(version=1, tiers=())


def given(*events: DomainEvent) -> decisions.DecisionState:
    state = decisions.initial_state()
    for event in events:
        state = decisions.evolve(state, event)
    return state


def automatically(
    policy: decisions.Policy, available: int, amount: int = 20_000
) -> list[DomainEvent]:
    request = FACTS.model_copy(update={"amount_pence": amount})
    return decisions.decide(
        given(),
        decisions.DecideAutomatically(
            request=request, policy=policy, available_pence=available, decided_at=NOW
        ),
    )


def by_manager(
    state: decisions.DecisionState,
    *,
    approve: bool = True,
    manager: str = "m-1",
    team: str | None = "t-1",
    available: int = 100_000,
    withdrawn: bool = False,
) -> list[DomainEvent]:
    return decisions.decide(
        state,
        decisions.DecideByManager(
            request=FACTS,
            approve=approve,
            manager=manager,
            manager_team=team,
            note=None,
            policy_version=1,
            available_pence=available,
            withdrawn=withdrawn,
            decided_at=NOW,
        ),
    )


@pytest.mark.parametrize(
    ("tiers", "amount", "approver"),
    [
        ((), 1, "manager"),
        (((100_000, "auto"),), 100_000, "auto"),
        (((100_000, "auto"),), 100_001, "manager"),
        (((50_000, "auto"), (100_000, "manager")), 50_001, "manager"),
        (((50_000, "manager"), (100_000, "auto")), 60_000, "auto"),
    ],
)
def test_the_first_tier_that_fits_decides(
    tiers: tuple[tuple[int, str], ...], amount: int, approver: str
) -> None:
    """A <= up_to_pence picks the tier; above the last, a manager."""
    policy = decisions.Policy(
        version=1, tiers=tuple(ApprovalTier(up_to_pence=u, approver=a) for u, a in tiers)
    )
    assert decisions.approver_for(policy, amount) == approver


def test_auto_tier_and_affordable_is_approved_with_a_hold() -> None:
    """Within the worker's authority and affordable: approved at once, for the full amount."""
    [event] = automatically(HILLINGDON, available=20_000)
    assert isinstance(event, contract.RequestApproved)
    assert (event.approved_pence, event.rule, event.decided_by, event.policy_version) == (
        20_000,
        "auto_tier",
        "policy",
        3,
    )
    assert event.requested_at == FACTS.requested_at
    assert event.decided_at == NOW


def test_unaffordable_is_rejected_whatever_the_tier() -> None:
    """More than is available: rejected for insufficient funds, with what was available."""
    for policy in (HILLINGDON, DARLINGTON):
        [event] = automatically(policy, available=19_999)
        assert isinstance(event, contract.RequestRejected)
        assert (event.reason_code, event.available_pence) == ("insufficient_funds", 19_999)


def test_affordable_above_the_auto_tier_is_referred_to_the_team() -> None:
    """A manager of the family's team decides."""
    [event] = automatically(DARLINGTON, available=50_000)
    assert isinstance(event, contract.RequestReferred)
    assert event.team == "t-1"


def test_a_decided_request_is_not_decided_again() -> None:
    """A redelivered request changes nothing."""
    [approved] = automatically(HILLINGDON, available=50_000)
    state = given(approved)
    assert (
        decisions.decide(
            state,
            decisions.DecideAutomatically(
                request=FACTS, policy=HILLINGDON, available_pence=50_000, decided_at=NOW
            ),
        )
        == []
    )


def test_managers_decide_referred_requests_of_their_team_only() -> None:
    """Approve or reject; another team, self-approval, withdrawn, undecidable: refused."""
    [referred] = automatically(DARLINGTON, available=50_000)
    state = given(referred)
    [approved] = by_manager(state)
    assert isinstance(approved, contract.RequestApproved)
    assert (approved.rule, approved.decided_by) == ("manager", "m-1")
    [rejected] = by_manager(state, approve=False)
    assert isinstance(rejected, contract.RequestRejected)
    assert rejected.reason_code == "manager"
    with pytest.raises(ForbiddenError) as other_team:
        by_manager(state, team="t-9")
    assert other_team.value.code == "forbidden_team"
    with pytest.raises(ForbiddenError) as own:
        by_manager(state, manager="sw-1")
    assert own.value.code == "self_approval"
    with pytest.raises(ConflictError):
        by_manager(state, withdrawn=True)
    with pytest.raises(UnprocessableError) as broke:
        by_manager(state, available=19_999)
    assert broke.value.code == "insufficient_funds"
    with pytest.raises(ConflictError) as decided:
        by_manager(given(referred, approved))
    assert decided.value.code == "not_pending"


def test_closing_or_withdrawing_releases_what_was_not_bought() -> None:
    """The hold comes back less purchases; once; nothing for a request never approved."""
    [approved] = automatically(HILLINGDON, available=50_000)
    release = decisions.ReleaseHold(request=FACTS, purchased_pence=5_000, cause="closed")
    [released] = decisions.decide(given(approved), release)
    assert isinstance(released, contract.HoldReleased)
    assert released.released_pence == 15_000
    assert decisions.decide(given(approved, released), release) == []
    [referred] = automatically(DARLINGTON, available=50_000)
    assert decisions.decide(given(referred), release) == []
