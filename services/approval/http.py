"""Approval's routes: the managers' queue and their decisions."""

from __future__ import annotations

from aiohttp import web

from services.approval.handlers import Approval
from services.approval.schemas import (
    DecisionBody,
    DecisionResult,
    PendingList,
    PendingQuery,
    RejectionBody,
)
from shared.web.http import PathParams, Route, command_route, json_response, principal_of

__all__ = ["APPROVAL", "routes"]

APPROVAL = web.AppKey("approval", Approval)
_REQUEST = "/pilots/{pilot_id}/spend-requests/{request_id}"


async def get_pending(request: web.Request) -> web.StreamResponse:
    PendingQuery.model_validate(dict(request.query))
    listing = await request.app[APPROVAL].pending(
        principal_of(request), PathParams(request.match_info).pilot_id
    )
    return json_response(listing)


# A table with one entry per endpoint, not logic: it is as long as the API is wide.
def routes() -> list[Route]:
    """Every approval endpoint of API.md."""
    tags = ("approval",)
    return [
        Route(
            "GET",
            "/pilots/{pilot_id}/approvals",
            get_pending,
            "Requests awaiting a manager, oldest first",
            frozenset({"manager", "auditor"}),
            operation_id="listPendingApprovals",
            response=PendingList,
            query=PendingQuery,
            description="Managers see their own team's requests; auditors see all.",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/approve",
            "Approve a referred request",
            frozenset({"manager"}),
            operation_id="approveSpendRequest",
            app=APPROVAL,
            body=DecisionBody,
            run=lambda app, caller, path, body: app.decide_by_manager(
                caller, path.pilot_id, path.uuid("request_id"), body, approve=True
            ),
            response=DecisionResult,
            description="403 self_approval when the manager made the request; 422 "
            "insufficient_funds when the family cannot afford it now (nothing is recorded).",
            tags=tags,
        ),
        command_route(
            "POST",
            f"{_REQUEST}/reject",
            "Reject a referred request",
            frozenset({"manager"}),
            operation_id="rejectSpendRequest",
            app=APPROVAL,
            body=RejectionBody,
            run=lambda app, caller, path, body: app.decide_by_manager(
                caller,
                path.pilot_id,
                path.uuid("request_id"),
                DecisionBody(note=body.reason, occurred_at=body.occurred_at),
                approve=False,
            ),
            response=DecisionResult,
            tags=tags,
        ),
    ]
