"""The spend request decider: every status transition, given/when/then."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import pytest

from services.spending import requests
from shared.contracts import spending as contract
from shared.core.errors import ConflictError, NotFoundError, UnprocessableError
from shared.core.events import DomainEvent

REQUEST = contract.SpendRequested(
    request_id=UUID(int=1),
    family_id="f",
    team="t",
    amount_pence=10_000,
    category="practical",
    purpose="sealed:v1:x",
    requested_by="sw",
    family_involved=True,
    needed_by=None,
    pilot_version=1,
    allocation_version=2,
    period_start=date(2026, 1, 1),
    period_end=date(2026, 12, 31),
)
APPROVED = requests.Decision(outcome="approved", approved_pence=10_000)
P1, P2 = UUID(int=11), UUID(int=12)


def given(*events: DomainEvent) -> requests.RequestState:
    state = requests.initial_state()
    for event in events:
        state = requests.evolve(state, event)
    return state


def purchase(
    amount: int, purchase_id: UUID = P1, decision: requests.Decision | None = APPROVED
) -> requests.RecordPurchase:
    return requests.RecordPurchase(
        purchase_id=purchase_id,
        amount_pence=amount,
        purchased_on=date(2026, 2, 1),
        method="card",
        vendor=None,
        receipt_ref=None,
        decision=decision,
    )


def bought(amount: int, purchase_id: UUID = P1) -> contract.PurchaseRecorded:
    [event] = requests.decide(given(REQUEST), purchase(amount, purchase_id))
    assert isinstance(event, contract.PurchaseRecorded)
    return event


def test_a_request_is_submitted_until_approval_decides() -> None:
    """Requested: submitted; referred: awaiting approval; decided: approved or rejected."""
    state = given(REQUEST)
    assert requests.status_of(state, None) == "submitted"
    assert requests.status_of(state, requests.Decision(outcome="referred")) == "awaiting_approval"
    assert requests.status_of(state, APPROVED) == "approved"
    assert requests.status_of(state, requests.Decision(outcome="rejected")) == "rejected"


def test_purchases_move_it_through_partially_spent_to_spent() -> None:
    """Some bought: partially spent; all bought: spent; refunds do not change the status."""
    state = given(REQUEST, bought(4_000))
    assert requests.status_of(state, APPROVED) == "partially_spent"
    state = requests.evolve(state, bought(6_000, P2))
    assert requests.status_of(state, APPROVED) == "spent"
    assert state.spent_pence == 10_000


def test_purchases_need_an_approval_and_stay_within_it() -> None:
    """No purchase before approval or after rejection; never more than approved in total."""
    with pytest.raises(UnprocessableError) as undecided:
        requests.decide(given(REQUEST), purchase(1, decision=None))
    assert undecided.value.code == "not_approved"
    with pytest.raises(UnprocessableError):
        requests.decide(given(REQUEST), purchase(1, decision=requests.Decision(outcome="rejected")))
    with pytest.raises(UnprocessableError) as over:
        requests.decide(given(REQUEST, bought(9_000)), purchase(1_001, P2))
    assert over.value.code == "exceeds_approved"


def test_refunds_stay_within_their_purchase() -> None:
    """Refunds may total at most the purchase; an unknown purchase is not found."""
    state = given(REQUEST, bought(4_000))
    [refund] = requests.decide(
        state,
        requests.RefundPurchase(
            refund_id=UUID(int=21), purchase_id=P1, amount_pence=4_000, reason="r"
        ),
    )
    assert isinstance(refund, contract.PurchaseRefunded)
    assert refund.period_start == REQUEST.period_start
    with pytest.raises(UnprocessableError):
        requests.decide(
            state,
            requests.RefundPurchase(
                refund_id=UUID(int=22), purchase_id=P1, amount_pence=4_001, reason="r"
            ),
        )
    with pytest.raises(NotFoundError):
        requests.decide(
            state,
            requests.RefundPurchase(
                refund_id=UUID(int=23), purchase_id=P2, amount_pence=1, reason="r"
            ),
        )


def test_withdrawal_only_before_a_purchase() -> None:
    """Withdrawn: no purchase after; with a purchase: close instead."""
    [withdrawn] = requests.decide(
        given(REQUEST), requests.WithdrawRequest(reason="r", decision=APPROVED)
    )
    state = requests.evolve(given(REQUEST), withdrawn)
    assert requests.status_of(state, APPROVED) == "withdrawn"
    with pytest.raises(ConflictError):
        requests.decide(state, purchase(1))
    with pytest.raises(UnprocessableError) as bought_already:
        requests.decide(
            given(REQUEST, bought(1)), requests.WithdrawRequest(reason="r", decision=APPROVED)
        )
    assert bought_already.value.code == "already_purchased"


def test_closing_records_what_was_bought_and_ends_the_request() -> None:
    """Closed: no purchase, no second close; a request never approved cannot be closed."""
    state = given(REQUEST, bought(3_000))
    [closed] = requests.decide(state, requests.CloseRequest(decision=APPROVED))
    assert isinstance(closed, contract.RequestClosed)
    assert closed.purchased_pence == 3_000
    state = requests.evolve(state, closed)
    assert requests.status_of(state, APPROVED) == "closed"
    with pytest.raises(ConflictError):
        requests.decide(state, requests.CloseRequest(decision=APPROVED))
    with pytest.raises(ConflictError):
        requests.decide(state, purchase(1, P2))
    with pytest.raises(UnprocessableError):
        requests.decide(given(REQUEST), requests.CloseRequest(decision=None))


def test_a_request_is_made_once() -> None:
    """The same request id cannot be requested twice."""
    with pytest.raises(ConflictError):
        requests.decide(given(REQUEST), requests.RequestSpend(**REQUEST.model_dump()))
