"""Spending's routes: parse, authorise, call the application, answer."""

from __future__ import annotations

from aiohttp import web

from services.spending.handlers import Spending
from services.spending.schemas import (
    CloseBody,
    PurchaseBody,
    PurchaseResult,
    RefundBody,
    RefundResult,
    RequestAccepted,
    RequestView,
    SpendRequestBody,
    WithdrawBody,
)
from shared.web.auth import ROLES
from shared.web.http import PathParams, Route, command_route, json_response, principal_of

__all__ = ["SPENDING", "routes"]

SPENDING = web.AppKey("spending", Spending)
_REQUEST = "/pilots/{pilot_id}/spend-requests/{request_id}"
_WORKERS = frozenset({"case_system", "social_worker"})


async def get_request(request: web.Request) -> web.StreamResponse:
    path = PathParams(request.match_info)
    view = await request.app[SPENDING].view(
        principal_of(request), path.pilot_id, path.uuid("request_id")
    )
    return json_response(view)


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
            response=RequestView,
            description="Social workers and managers see their own team's requests only: another "
            "team's answers 404, as a request that does not exist.",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/withdraw",
            "Withdraw a request (only before a purchase)",
            _WORKERS,
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
            app=SPENDING,
            body=CloseBody,
            run=lambda app, caller, path, body: app.close(
                caller, path.pilot_id, path.uuid("request_id"), body
            ),
            response=RequestView,
            tags=tags,
        ),
    ]
