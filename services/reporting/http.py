"""Reporting's routes: balances, history, uptake, transactions and the dashboard."""

from __future__ import annotations

from aiohttp import web

from services.reporting.handlers import Reporting
from services.reporting.schemas import (
    BalanceQuery,
    BalanceView,
    DeliveryList,
    DeliveryQuery,
    HistoryView,
    NewSubscriptionView,
    ReplayBody,
    ReplayView,
    StatementQuery,
    SubscriptionBody,
    SubscriptionList,
    SubscriptionView,
    UptakeQuery,
    UptakeView,
)
from services.reporting.signin import FORM, SIGN_IN_PATH, SignInForm, post_sign_in
from services.reporting.transactions import COLUMNS as TRANSACTION_COLUMNS
from services.reporting.trial import COLUMNS
from services.reporting.webhooks import Webhooks
from services.reporting.whatif import WhatIf
from shared.contracts.allocation import PilotConfig
from shared.web.auth import ROLES
from shared.web.http import (
    Command,
    CommandCall,
    PathParams,
    Route,
    bearer_of,
    command_response,
    json_response,
    parse_body,
    parse_json,
    principal_of,
    read_body,
)

__all__ = ["REPORTING", "WEBHOOKS", "routes"]

REPORTING = web.AppKey("reporting", Reporting)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
_WEBHOOK = "/pilots/{pilot_id}/webhooks/{subscription_id}"
_ADMIN = frozenset({"admin"})
_FAMILY = "/pilots/{pilot_id}/families/{family_id}"


async def get_balance(request: web.Request) -> web.StreamResponse:
    query = BalanceQuery.model_validate(dict(request.query))
    view = await request.app[REPORTING].balance(
        principal_of(request),
        request.match_info["pilot_id"],
        request.match_info["family_id"],
        query.as_of,
        query.clock,
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
        principal_of(request),
        request.match_info["pilot_id"],
        suppress_small_cells=query.suppress_small_cells,
    )
    return json_response(view)


# A page of family data: nothing may load, run, frame it or keep it in a cache.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


