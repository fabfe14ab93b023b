"""Assembling a service: pool, event store, outbox relay, consumers, health and OpenAPI.

Each service's ``app.py`` calls :func:`build_service_app` with its definition (see
:mod:`shared.web.registry`), its routes and a ``setup`` function that builds its
application object from the :class:`ServiceCore` and names the consumers it runs.
Resources open in a ``cleanup_ctx`` and close in reverse order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.core.aggregates import Aggregates
from shared.core.background import BackgroundTask
from shared.core.clockwatch import ClockWatch
from shared.core.commands import CommandRunner
from shared.core.consumer import BatchHandler, ConsumerRunner, EventHandler
from shared.core.custody import KeyCustody, custody_of
from shared.core.db import DatabaseWatch, dsn, open_pool
from shared.core.eventstore import EventStore
from shared.core.kafka import DEADLETTER_TOPIC, KafkaWatch
from shared.core.keyholders import KeyWatch
from shared.core.metrics import Metrics
from shared.core.outbox import OutboxRelay
from shared.core.personal import wrap_legacy_keys
from shared.core.schema import apply_migrations
from shared.core.settings import Settings
from shared.core.topics import TopicOwner
from shared.web.asyncapi import asyncapi_document
from shared.web.auth import MIN_SECRET_BYTES, ROLES, ClaimMap, TokenRules
from shared.web.batches import batch_route
from shared.web.http import (
    BODY_TIMEOUT,
    CLOCK,
    MAX_BODY_BYTES,
    METRICS,
    TOKEN_RULES,
    Route,
    json_response,
    middlewares,
)
from shared.web.openapi import openapi_document
from shared.web.signing_keys import ProviderKeys, SharedSecret, fetch_json

if TYPE_CHECKING:
    from shared.web.registry import ServiceDefinition

__all__ = [
    "CONSUMERS",
    "CORE",
    "ConsumerSpec",
    "Readiness",
    "ServiceCore",
    "Setup",
    "build_service_app",
    "check_consumers_declared",
    "consumer_runner",
    "utcnow",
]

_VERSION = "0.1.0"


def utcnow() -> datetime:
    """The ledger's clock in production: now, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServiceCore:
    """What a service's application is built from."""

    service: str
    settings: Settings
    pool: asyncpg.Pool[asyncpg.Record]
    store: EventStore
    aggregates: Aggregates
    commands: CommandRunner
    metrics: Metrics
    custody: KeyCustody
    clock: Callable[[], datetime]
    ids: Callable[[], UUID]
    consumers: dict[str, ConsumerRunner] = field(default_factory=dict)  # by name, once started
    # Background work of the service's own (started after its consumers, stopped before).
    tasks: dict[str, BackgroundTask] = field(default_factory=dict)  # by name

    @classmethod
    def of(
        cls,
        service: str,
        settings: Settings,
        pool: asyncpg.Pool[asyncpg.Record],
        metrics: Metrics,
        custody: KeyCustody,
        clock: Callable[[], datetime],
        ids: Callable[[], UUID],
    ) -> ServiceCore:
        """A service's core on an open pool: its store, aggregates and command runner made
        the one way (by the service as it starts, and by its CLI commands)."""
        store = EventStore(source_of(service), clock, ids, metrics)
        return cls(
            service,
            settings,
            pool,
            store,
            Aggregates(store),
            CommandRunner(pool),
            metrics,
            custody,
            clock,
            ids,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer a service runs: its name, the ledger topics it reads, its handler, and
    optionally a handler of many events at once for its batches' fast path, and what to do
    with a batch's events before any is applied (``prepare``)."""

    name: str
    topics: tuple[str, ...]
    handler: EventHandler
    many: BatchHandler | None = None
    prepare: BatchHandler | None = None


class Readiness:
    """Named checks behind ``/readyz``. A check the service cannot answer without (its
    database) makes it not ready (503), as does draining for shutdown; any other failing
    check (Kafka, the relay, a consumer, a task) makes it degraded: still 200, since it
    answers what it can, with the failing checks named. Each answer is also kept as
    ``ledger_readiness_check{check}``, for alerts."""

    def __init__(self, metrics: Metrics) -> None:
        self._checks: dict[str, tuple[Callable[[], Awaitable[bool]], bool]] = {}
        self._metrics = metrics
        self.draining = False

    def add(self, name: str, check: Callable[[], Awaitable[bool]], *, needed: bool) -> None:
        """Register a check; ``needed``: the service cannot answer while it fails."""
        self._checks[name] = (check, needed)

    async def report(self) -> tuple[str, dict[str, bool]]:
        """``ready``, ``degraded`` or ``not_ready``, and every check's result."""
        results: dict[str, bool] = {}
        for name, (check, _) in self._checks.items():
            try:
                results[name] = await asyncio.wait_for(check(), 2.0)
            except Exception:  # noqa: BLE001 - a failing check is a red check, not a 500
                results[name] = False
        results["accepting"] = not self.draining
        for name, passed in results.items():
            self._metrics.readiness.labels(name).set(1 if passed else 0)
        needed = [results[name] for name, (_, need) in self._checks.items() if need]
        if not self._checks or not all(needed) or self.draining:
            return "not_ready", results
        return ("ready" if all(results.values()) else "degraded"), results


CORE = web.AppKey("core", ServiceCore)
CONSUMERS = web.AppKey("consumers", dict[str, ConsumerRunner])
READINESS = web.AppKey("readiness", Readiness)

Setup = Callable[[web.Application, ServiceCore], Sequence[ConsumerSpec]]


def token_rules(settings: Settings) -> TokenRules:
    """How a service checks tokens: with the council's provider's keys when one is set,
    else with the local stack's shared secret (HS256)."""
    lifetime = timedelta(seconds=settings.jwt_max_lifetime_seconds)
    if settings.oidc_issuer is not None:
        if settings.environment == "production" and not settings.oidc_issuer.startswith("https://"):
            raise ValueError("LEDGER_OIDC_ISSUER must be an https:// URL in production")
        if settings.oidc_audience is None:
            raise ValueError(
                "LEDGER_OIDC_AUDIENCE must be set with LEDGER_OIDC_ISSUER: a token the "
                "provider issued for another application must not be taken"
            )
        pairs = [pair.split("=", 1) for pair in settings.oidc_roles.split(",") if pair.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("LEDGER_OIDC_ROLES is 'value=role,value=role'")
        roles = {value.strip(): role.strip() for value, role in pairs}
        unknown = set(roles.values()) - ROLES
        if unknown:
            raise ValueError(f"LEDGER_OIDC_ROLES names roles the ledger has not: {unknown}")
        keys = ProviderKeys(
            settings.oidc_issuer,
            tuple(name.strip() for name in settings.oidc_algorithms.split(",")),
            fetch=fetch_json(settings.oidc_ca_file),
            refresh_seconds=settings.oidc_jwks_refresh_seconds,
        )
        claims = ClaimMap(
            role_claim=settings.oidc_role_claim,
            roles=roles,
            pilot_claim=settings.oidc_pilot_claim,
            team_claim=settings.oidc_team_claim,
            subject_claim=settings.oidc_subject_claim,
        )
        return TokenRules(
            keys,
            issuer=keys.issuer,
            audience=settings.oidc_audience,
            max_lifetime=lifetime,
            claims=claims,
        )
    secret = settings.jwt_secret.get_secret_value()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"LEDGER_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (it has "
            f"{len(secret.encode())}): anyone who guesses it can mint any role's token"
        )
    if settings.environment == "production":
        # Whoever holds the secret mints any role's token: a council's provider signs.
        if not settings.shared_secret_in_production:
            raise ValueError(
                "in production, tokens come from the council's OpenID Provider: set "
                "LEDGER_OIDC_ISSUER and LEDGER_OIDC_AUDIENCE (or, only to try the stack out "
                "with `ledger token`, LEDGER_SHARED_SECRET_IN_PRODUCTION=yes)"
            )
        structlog.get_logger().warning(
            "tokens_checked_with_a_shared_secret", advice="set LEDGER_OIDC_ISSUER"
        )

    return TokenRules(
        SharedSecret(secret),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        max_lifetime=lifetime,
    )


def service_routes(definition: ServiceDefinition) -> list[Route]:
    """Every route a service serves: its own, its batch endpoint, and the operational ones."""
    routes = definition.routes()
    batches = batch_route(
        routes, lambda app: app[CORE].commands, f"run{definition.name.title()}Batch"
    )
    return [*routes, *([batches] if batches else []), *_operational_routes()]


def service_document(
    definition: ServiceDefinition, settings: Settings, routes: Sequence[Route]
) -> dict[str, Any]:
    """The service's OpenAPI document, as ``/openapi.json`` serves it."""
    return openapi_document(
        title=f"Devolved budgets ledger: {definition.name}",
        version=_VERSION,
        description=definition.description,
        routes=routes,
        port=settings.port_of(definition.name, definition.default_port),
        webhooks=definition.webhooks,
    )


def build_service_app(
    definition: ServiceDefinition,
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    ids: Callable[[], UUID],
    owners: Mapping[str, TopicOwner],
) -> web.Application:
    """The aiohttp application of one service; nothing opens until it starts. ``owners``:
    each ledger topic, the source that alone writes it and what it may carry (its consumers
    reject anything else)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares())
    app[TOKEN_RULES] = token_rules(settings)
    app[CLOCK] = clock
    app[BODY_TIMEOUT] = settings.http_body_timeout_seconds
    custody = custody_of(settings)  # a missing or malformed key-encryption key fails here
    service = definition.name
    app[METRICS] = Metrics(
        service,
        publishes=definition.topic is not None,
        version=_VERSION,
        revision=settings.revision,
    )
    app[READINESS] = Readiness(app[METRICS])
    all_routes = service_routes(definition)
    document = service_document(definition, settings, all_routes)

    events = asyncapi_document(
        title=f"Devolved budgets ledger: {service} events",
        version=_VERSION,
        sends=definition.topic,
        receives=definition.reads,
        bootstrap=settings.kafka_bootstrap,
        tls=settings.kafka_ca_file is not None,
    )
    documents = {"/openapi.json": document, "/asyncapi.json": events}

    async def served(request: web.Request) -> web.Response:
        return web.json_response(documents[request.path])

    for route in all_routes:
        handler = served if route.path in documents else route.guarded()
        app.router.add_route(route.method, route.path, handler)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async for _ in _run_service(app, definition, settings, custody, clock, ids, owners):
            yield

    async def drain(app: web.Application) -> None:
        app[READINESS].draining = True

    app.on_shutdown.append(drain)
    app.cleanup_ctx.append(resources)
    return app


# The whole life of a service, in the order things open (and, after the yield, close).
async def _run_service(
    app: web.Application,
    definition: ServiceDefinition,
    settings: Settings,
    custody: KeyCustody,
    clock: Callable[[], datetime],
    ids: Callable[[], UUID],
    owners: Mapping[str, TopicOwner],
) -> AsyncIterator[None]:
    """Open the pool, migrate, start relay and consumers; on the way out, stop them in reverse."""
    log = structlog.get_logger()
    metrics, readiness = app[METRICS], app[READINESS]
    service = definition.name
    database_dsn = dsn(settings, settings.database_of(service))
    async with open_pool(
        database_dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max
    ) as pool:
        async with pool.acquire() as conn:
            await apply_migrations(conn, definition.all_migrations())
            wrapped = await wrap_legacy_keys(conn, custody)
        if wrapped:
            log.info("legacy_keys_wrapped", count=wrapped)
        core = ServiceCore.of(service, settings, pool, metrics, custody, clock, ids)
        app[CORE] = core
        specs = definition.setup(app, core)
        check_consumers_declared(definition, specs)
        core.tasks["keys"] = KeyWatch(pool, custody, metrics)
        core.tasks["clock"] = ClockWatch(pool, clock, metrics)
        kafka = core.tasks["kafka"] = KafkaWatch(settings.kafka_bootstrap)
        readiness.add("kafka", kafka.check, needed=False)

        database = core.tasks["database"] = DatabaseWatch(database_dsn)
        readiness.add("database", database.check, needed=True)
        relay = _relay(definition, settings, database_dsn, metrics, clock)
        if relay is not None:
            readiness.add("relay", _relay_healthy(relay), needed=False)
            await relay.start()
        runners = [consumer_runner(spec, settings, pool, metrics, owners) for spec in specs]
        core.consumers.update({spec.name: r for spec, r in zip(specs, runners, strict=True)})
        app[CONSUMERS] = core.consumers
        for runner in runners:
            await runner.start()
            readiness.add(f"consumer:{runner.name}", _in_group(runner), needed=False)
        for name, task in core.tasks.items():
            await task.start()
            readiness.add(f"task:{name}", _running(task), needed=False)
        log.info("service_started", port=settings.port_of(service, definition.default_port))
        try:
            yield
        finally:
            readiness.draining = True
            await _stop(list(core.tasks.values()), runners, relay, settings.shutdown_grace_seconds)
            log.info("service_stopped")


async def _stop(
    tasks: Sequence[BackgroundTask],
    runners: Sequence[ConsumerRunner],
    relay: OutboxRelay | None,
    grace: float,
) -> None:
    """The service's own tasks and the consumers first, together (each consumer finishes its
    batch and commits its offsets with it), then the relay, which publishes everything
    committed until then."""
    await asyncio.gather(
        *(task.stop(grace * 0.6) for task in tasks),
        *(runner.stop(grace * 0.6) for runner in runners),
    )
    if relay is not None:
        await relay.stop(grace * 0.4)


def check_consumers_declared(definition: ServiceDefinition, specs: Sequence[ConsumerSpec]) -> None:
    """Consumers read only the topics the service declares and name their groups after it:
    the broker's permissions are made from the declarations (registry.kafka_grants)."""
    for spec in specs:
        undeclared = set(spec.topics) - set(definition.reads)
        if undeclared:
            raise ValueError(
                f"{spec.name} reads {sorted(undeclared)}, not in {definition.name}.reads"
            )
        if not spec.name.startswith(f"{definition.name}."):
            raise ValueError(f"consumer {spec.name} must be named {definition.name}.<name>")


