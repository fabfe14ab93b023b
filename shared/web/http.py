"""The HTTP layer every service shares: routes, guards, problem+json, request context.

Handlers stay thin: a :class:`Route` says who may call it and which models it reads and
returns (the OpenAPI document is generated from that), ``guard`` authenticates and checks
role and pilot, :func:`parse_body` turns the body into a command model, and one middleware
turns every error into RFC 9457 ``application/problem+json``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.contracts.business_time import check_occurred_at
from shared.core.commands import CommandResult, IdempotencyRequest, fingerprint
from shared.core.db import is_transient
from shared.core.errors import LedgerError, NotFoundError
from shared.core.events import Actor, canonical_json
from shared.core.eventstore import CommandContext
from shared.core.metrics import Metrics
from shared.core.problems import ProblemCode
from shared.core.types import CommandBody, free_text_fields
from shared.web.auth import Principal, TokenRules, decode_token, require_pilot, require_role

__all__ = [
    "BODY_TIMEOUT",
    "CLOCK",
    "MAX_BODY_BYTES",
    "METRICS",
    "PAGE_COOKIE",
    "SAFE_HEADERS",
    "TOKEN_RULES",
    "Caller",
    "Command",
    "CommandCall",
    "Handler",
    "HttpProblemError",
    "PathParams",
    "Route",
    "bearer_of",
    "command_response",
    "command_route",
    "json_response",
    "middlewares",
    "parse_body",
    "parse_json",
    "principal_of",
    "problem_of",
    "problem_response",
    "read_body",
    "validate_body",
]

MAX_BODY_BYTES = 1024 * 1024
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
PROBLEM_JSON = "application/problem+json"
TOKEN_RULES = web.AppKey("token_rules", TokenRules)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # seconds to read a request's body
METRICS = web.AppKey("metrics", Metrics)
_PRINCIPAL = web.RequestKey("principal", Principal)
_CORRELATION = web.RequestKey("correlation_id", str)
_REQUEST_ID = web.RequestKey("request_id", str)
_KEY_CHARS = frozenset(chr(code) for code in range(0x21, 0x7F))
# Ids a caller may give (request, correlation, causation) are kept in events for good: a
# short token of safe characters, else the ledger mints its own.
_CALLER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _caller_id(value: str | None) -> str | None:
    return value if value is not None and _CALLER_ID.match(value) else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ModelT = TypeVar("ModelT", bound=BaseModel)
AppT = TypeVar("AppT")
# What a path parameter that is not a UUID is reported as not finding.
_UUID_NOUNS = {"request_id": "spend request", "purchase_id": "purchase"}


@dataclass(frozen=True)
class Caller:
    """Who sends a command: their verified token, the event metadata, their idempotency key."""

    principal: Principal
    context: CommandContext
    idempotency: IdempotencyRequest | None


class PathParams:
    """A request's path parameters, read the same way by every route."""

    def __init__(self, match: Mapping[str, str]) -> None:
        self._match = match

    @property
    def pilot_id(self) -> str:
        """The pilot the path names (the guard has checked the token is for it)."""
        return self._match["pilot_id"]

    @property
    def family_id(self) -> str:
        """The family the path names."""
        return self._match["family_id"]

    def value(self, name: str) -> str:
        """Any other parameter the path names, as written."""
        return self._match[name]

    def uuid(self, name: str) -> UUID:
        """A UUID the path names; one that is not a UUID names nothing (404)."""
        try:
            return UUID(self._match[name])
        except ValueError as error:
            noun = _UUID_NOUNS.get(name, name.removesuffix("_id"))
            raise NotFoundError(f"no such {noun}") from error


