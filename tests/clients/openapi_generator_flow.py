"""The whole flow with the python clients openapi-generator generated (packages
allocation_og, spending_og, approval_og, reporting_og on the path): as
openapi_python_client_flow.py, through the other generator's idea of a client (a problem
answer raises ApiException; bodies and answers are pydantic models), and a card statement
that matches the purchase."""

from __future__ import annotations

import io
import zipfile
from types import ModuleType
from typing import Any

import allocation_og
import approval_og
import reporting_og
import spending_og
from allocation_og.api.allocation_api import AllocationApi
from allocation_og.models import AllocationBody, EnrolmentBody, PilotConfigBody
from approval_og.api.approval_api import ApprovalApi
from approval_og.models import DecisionBody
from reporting_og.api.reporting_api import ReportingApi
from reporting_og.models import BalanceView
from spending_og.api.spending_api import SpendingApi
from spending_og.models import CloseBody, PurchaseBody, SpendRequestBody

from tests.clients.common import (
    ALLOCATION,
    ENROLMENT,
    FAMILY,
    PILOT,
    PILOT_CONFIG,
    PURCHASE,
    SPEND,
    STATEMENT,
    TOKENS,
    URLS,
    report,
    settled,
    until,
)


def main() -> None:
    def signed_in(package: ModuleType, service: str, role: str) -> Any:
        configuration = package.Configuration(host=URLS[service], access_token=TOKENS[role])
        return package.ApiClient(configuration)

    admin = AllocationApi(signed_in(allocation_og, "allocation", "admin"))
    admin.configure_pilot(PILOT, PilotConfigBody.from_dict(PILOT_CONFIG))
    worker_allocation = AllocationApi(signed_in(allocation_og, "allocation", "social_worker"))
    worker_allocation.enrol_family(PILOT, EnrolmentBody.from_dict(ENROLMENT))
    allocated = admin.allocate_budget(PILOT, FAMILY, AllocationBody.from_dict(ALLOCATION))

    worker = SpendingApi(signed_in(spending_og, "spending", "social_worker"))
    body = SpendRequestBody.from_dict({**SPEND, "allocation_version": allocated.stream_version})
    request_id = str(worker.request_spend(PILOT, body).request_id)

    def status() -> str:
        return str(worker.get_spend_request(PILOT, request_id).status)

    until(lambda: status() == "awaiting_approval" or None, "the request referred")
    manager = ApprovalApi(signed_in(approval_og, "approval", "manager"))
    pending = manager.list_pending_approvals(PILOT)
    assert request_id in {str(p.request_id) for p in pending.requests}
    manager.approve_spend_request(PILOT, request_id, DecisionBody.from_dict({}))
    until(lambda: status() == "approved" or None, "the request approved")
    worker.record_purchase(PILOT, request_id, PurchaseBody.from_dict(PURCHASE))
    closed = worker.close_spend_request(PILOT, request_id, CloseBody.from_dict({}))

    # A statement is a file: this generator's method sends it with the content type named.
    finance_spending = SpendingApi(signed_in(spending_og, "spending", "finance"))
    statement = finance_spending.import_statement(PILOT, STATEMENT, _content_type="text/csv")

    reports = ReportingApi(signed_in(reporting_og, "reporting", "admin"))

    def balance() -> BalanceView | None:
        found = reports.get_balance(PILOT, FAMILY)
        return found if settled(found.spent_pence, found.committed_pence) else None

    balanced = until(balance, "the purchase and the close in the balance")
    history = reports.get_family_history(PILOT, FAMILY)
    uptake = reports.get_uptake(PILOT)
    finance = ReportingApi(signed_in(reporting_og, "reporting", "finance"))
    transactions = finance.get_transactions_csv(PILOT)
    dataset = reports.get_trial_dataset(PILOT)
    with zipfile.ZipFile(io.BytesIO(dataset)) as archive:
        files = sorted(archive.namelist())
    report(
        {
            "status": str(closed.status),
            "balance": balanced.to_dict(),
            "history": [event.type for event in history.events],
            "uptake": uptake.to_dict(),
            "transactions": transactions.splitlines(),
            "trial_dataset": files,
            "statement": statement.to_dict(),
        }
    )


if __name__ == "__main__":
    main()
