"""Spending's routes: parse, authorise, call the application, answer."""

from __future__ import annotations

from aiohttp import web

from services.spending import statements
from services.spending.handlers import Spending
from services.spending.reconciliation import Reconciliation
from services.spending.schemas import (
    CloseBody,
    PurchaseBody,
    PurchaseResult,
    PurposesView,
    RefundBody,
    RefundResult,
    RequestAccepted,
    RequestView,
    SpendRequestBody,
    StatementErasureBody,
    StatementErasureResult,
    StatementQuery,
    StatementReport,
    WithdrawBody,
)
from shared.web.auth import ROLES
from shared.web.http import (
    HttpProblemError,
    PathParams,
    Route,
    command_route,
    json_response,
    principal_of,
    read_body,
)

__all__ = ["RECONCILIATION", "SPENDING", "routes"]

SPENDING = web.AppKey("spending", Spending)
RECONCILIATION = web.AppKey("reconciliation", Reconciliation)
_REQUEST = "/pilots/{pilot_id}/spend-requests/{request_id}"
_WORKERS = frozenset({"case_system", "social_worker"})


async def get_request(request: web.Request) -> web.StreamResponse:
    path = PathParams(request.match_info)
    view = await request.app[SPENDING].view(
        principal_of(request), path.pilot_id, path.uuid("request_id")
    )
    return json_response(view)


async def get_purposes(request: web.Request) -> web.StreamResponse:
    view = await request.app[SPENDING].purposes(
        principal_of(request), request.match_info["pilot_id"], request.match_info["family_id"]
    )
    return json_response(view)


_STATEMENT_TYPES: dict[str, statements.Format] = {"text/csv": "csv", "application/x-ofx": "ofx"}


async def post_statement(request: web.Request) -> web.StreamResponse:
    kind = _STATEMENT_TYPES.get(request.content_type)
    if kind is None:
        raise HttpProblemError(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "send the statement as text/csv or application/x-ofx",
        )
    query = StatementQuery.model_validate(dict(request.query))
    raw = await read_body(request, request.content_type)
    status, report = await request.app[RECONCILIATION].import_statement(
        request.match_info["pilot_id"], raw, kind, query.tolerance_days
    )
    return json_response(report, status=status)


async def get_statement_exceptions(request: web.Request) -> web.StreamResponse:
    pilot_id, statement = request.match_info["pilot_id"], request.match_info["statement_id"]
    body = await request.app[RECONCILIATION].exceptions(pilot_id, statement)
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="statement-{statement[:16]}.csv"'},
    )