def _relay(
    definition: ServiceDefinition,
    settings: Settings,
    database_dsn: str,
    metrics: Metrics,
    clock: Callable[[], datetime],
) -> OutboxRelay | None:
    if definition.topic is None:
        return None  # a service that publishes nothing (reporting) has no relay
    return OutboxRelay(
        dsn=database_dsn,
        kafka=settings.kafka,
        topic=settings.topic(definition.topic),
        transactional_id=relay_transactional_id(settings, definition.name),
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        metrics=metrics,
        clock=clock,
        stall_seconds=settings.relay_stall_seconds,
        publish_timeout_seconds=settings.relay_publish_timeout_seconds,
    )


def relay_transactional_id(settings: Settings, service: str) -> str:
    """The transactional id of a service's outbox relay: one per service, so that a new
    leader fences off a former one that still thinks it leads."""
    return f"{settings.topic_prefix}ledger-relay-{service}"


def source_of(service: str) -> str:
    """The ``source`` of every event a service's store appends."""
    return f"ledger/{service}"


def consumer_runner(
    spec: ConsumerSpec,
    settings: Settings,
    pool: asyncpg.Pool[asyncpg.Record],
    metrics: Metrics,
    owners: Mapping[str, TopicOwner],
) -> ConsumerRunner:
    """The runner of a consumer a service names, with its configured topics and group."""
    name = f"{settings.topic_prefix}{spec.name}"
    return ConsumerRunner(
        name=name,
        pool=pool,
        kafka=settings.kafka,
        group_id=name,
        topics=[settings.topic(topic) for topic in spec.topics],
        handler=spec.handler,
        deadletter_topic=settings.topic(DEADLETTER_TOPIC),
        batch_size=settings.consumer_batch_size,
        metrics=metrics,
        owners=owners,
        many=spec.many,
        prepare=spec.prepare,
    )


