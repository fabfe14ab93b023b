"""Reporting's routes: balances, history, uptake, transactions and the dashboard."""

from __future__ import annotations

from aiohttp import web

from services.reporting.handlers import Reporting
from services.reporting.schemas import (
    BalanceQuery,
    BalanceView,
    HistoryView,
    UptakeQuery,
    UptakeView,
)
from services.reporting.transactions import COLUMNS
from shared.web.auth import ROLES
from shared.web.http import Route, json_response, principal_of

__all__ = ["REPORTING", "routes"]

REPORTING = web.AppKey("reporting", Reporting)
_FAMILY = "/pilots/{pilot_id}/families/{family_id}"


async def get_balance(request: web.Request) -> web.StreamResponse:
    query = BalanceQuery.model_validate(dict(request.query))
    view = await request.app[REPORTING].balance(
        principal_of(request),
        request.match_info["pilot_id"],
        request.match_info["family_id"],
        query.as_of,
    )
    return json_response(view)


async def get_history(request: web.Request) -> web.StreamResponse:
    view = await request.app[REPORTING].history(
        principal_of(request), request.match_info["pilot_id"], request.match_info["family_id"]
    )
    return json_response(view)


async def get_transactions(request: web.Request) -> web.StreamResponse:
    pilot_id = request.match_info["pilot_id"]
    body = await request.app[REPORTING].transactions(pilot_id)
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{pilot_id}-transactions.csv"'},
    )


async def get_uptake(request: web.Request) -> web.StreamResponse:
    query = UptakeQuery.model_validate(dict(request.query))
    view = await request.app[REPORTING].uptake(
        request.match_info["pilot_id"], suppress_small_cells=query.suppress_small_cells
    )
    return json_response(view)


async def get_dashboard(request: web.Request) -> web.StreamResponse:
    page = await request.app[REPORTING].dashboard(request.match_info["pilot_id"])
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        # The page is self-contained: it may load nothing, run nothing, be framed by no one.
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; frame-ancestors 'none'",
            "Cache-Control": "no-store",
        },
    )


# A table with one entry per endpoint, not logic: it is as long as the API is wide.
def routes() -> list[Route]:
    """Reporting's endpoints of API.md."""
    tags = ("reporting",)
    return [
        Route(
            "GET",
            f"{_FAMILY}/balance",
            get_balance,
            "A family's balance, now or as of a moment",
            ROLES,
            response=BalanceView,
            query=BalanceQuery,
            description="available = allocated - committed - spent for the budget period "
            "containing now, or as_of: then answered by adding up the facts recorded up to "
            "that moment. Social workers and managers see their own team's families only (another "
            "team's answers 404, as a family that does not exist).",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_FAMILY}/history",
            get_history,
            "Every event of the family, in order, with hash-chain fields",
            frozenset({"auditor", "manager", "admin"}),
            response=HistoryView,
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/uptake",
            get_uptake,
            "Uptake and evaluation figures, per pilot and per arm",
            frozenset({"admin", "manager", "auditor"}),
            response=UptakeView,
            query=UptakeQuery,
            description="Computed from every recorded fact. Definitions are on each field; "
            "suppress_small_cells=true shows counts of 1 to 4 families as <5 and hides (null) "
            "every figure that rests on so few families, in each arm and wherever it could be "
            "worked back from the other figures.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/transactions.csv",
            get_transactions,
            "Every purchase and refund, one row each (CSV)",
            frozenset({"admin", "auditor", "finance"}),
            content_type="text/csv",
            description="Columns: " + ", ".join(COLUMNS) + ". Refunds are negative and carry "
            "their purchase's method and vendor. The free-text purpose is never exported.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/dashboard",
            get_dashboard,
            "The pilot's dashboard: uptake figures and charts (HTML)",
            frozenset({"admin", "manager", "auditor"}),
            content_type="text/html",
            description="One self-contained page for a laptop or a phone: the uptake figures "
            "per pilot and arm, spend by category, transaction sizes, families with spend by "
            "month and time to decision. Counts of 1 to 4 families are shown as <5.",
            tags=tags,
        ),
    ]