# A table with one entry per endpoint, not logic: it is as long as the API is wide.
def routes() -> list[Route]:
    """Every spending endpoint of API.md."""
    tags = ("spending",)
    return [
        command_route(
            "POST",
            "/pilots/{pilot_id}/spend-requests",
            "Request to spend with a family",
            _WORKERS,
            operation_id="requestSpend",
            app=SPENDING,
            body=SpendRequestBody,
            run=lambda app, caller, path, body: app.request(caller, path.pilot_id, body),
            may_be_unavailable=True,
            response=RequestAccepted,
            status=202,
            description="Accepted when recorded; approval decides next (automatically within "
            "an auto tier, else a manager of the family's team). 422 for an unknown or exited "
            "family, an unknown category or a family in the control arm. The purpose is sealed "
            "(erasable) and never logged or exported. 503 not_yet_consistent (with Retry-After) "
            "when spending has not seen the allocation_version named within 5 s, or at once "
            "while it is not reading allocation's events.",
            tags=tags,
        ),
        Route(
            "GET",
            _REQUEST,
            get_request,
            "A request's status and money",
            ROLES,
            operation_id="getSpendRequest",
            response=RequestView,
            description="Social workers and managers see their own team's requests only: another "
            "team's answers 404, as a request that does not exist.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/families/{family_id}/purposes",
            get_purposes,
            "What each of the family's spend requests was for, opened",
            frozenset({"admin", "case_system", "social_worker", "manager"}),
            operation_id="getFamilyPurposes",
            response=PurposesView,
            description="Purposes are stored sealed; this opens them for the roles that write "
            "them (workers and managers: own team; another team's family answers 404). After "
            "the family's erasure each reads [erased]. Reporting's family statement asks for "
            "them here, with the caller's own token, when the worker chooses to include them.",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/withdraw",
            "Withdraw a request (only before a purchase)",
            _WORKERS,
            operation_id="withdrawSpendRequest",
            app=SPENDING,
            body=WithdrawBody,
            run=lambda app, caller, path, body: app.withdraw(
                caller, path.pilot_id, path.uuid("request_id"), body
            ),
            response=RequestView,
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/purchases",
            "Record a purchase against an approved request",
            frozenset({"case_system", "social_worker", "finance"}),
            operation_id="recordPurchase",
            app=SPENDING,
            body=PurchaseBody,
            run=lambda app, caller, path, body: app.purchase(
                caller, path.pilot_id, path.uuid("request_id"), body
            ),
            response=PurchaseResult,
            status=201,
            description="Purchases may total at most the approved amount (422 exceeds_approved).",
            tags=tags,
        ),
        command_route(
            "POST",
            "/pilots/{pilot_id}/purchases/{purchase_id}/refunds",
            "Record money returned from a purchase",
            frozenset({"finance", "case_system"}),
            operation_id="recordRefund",
            app=SPENDING,
            body=RefundBody,
            run=lambda app, caller, path, body: app.refund(
                caller, path.pilot_id, path.uuid("purchase_id"), body
            ),
            response=RefundResult,
            status=201,
            description="Refunds may total at most the purchase (422 exceeds_purchase).",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/close",
            "Close a request, releasing the unspent part of its approval",
            frozenset({"case_system", "social_worker", "finance"}),
            operation_id="closeSpendRequest",
            app=SPENDING,
            body=CloseBody,
            run=lambda app, caller, path, body: app.close(
                caller, path.pilot_id, path.uuid("request_id"), body
            ),
            response=RequestView,
            tags=tags,
        ),
        Route(
            "POST",
            "/pilots/{pilot_id}/statements",
            post_statement,
            "Import a card or bank statement and reconcile it with the purchases",
            frozenset({"finance", "admin"}),
            operation_id="importStatement",
            response=StatementReport,
            status=201,
            also=((200, "The same file was imported before: its report, nothing recorded"),),
            query=StatementQuery,
            file_body=tuple(_STATEMENT_TYPES),
            description="CSV (header date,amount,description,reference; date YYYY-MM-DD; "
            "amount paid out in pounds and pence, a credit negative; reference optional) or "
            "OFX, at most 10,000 lines and 1 MiB. Each line, in date order, is matched to the "
            "unmatched purchase of the same amount within tolerance_days of its day (one whose "
            "receipt_ref the line carries first, then one whose vendor kind the description "
            "names, then the nearest day); then the purchases of the statement's days that no "
            "line took. Recorded as events (statement.imported, statement.line_matched, "
            "statement.line_unmatched, statement.purchase_unmatched), each line's description "
            "and reference sealed under the statement's own key. 422 unreadable_statement "
            "names the first thing wrong, and nothing is recorded.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/statements/{statement_id}/exceptions.csv",
            get_statement_exceptions,
            "A statement's exceptions: lines without a purchase, purchases without a line",
            frozenset({"finance", "admin", "auditor"}),
            operation_id="getStatementExceptions",
            content_type="text/csv",
            description="Columns: kind (line_without_purchase or purchase_without_line), date, "
            "amount (pounds), description, reference, purchase_id, request_id, family_id. A "
            "cell a spreadsheet would run as a formula begins with an apostrophe; text erased "
            "reads [erased].",
            tags=tags,
        ),
        command_route(
            "POST",
            "/pilots/{pilot_id}/statements/{statement_id}/erasure",
            "Erase a statement's text",
            frozenset({"finance", "admin"}),
            operation_id="eraseStatementText",
            app=RECONCILIATION,
            body=StatementErasureBody,
            run=lambda app, caller, path, body: app.erase_text(
                caller, path.pilot_id, path.value("statement_id"), body
            ),
            response=StatementErasureResult,
            description="Deletes the key that seals the statement's lines' descriptions and "
            "references, and records statement.text_erased: from then on they read [erased]; "
            "amounts, days and matches stay. As for a family's erasure, rotate the "
            "key-encryption keys afterwards for it to reach backups. 404 for a statement "
            "never imported.",
            tags=tags,
        ),
    ]
