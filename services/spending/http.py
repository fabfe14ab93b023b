"""Spending's routes: parse, authorise, call the application, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

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
from shared.auth import ROLES
from shared.commands import Caller, CommandResult
from shared.errors import NotFoundError
from shared.http import (
    Handler,
    Route,
    caller_of,
    command_response,
    json_response,
    parse_body,
    principal_of,
)
from shared.types import CommandBody

__all__ = ["SPENDING", "routes"]

SPENDING = web.AppKey("spending", Spending)
BodyT = TypeVar("BodyT", bound=CommandBody)
_REQUEST = "/pilots/{pilot_id}/spend-requests/{request_id}"
_WORKERS = frozenset({"case_system", "social_worker"})


def _uuid(request: web.Request, name: str) -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError as error:
        raise NotFoundError(f"no such {name.removesuffix('_id')}") from error


Method = Callable[[Spending, Caller, str, UUID, BodyT], Awaitable[CommandResult]]


def _on(path_id: str, body_model: type[BodyT], method: Method[BodyT]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await parse_body(request, body_model)
        result = await method(
            request.app[SPENDING],
            caller_of(request, body.occurred_at),
            request.match_info["pilot_id"],
            _uuid(request, path_id),
            body,
        )
        return command_response(request, result)

    return handler


async def post_request(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, SpendRequestBody)
    result = await request.app[SPENDING].request(
        caller_of(request, body.occurred_at), request.match_info["pilot_id"], body
    )
    return command_response(request, result)


async def get_request(request: web.Request) -> web.StreamResponse:
    view = await request.app[SPENDING].view(
        principal_of(request), request.match_info["pilot_id"], _uuid(request, "request_id")
    )
    return json_response(view)


def routes() -> list[Route]:
    """Every spending endpoint of API.md."""
    tags = ("spending",)
    return [
        Route(
            "POST",
            "/pilots/{pilot_id}/spend-requests",
            post_request,
            "Request to spend with a family",
            _WORKERS,
            body=SpendRequestBody,
            response=RequestAccepted,
            status=202,
            description="Accepted when recorded; approval decides next (automatically within "
            "an auto tier, else a manager of the family's team). 422 for an unknown or exited "
            "family, an unknown category or a family in the control arm. The purpose is sealed "
            "(erasable) and never logged or exported.",
            tags=tags,
        ),
        Route(
            "GET",
            _REQUEST,
            get_request,
            "A request's status and money",
            ROLES,
            response=RequestView,
            description="Social workers and managers see their own team's requests only.",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_REQUEST}/withdraw",
            _on("request_id", WithdrawBody, Spending.withdraw),
            "Withdraw a request (only before a purchase)",
            _WORKERS,
            body=WithdrawBody,
            response=RequestView,
            tags=tags,
        ),
        Route(
            "POST",
            f"{_REQUEST}/purchases",
            _on("request_id", PurchaseBody, Spending.purchase),
            "Record a purchase against an approved request",
            frozenset({"case_system", "social_worker", "finance"}),
            body=PurchaseBody,
            response=PurchaseResult,
            status=201,
            description="Purchases may total at most the approved amount (422 exceeds_approved).",
            tags=tags,
        ),
        Route(
            "POST",
            "/pilots/{pilot_id}/purchases/{purchase_id}/refunds",
            _on("purchase_id", RefundBody, Spending.refund),
            "Record money returned from a purchase",
            frozenset({"finance", "case_system"}),
            body=RefundBody,
            response=RefundResult,
            status=201,
            description="Refunds may total at most the purchase (422 exceeds_purchase).",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_REQUEST}/close",
            _on("request_id", CloseBody, Spending.close),
            "Close a request, releasing the unspent part of its approval",
            frozenset({"case_system", "social_worker", "finance"}),
            body=CloseBody,
            response=RequestView,
            tags=tags,
        ),
    ]