@dataclass(frozen=True)
class Route:
    """One endpoint: its handler, who may call it, and the models that describe it."""

    method: str
    path: str
    handler: Handler
    summary: str
    roles: frozenset[str] | None  # None: public (health, metrics, the OpenAPI document)
    # The operation's name in the OpenAPI document, which generated clients name their
    # calls by (camelCase, unique across the four services): enrolFamily, recordPurchase.
    operation_id: str = ""
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    description: str = ""
    query: type[BaseModel] | None = None
    content_type: str = "application/json"
    tags: tuple[str, ...] = field(default_factory=tuple)
    # Answers 503 with Retry-After when what it needs is not there yet (documented as such).
    may_be_unavailable: bool = False
    # Other success statuses it may answer, with what each means (PUT: 201 or 200).
    also: tuple[tuple[int, str], ...] = ()
    # A command's endpoint: what runs it, also from a line of a batch (shared.web.batches).
    command: Command | None = None
    body_content_type: str = "application/json"
    # A body that is a file, not JSON: the content types it may come as (documented as text).
    file_body: tuple[str, ...] = ()

    def guarded(self) -> Handler:
        """The handler behind authentication, role and pilot checks."""
        if self.roles is None:
            return self.handler
        roles, handler = self.roles, self.handler

        page = self.method == "GET" and self.content_type == "text/html"

        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = await decode_token(bearer_of(request, page=page), request.app[TOKEN_RULES])
            require_role(principal, roles)
            pilot_id = request.match_info.get("pilot_id")
            if pilot_id is not None:
                require_pilot(principal, pilot_id)
                structlog.contextvars.bind_contextvars(pilot_id=pilot_id)
            request[_PRINCIPAL] = principal
            return await handler(request)

        return guarded


# A page (dashboard, statement) opened in a browser carries its token in this cookie, set by
# the local stack's sign-in (services/reporting/signin.py): HttpOnly, SameSite=Strict, for
# the pilot's pages only. Nothing but a page takes it.
PAGE_COOKIE = "ledger_page_token"


def bearer_of(request: web.Request, *, page: bool = False) -> str | None:
    """The request's ``Authorization`` header; for a page without one, the page cookie's
    token as such a header."""
    header = request.headers.get("Authorization")
    if header is None and page and PAGE_COOKIE in request.cookies:
        return f"Bearer {request.cookies[PAGE_COOKIE]}"
    return header


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a guarded route."""
    return request[_PRINCIPAL]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_body(request: web.Request, content_type: str) -> bytes:
    """The request's body: 408 if it trickles in, 415 if it is not ``content_type``.

    The type is required even of an empty body. A page on another site can make a browser
    send a form, ``text/plain`` or no body at all without asking first, with the cookies
    a council's sign-on proxy turns into a bearer token; a JSON (or any other) type it can
    send only after a CORS preflight, which the ledger never answers. So a command sent
    without its own type (an approval, say) is refused before anything is read."""
    if request.content_type != content_type:
        raise HttpProblemError(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"send the body as {content_type} (with Content-Type: {content_type}, even "
            "when it is empty)",
        )
    try:
        # A client that trickles its body holds a connection and a worker: not for long.
        return await asyncio.wait_for(request.read(), request.app[BODY_TIMEOUT])
    except TimeoutError as error:
        raise HttpProblemError(
            408, "request_timeout", "Request timeout", "the body did not arrive in time"
        ) from error


async def parse_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The JSON body as ``model``: 415 if not JSON, 400 if malformed, 422 if invalid."""
    return validate_body(model, parse_json(await read_body(request, "application/json")))


def validate_body(model: type[ModelT], data: object) -> ModelT:
    """JSON as a command's model (422 if it does not fit)."""
    # Validated as JSON, so strict fields take JSON's own types: dates as "YYYY-MM-DD",
    # money as integers (a float, a string or a boolean is refused).
    return model.model_validate_json(json.dumps(data))


def parse_json(raw: bytes) -> object:
    """A body's JSON, checked as every body is: 400 if malformed, too deep, or holding NUL.
    An empty body is an empty object."""
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
        except RecursionError as error:
            raise HttpProblemError(
                400, "malformed_json", "Malformed JSON", "the body is nested too deeply"
            ) from error
        except (ValueError, UnicodeDecodeError) as error:
            raise HttpProblemError(
                400, "malformed_json", "Malformed JSON", f"the body is not valid JSON: {error}"
            ) from error
    _check_json(data)
    return data