async def get_statement(request: web.Request) -> web.StreamResponse:
    query = StatementQuery.model_validate(dict(request.query))
    page = await request.app[REPORTING].statement(
        principal_of(request),
        request.match_info["pilot_id"],
        request.match_info["family_id"],
        # Spending judges the caller again by the same token: reporting asks in their name.
        purposes_asked_as=bearer_of(request, page=True) if query.include_purposes else None,
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


async def post_what_if(request: web.Request) -> web.StreamResponse:
    proposal = await parse_body(request, PilotConfig)
    return json_response(
        await request.app[REPORTING].what_if(request.match_info["pilot_id"], proposal)
    )


async def get_trial_dataset(request: web.Request) -> web.StreamResponse:
    pilot_id = request.match_info["pilot_id"]
    body = await request.app[REPORTING].trial_dataset(pilot_id)
    return web.Response(
        body=body,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{pilot_id}-trial-dataset.zip"'},
    )


async def get_dashboard(request: web.Request) -> web.StreamResponse:
    page = await request.app[REPORTING].dashboard(
        principal_of(request), request.match_info["pilot_id"]
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


# Through a Command for its Idempotency-Key (scoped and fingerprinted as every command's),
# though not a line a batch may carry: it records no event.
_SUBSCRIBE = Command(
    "POST",
    "/pilots/{pilot_id}/webhooks",
    WEBHOOKS,
    SubscriptionBody,
    lambda app, caller, path, body: app.create(caller, path.pilot_id, body),
)


async def post_webhook(request: web.Request) -> web.StreamResponse:
    data = parse_json(await read_body(request, "application/json"))
    result = await _SUBSCRIBE.execute(request.app, CommandCall.of(request, data))
    return command_response(request, result)


async def get_webhooks(request: web.Request) -> web.StreamResponse:
    return json_response(await request.app[WEBHOOKS].list(request.match_info["pilot_id"]))


async def delete_webhook(request: web.Request) -> web.StreamResponse:
    params = PathParams(request.match_info)
    view = await request.app[WEBHOOKS].remove(params.pilot_id, params.uuid("subscription_id"))
    return json_response(view)


async def get_deliveries(request: web.Request) -> web.StreamResponse:
    params = PathParams(request.match_info)
    query = DeliveryQuery.model_validate(dict(request.query))
    view = await request.app[WEBHOOKS].deliveries(
        params.pilot_id, params.uuid("subscription_id"), query
    )
    return json_response(view)


async def post_replay(request: web.Request) -> web.StreamResponse:
    params = PathParams(request.match_info)
    body = await parse_body(request, ReplayBody)
    view = await request.app[WEBHOOKS].replay(params.pilot_id, params.uuid("subscription_id"), body)
    return json_response(view)


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
            operation_id="getBalance",
            response=BalanceView,
            query=BalanceQuery,
            description="available = allocated - committed - spent for the budget period "
            "containing now, or as_of: then answered by adding up the facts recorded up to "
            "that moment (clock=record, the default) or that happened by then as their "
            "occurred_at says (clock=business). Social workers and managers see their own "
            "team's families only (another team's answers 404, as a family that does not "
            "exist).",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_FAMILY}/history",
            get_history,
            "Every event of the family, in order, with hash-chain fields",
            frozenset({"auditor", "manager", "admin"}),
            operation_id="getFamilyHistory",
            response=HistoryView,
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/uptake",
            get_uptake,
            "Uptake and evaluation figures, per pilot and per arm",
            frozenset({"admin", "manager", "auditor"}),
            operation_id="getUptake",
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
            operation_id="getTransactionsCsv",
            content_type="text/csv",
            description="Columns: "
            + ", ".join(TRANSACTION_COLUMNS)
            + ". Refunds are negative and carry "
            "their purchase's method and vendor. The free-text purpose is never exported.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/dashboard",
            get_dashboard,
            "The pilot's dashboard: uptake figures and charts (HTML)",
            frozenset({"admin", "manager", "auditor"}),
            operation_id="getDashboard",
            content_type="text/html",
            description="One self-contained page for a laptop or a phone: the uptake figures "
            "per pilot and arm, spend by category, transaction sizes, families with spend by "
            "month and time to decision. Counts of 1 to 4 families are shown as <5.",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_FAMILY}/statement",
            get_statement,
            "A budget statement the family can read (HTML, for a phone or for print)",
            frozenset({"social_worker", "manager", "admin"}),
            operation_id="getFamilyStatement",
            content_type="text/html",
            query=StatementQuery,
            description="This budget period: what the family has been given, what has been "
            "spent on what (category and day) and what is left, as the balance counts it. The "
            "sealed purposes are left out unless include_purposes=true: then reporting asks "
            "spending (GET /pilots/{pilot_id}/families/{family_id}/purposes) with the caller's "
            "own token, shows each purchase's purpose and keeps none of them; 503 "
            "purposes_unavailable (with Retry-After) when spending cannot answer within 5 s. "
            "Self-contained and never cached. When the worker goes "
            "through it with the family, they record it as a disclosure (allocation's POST "
            "/pilots/{pilot_id}/families/{family_id}/disclosures): the 'families told their "
            "budget' figure. Social workers and managers see their own team's families only.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/trial-dataset",
            get_trial_dataset,
            "The trial dataset for evaluators: a Frictionless Data Package (zip)",
            frozenset({"admin", "auditor"}),
            operation_id="getTrialDataset",
            content_type="application/zip",
            description="A zip of datapackage.json and trial-dataset.csv: one row per "
            "enrolled family, in the arm it was randomised to whatever happened later "
            "(intention to treat). Columns: "
            + "; ".join(f"{c.name}: {c.description}" for c in COLUMNS)
            + " Then spent_<category>_pence for each of the pilot's categories and "
            "outcome_<outcome>_on (the day each outcome was first recorded) for each outcome. "
            "Money is in pence.",
            tags=tags,
        ),
        Route(
            "POST",
            SIGN_IN_PATH,
            post_sign_in,
            "Open the pages in a browser, on the local stack (ledger open)",
            None,
            operation_id="signInToPages",
            body=SignInForm,
            body_content_type=FORM,
            content_type="text/html",
            description="Takes a token the local stack's secret signed (what `ledger open` "
            "posts) and keeps it in an HttpOnly, SameSite=Strict cookie for the pilot's "
            "pages, which alone take it (the dashboard and statements; no API call does), "
            "then goes on to `next`. 404 where tokens come from the council's provider: "
            "people sign in through its own front end there.",
            tags=tags,
        ),
        Route(
            "POST",
            "/pilots/{pilot_id}/policy/what-if",
            post_what_if,
            "Replay the pilot's recorded requests under a proposed configuration",
            _ADMIN,
            operation_id="runWhatIf",
            body=PilotConfig,
            response=WhatIf,
            description="The body is a pilot configuration as PUT /pilots/{pilot_id} takes "
            "it (tiers, family cap, categories, forecast). Every recorded spend request is "
            "judged again in recorded order: refused when its category is not proposed "
            "(category_not_allowed) or when it would take its family's period past what it "
            "was allocated, capped at the proposed family cap (over_family_cap); else decided "
            "by the tier its amount falls in. Per scope (all, arm:<arm>, team:<team>): how "
            "many each way as recorded and as proposed, the median hours to decision (a "
            "request decided as recorded keeps its hours; one moved to an auto tier takes the "
            "recorded automatic median, to a manager the team's recorded manager median) and "
            "spend against forecast without the refused requests' spend. Nothing is recorded.",
            tags=("policy",),
        ),
        *_webhook_routes(),
    ]