class _Component(Protocol):
    @property
    def running(self) -> bool: ...


def _running(component: _Component) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return component.running

    return check


def _in_group(runner: ConsumerRunner) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return runner.in_group

    return check


def _relay_healthy(relay: OutboxRelay) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return relay.running and relay.healthy

    return check


async def _healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    status, checks = await request.app[READINESS].report()
    failing = sorted(name for name, passed in checks.items() if not passed)
    body: dict[str, Any] = {"status": status, "checks": checks, "failing": failing}
    return json_response(body, status=503 if status == "not_ready" else 200)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _never(_: web.Request) -> web.Response:  # pragma: no cover - replaced when routed
    raise web.HTTPNotFound


def _operational_routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/healthz",
            _healthz,
            "The process is up",
            None,
            operation_id="getHealth",
            tags=("operations",),
        ),
        Route(
            "GET",
            "/readyz",
            _readyz,
            "Ready (200), degraded (200: Kafka, the relay, a consumer or a task failing, named in "
            "`failing`; the service answers what it can) or not ready (503: its database "
            "unreachable, or shutting down)",
            None,
            operation_id="getReadiness",
            tags=("operations",),
        ),
        Route(
            "GET",
            "/metrics",
            _metrics,
            "Prometheus metrics",
            None,
            operation_id="getMetrics",
            content_type="text/plain",
            tags=("operations",),
        ),
        Route(
            "GET",
            "/openapi.json",
            _never,
            "This document",
            None,
            operation_id="getOpenApiDocument",
            tags=("operations",),
        ),
        Route(
            "GET",
            "/asyncapi.json",
            _never,
            "The AsyncAPI 3.0 document of the topics the service sends to and receives from",
            None,
            operation_id="getAsyncApiDocument",
            tags=("operations",),
        ),
    ]
