"""The whole flow with the clients openapi-python-client generated (packages
allocation_client, spending_client, approval_client, reporting_client on the path): pilot,
enrolment, allocation, spend request, a manager's approval, purchase, close, balance,
history, uptake, transactions.csv and the trial dataset."""

from __future__ import annotations

import io
import zipfile

from allocation_client import AuthenticatedClient as AllocationClient
from allocation_client.api.allocation import (
    allocate_budget,
    configure_pilot,
    enrol_family,
    get_family,
)
from allocation_client.models import (
    AllocationBody,
    AllocationResult,
    EnrolmentBody,
    EnrolmentResult,
    FamilyView,
    PilotConfigBody,
    PilotView,
)
from approval_client import AuthenticatedClient as ApprovalClient
from approval_client.api.approval import approve_spend_request, list_pending_approvals
from approval_client.models import DecisionBody, DecisionResult, PendingList
from reporting_client import AuthenticatedClient as ReportingClient
from reporting_client.api.reporting import (
    get_balance,
    get_family_history,
    get_transactions_csv,
    get_trial_dataset,
    get_uptake,
)
from reporting_client.models import BalanceView, HistoryView, UptakeView
from reporting_client.types import File
from spending_client import AuthenticatedClient as SpendingClient
from spending_client.api.spending import (
    close_spend_request,
    get_spend_request,
    record_purchase,
    request_spend,
)
from spending_client.models import (
    CloseBody,
    PurchaseBody,
    PurchaseResult,
    RequestAccepted,
    RequestView,
    SpendRequestBody,
)

from tests.clients.common import (
    ALLOCATION,
    ENROLMENT,
    FAMILY,
    PILOT,
    PILOT_CONFIG,
    PURCHASE,
    SPEND,
    TOKENS,
    URLS,
    report,
    settled,
    until,
)


def main() -> None:
    admin = AllocationClient(URLS["allocation"], token=TOKENS["admin"])
    pilot = configure_pilot.sync(PILOT, client=admin, body=PilotConfigBody.from_dict(PILOT_CONFIG))
    assert isinstance(pilot, PilotView), pilot
    worker_allocation = AllocationClient(URLS["allocation"], token=TOKENS["social_worker"])
    enrolled = enrol_family.sync(
        PILOT, client=worker_allocation, body=EnrolmentBody.from_dict(ENROLMENT)
    )
    assert isinstance(enrolled, EnrolmentResult), enrolled
    allocated = allocate_budget.sync(
        PILOT, FAMILY, client=admin, body=AllocationBody.from_dict(ALLOCATION)
    )
    assert isinstance(allocated, AllocationResult), allocated
    family = get_family.sync(PILOT, FAMILY, client=admin)
    assert isinstance(family, FamilyView), family

    worker = SpendingClient(URLS["spending"], token=TOKENS["social_worker"])
    body = SpendRequestBody.from_dict({**SPEND, "allocation_version": family.stream_version})
    accepted = request_spend.sync(PILOT, client=worker, body=body)
    assert isinstance(accepted, RequestAccepted), accepted
    request_id = str(accepted.request_id)

    def status() -> str:
        found = get_spend_request.sync(PILOT, request_id, client=worker)
        assert isinstance(found, RequestView), found
        return str(found.status.value)

    until(lambda: status() == "awaiting_approval" or None, "the request referred")
    manager = ApprovalClient(URLS["approval"], token=TOKENS["manager"])
    pending = list_pending_approvals.sync(PILOT, client=manager)
    assert isinstance(pending, PendingList), pending
    assert request_id in {str(p.request_id) for p in pending.requests}
    decided = approve_spend_request.sync(
        PILOT, request_id, client=manager, body=DecisionBody.from_dict({})
    )
    assert isinstance(decided, DecisionResult), decided
    until(lambda: status() == "approved" or None, "the request approved")
    bought = record_purchase.sync(
        PILOT, request_id, client=worker, body=PurchaseBody.from_dict(PURCHASE)
    )
    assert isinstance(bought, PurchaseResult), bought
    closed = close_spend_request.sync(PILOT, request_id, client=worker, body=CloseBody())
    assert isinstance(closed, RequestView), closed

    reports = ReportingClient(URLS["reporting"], token=TOKENS["admin"])

    def balance() -> BalanceView | None:
        found = get_balance.sync(PILOT, FAMILY, client=reports)
        assert isinstance(found, BalanceView), found
        return found if settled(found.spent_pence, found.committed_pence) else None

    balanced = until(balance, "the purchase and the close in the balance")
    history = get_family_history.sync(PILOT, FAMILY, client=reports)
    assert isinstance(history, HistoryView), history
    uptake = get_uptake.sync(PILOT, client=reports)
    assert isinstance(uptake, UptakeView), uptake
    finance = ReportingClient(URLS["reporting"], token=TOKENS["finance"])
    transactions = get_transactions_csv.sync(PILOT, client=finance)
    assert isinstance(transactions, str), transactions
    dataset = get_trial_dataset.sync(PILOT, client=reports)
    assert isinstance(dataset, File), dataset
    with zipfile.ZipFile(io.BytesIO(dataset.payload.read())) as archive:
        files = sorted(archive.namelist())
    report(
        {
            "status": closed.status.value,
            "balance": balanced.to_dict(),
            "history": [event.type_ for event in history.events],
            "uptake": uptake.to_dict(),
            "transactions": transactions.splitlines(),
            "trial_dataset": files,
        }
    )


if __name__ == "__main__":
    main()