def _webhook_routes() -> list[Route]:
    tags = ("webhooks",)
    return [
        Route(
            "POST",
            "/pilots/{pilot_id}/webhooks",
            post_webhook,
            "Subscribe a case system to the pilot's events (its secret is shown once)",
            _ADMIN,
            operation_id="createWebhook",
            body=SubscriptionBody,
            response=NewSubscriptionView,
            status=201,
            description="Each event of the chosen types recorded from now on is POSTed to the "
            "url as a CloudEvent (content-type application/cloudevents+json, the body as on "
            "Kafka), signed as the Standard Webhooks specification says: webhook-id (the "
            "event's id: deduplicate on it), webhook-timestamp (Unix seconds) and "
            "webhook-signature (v1, HMAC-SHA256 of id.timestamp.body under the secret). A "
            "family's events arrive in order, one at a time. Anything but a 2xx is retried, "
            "waits doubling from 5 s to at most 1 hour, for 24 hours; then the delivery is "
            "dead (listed under deliveries) and the family's next events go on. Delivery is "
            "at least once: a 2xx that is lost on the way back brings the event again.",
            tags=tags,
        ),
        Route(
            "GET",
            "/pilots/{pilot_id}/webhooks",
            get_webhooks,
            "The pilot's webhook subscriptions (never their secrets)",
            _ADMIN,
            operation_id="listWebhooks",
            response=SubscriptionList,
            tags=tags,
        ),
        Route(
            "DELETE",
            _WEBHOOK,
            delete_webhook,
            "Remove a subscription: nothing more is sent, and its secret is erased",
            _ADMIN,
            operation_id="deleteWebhook",
            response=SubscriptionView,
            description="Removing one already removed answers it as it is.",
            tags=tags,
        ),
        Route(
            "GET",
            f"{_WEBHOOK}/deliveries",
            get_deliveries,
            "A subscription's deliveries, by position: pending, delivered or dead",
            _ADMIN,
            operation_id="listWebhookDeliveries",
            response=DeliveryList,
            query=DeliveryQuery,
            description="Oldest first, after the position given; status=dead lists what "
            "was still failing after the retry window.",
            tags=tags,
        ),
        Route(
            "POST",
            f"{_WEBHOOK}/replay",
            post_replay,
            "Send a subscription's deliveries again, from a position on",
            _ADMIN,
            operation_id="replayWebhookDeliveries",
            body=ReplayBody,
            response=ReplayView,
            description="Every delivery from from_position on (dead, delivered or pending) "
            "is sent again, in order, with its own webhook-id: a receiver that deduplicates "
            "takes each once. A removed subscription answers 409.",
            tags=tags,
        ),
    ]