# On every answer: most carry family data, and none is for a cache, a sniffer or a referrer.
SAFE_HEADERS = {
    "Server": "ledger",  # not which server, nor its version
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
UNAVAILABLE_RETRY_AFTER = 2  # seconds: a database restart or failover is usually that quick
_MAX_DEPTH = 16  # far deeper than any body of the API


def _check_json(value: object, depth: int = 0) -> None:
    """Refuse what no body of the API holds and PostgreSQL cannot store: deep nesting, NUL."""
    if depth > _MAX_DEPTH:
        raise HttpProblemError(
            400, "malformed_json", "Malformed JSON", "the body is nested too deeply"
        )
    if isinstance(value, str):
        if "\x00" in value:
            raise HttpProblemError(
                400, "malformed_json", "Malformed JSON", "text may not contain NUL (\\u0000)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


@dataclass(frozen=True)
class CommandCall:
    """One call of a command, however it came: a request of its own, or a batch's line."""

    principal: Principal
    path: str  # as called, e.g. /pilots/wigan/families
    params: Mapping[str, str]  # the path's parameters
    data: object  # the JSON body, read and checked (parse_json)
    idempotency_key: str | None
    correlation_id: str
    causation_id: str | None

    @classmethod
    def of(cls, request: web.Request, data: object) -> CommandCall:
        """A request's call of its route's command."""
        return cls(
            principal=principal_of(request),
            path=request.path,
            params=request.match_info,
            data=data,
            idempotency_key=request.headers.get("Idempotency-Key"),
            correlation_id=request[_CORRELATION],
            causation_id=_caller_id(request.headers.get("X-Causation-Id")),
        )


@dataclass(frozen=True)
class Command:
    """A command endpoint's work apart from HTTP: validate the body, say who calls, run it on
    the service. A request of its own and a line of a batch go through this alike."""

    method: str
    template: str  # the route's path, e.g. /pilots/{pilot_id}/families
    app: web.AppKey[Any]
    body: type[BaseModel]
    run: Callable[[Any, Caller, PathParams, Any], Awaitable[CommandResult]]

    async def execute(self, app: web.Application, call: CommandCall) -> CommandResult:
        """422 if the body does not fit, 400 for a bad key; else what the service answers."""
        parsed = validate_body(self.body, call.data)
        occurred_at = parsed.occurred_at if isinstance(parsed, CommandBody) else None
        if occurred_at is not None:
            # Kept in UTC, and refused in the future (the bounds that need a pilot's
            # configuration or a family are the services' to check).
            occurred_at = occurred_at.astimezone(UTC)
            check_occurred_at(occurred_at, app[CLOCK](), backdating_days=None, enrolled_on=None)
        caller = Caller(
            principal=call.principal,
            context=CommandContext(
                actor=Actor(sub=call.principal.sub, role=call.principal.role),
                correlation_id=call.correlation_id,
                causation_id=call.causation_id,
                occurred_at=occurred_at,
            ),
            idempotency=self.idempotency(call),
        )
        return await self.run(app[self.app], caller, PathParams(call.params), parsed)

    def idempotency(self, call: CommandCall) -> IdempotencyRequest | None:
        key = call.idempotency_key
        if key is None:
            return None
        if not 1 <= len(key) <= 128 or not set(key) <= _KEY_CHARS:
            raise HttpProblemError(
                400,
                "bad_idempotency_key",
                "Bad Idempotency-Key",
                "Idempotency-Key must be 1 to 128 printable characters",
            )
        principal = call.principal
        operation = f"{self.method} {self.template}"
        # Free text is left out of the fingerprint: a hash of it, kept with the key for good,
        # would confirm a guess at a purpose or a note long after the family's erasure. A
        # retry that differs from the first request only in its wording replays its answer.
        free = free_text_fields(self.body)
        data = call.data
        if free and isinstance(data, dict):
            data = {name: value for name, value in data.items() if name not in free}
        return IdempotencyRequest(
            # Another pilot, role or operation never sees (or collides with) this caller's key.
            scope=canonical_json(
                [principal.pilot, principal.role, principal.sub, operation]
            ).decode(),
            key=key,
            fingerprint=fingerprint(self.method, call.path, data),
        )


def command_route(
    method: str,
    path: str,
    summary: str,
    roles: frozenset[str],
    *,
    operation_id: str,
    app: web.AppKey[AppT],
    body: type[ModelT],
    run: Callable[[AppT, Caller, PathParams, ModelT], Awaitable[CommandResult]],
    response: type[BaseModel] | None = None,
    status: int = 200,
    description: str = "",
    tags: tuple[str, ...] = (),
    may_be_unavailable: bool = False,
    also: tuple[tuple[int, str], ...] = (),
) -> Route:
    """A command as an endpoint: parse the body, authorise, run it on the service, answer."""
    command = Command(method, path, app, body, run)

    async def handler(request: web.Request) -> web.StreamResponse:
        data = parse_json(await read_body(request, "application/json"))
        result = await command.execute(request.app, CommandCall.of(request, data))
        return command_response(request, result)

    return Route(
        method,
        path,
        handler,
        summary,
        roles,
        operation_id=operation_id,
        body=body,
        response=response,
        status=status,
        description=description,
        tags=tags,
        may_be_unavailable=may_be_unavailable,
        also=also,
        command=command,
    )


def json_response(body: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response from a model or a plain dict."""
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return web.json_response(payload, status=status)


def command_response(request: web.Request, result: CommandResult) -> web.Response:
    """The response to a command, counting answers replayed from an idempotency key."""
    if result.replayed:
        request.app[METRICS].idempotent_replays.inc()
    response = web.json_response(result.body, status=result.status)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


class HttpProblemError(LedgerError):
    """An HTTP-level error (415, 400) that belongs to no domain."""

    def __init__(self, status: int, code: ProblemCode, title: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status  # type: ignore[misc]  # set per instance
        self.title = title  # type: ignore[misc]  # set per instance


def problem_response(
    status: int,
    code: ProblemCode,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {
        "type": f"urn:ledger:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return web.Response(
        text=json.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


def _field_errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "(body)",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]


_HTTP_CODES: dict[int, tuple[ProblemCode, str]] = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
}


def problem_of(error: BaseException, path: str, method: str) -> web.Response:
    """The problem document that answers an error raised by a call of ``method`` ``path``."""
    if isinstance(error, LedgerError):
        retry = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
        return problem_response(
            error.status, error.code, error.title, error.detail, instance=path, headers=retry
        )
    if isinstance(error, ValidationError):
        return problem_response(
            422,
            "validation_failed",
            "Validation failed",
            "the request does not match the schema; see errors",
            instance=path,
            errors=_field_errors(error),
        )
    if isinstance(error, web.HTTPException):
        code, title = _HTTP_CODES.get(error.status, ("http_error", error.reason))
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        detail = {
            404: f"nothing is served at {path}",
            405: f"{method} is not allowed on {path}",
            413: f"the body is larger than {MAX_BODY_BYTES} bytes",
        }.get(error.status, error.text or error.reason)
        return problem_response(error.status, code, title, detail, instance=path, headers=headers)
    if is_transient(error):  # the database is away: say so, and when to come back
        structlog.get_logger().warning("request_unavailable", error=repr(error))
        return problem_response(
            503,
            "unavailable",
            "Service unavailable",
            "the ledger's database cannot be reached just now; retry (with the same "
            "Idempotency-Key, a retry is never recorded twice)",
            instance=path,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    structlog.get_logger().exception("request_failed")
    return problem_response(
        500,
        "internal_error",
        "Internal error",
        "the ledger could not answer; try again",
        instance=path,
    )


@web.middleware
async def _context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _caller_id(request.headers.get("X-Request-Id")) or str(uuid.uuid4())
    correlation_id = _caller_id(request.headers.get("X-Correlation-Id")) or request_id
    request[_REQUEST_ID], request[_CORRELATION] = request_id, correlation_id
    structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except Exception as error:  # noqa: BLE001 - every error becomes a problem document
            response = problem_of(error, request.path, request.method)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        response.headers["X-Correlation-Id"] = correlation_id
        response.headers.update(SAFE_HEADERS)
        return response
    finally:
        elapsed = time.perf_counter() - started
        metrics = request.app[METRICS]
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "(unmatched)"
        metrics.http_latency.labels(request.method, label).observe(elapsed)
        metrics.http_requests(request.method, label, str(status)).inc()
        # The route template, never the path: paths hold family references. Probes and
        # scrapes come every few seconds: logged at debug.
        log = structlog.get_logger()
        (log.debug if label in _PROBES else log.info)(
            "request_handled",
            method=request.method,
            route=label,
            status=status,
            duration_ms=round(elapsed * 1000, 1),
        )
        structlog.contextvars.unbind_contextvars("request_id", "correlation_id", "pilot_id")


@web.middleware
async def _no_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No id holds NUL, and PostgreSQL cannot compare one: 404 before any query."""
    if "\x00" in request.path:
        raise NotFoundError("nothing here has a NUL in its name")
    return await handler(request)


def middlewares() -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    """The middleware every service runs (the first wraps the others)."""
    return [_context, _no_nul]
