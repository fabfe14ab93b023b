"""Approval's routes: the managers' queue and their decisions."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from services.approval.handlers import Approval
from services.approval.schemas import (
    DecisionBody,
    DecisionResult,
    PendingList,
    PendingQuery,
    RejectionBody,
)
from shared.errors import NotFoundError
from shared.http import Route, caller_of, command_response, json_response, parse_body, principal_of

__all__ = ["APPROVAL", "routes"]

APPROVAL = web.AppKey("approval", Approval)
_REQUEST = "/pilots/{pilot_id}/spend-requests/{request_id}"


def _request_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["request_id"])
    except ValueError as error:
        raise NotFoundError("no such spend request") from error


async def get_pending(request: web.Request) -> web.StreamResponse:
    PendingQuery.model_validate(dict(request.query))
    listing = await request.app[APPROVAL].pending(
        principal_of(request), request.match_info["pilot_id"]
    )
    return json_response(listing)


async def post_approve(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, DecisionBody)
    result = await request.app[APPROVAL].decide_by_manager(
        caller_of(request, body.occurred_at),
        request.match_info["pilot_id"],
        _request_id(request),
        body,
        approve=True,
    )
    return command_response(request, result)


async def post_reject(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, RejectionBody)
    result = await request.app[APPROVAL].decide_by_manager(
        caller_of(request, body.occurred_at),
        request.match_info["pilot_id"],
        _request_id(request),
        DecisionBody(note=body.reason, occurred_at=body.occurred_at),
        approve=False,
    )
    return command_response(request, result)


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
            response=PendingList,
            query=PendingQuery,
            description="Managers see their own team's requests; auditors see all.",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_REQUEST}/approve",
            post_approve,
            "Approve a referred request",
            frozenset({"manager"}),
            body=DecisionBody,
            response=DecisionResult,
            description="403 self_approval when the manager made the request; 422 "
            "insufficient_funds when the family cannot afford it now (nothing is recorded).",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_REQUEST}/reject",
            post_reject,
            "Reject a referred request",
            frozenset({"manager"}),
            body=RejectionBody,
            response=DecisionResult,
            tags=tags,
        ),
    ]
