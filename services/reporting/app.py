"""The reporting service: projections of every topic, and the questions they answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from aiohttp import web

from services.reporting import commands, projections, webhooks
from services.reporting.deliveries import Dispatcher, RetryPolicy
from services.reporting.destinations import Destinations, networks_of
from services.reporting.handlers import Reporting
from services.reporting.http import REPORTING, WEBHOOKS, routes
from services.reporting.purposes import SpendingPurposes
from shared.contracts import TOPICS
from shared.core.settings import Settings
from shared.web.registry import ServiceDefinition, service
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = ["SERVICE", "create_app"]


PURPOSES_TIMEOUT_SECONDS = 5.0  # then a statement with purposes answers 503


def _spending_url(settings: Settings) -> str:
    if settings.spending_url is not None:
        return settings.spending_url
    return f"http://127.0.0.1:{settings.port_of('spending', service('spending').default_port)}"


def _setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
    settings = core.settings
    purposes = SpendingPurposes(_spending_url(settings), timeout_seconds=PURPOSES_TIMEOUT_SECONDS)
    app[REPORTING] = Reporting(core, purposes)
    destinations = Destinations(networks_of(settings.webhook_allowed_networks))
    app[WEBHOOKS] = webhooks.Webhooks(core, destinations)
    core.tasks["webhooks"] = Dispatcher(
        core.pool,
        core.custody,
        core.metrics,
        core.clock,
        policy=RetryPolicy(
            window=timedelta(seconds=settings.webhook_retry_window_seconds),
            first_retry=timedelta(seconds=settings.webhook_first_retry_seconds),
            max_backoff=timedelta(seconds=settings.webhook_max_backoff_seconds),
        ),
        timeout_seconds=settings.webhook_timeout_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        destinations=destinations,
    )
    return (projections.CONSUMER, webhooks.CONSUMER)


SERVICE = ServiceDefinition(
    name="reporting",
    default_port=8084,
    description="Balances (now or as of a moment) and every family's history, projected "
    "from all three topics and rebuildable from them; and webhooks that send case systems "
    "the events they subscribe to, signed as Standard Webhooks says.",
    routes=routes,
    setup=_setup,
    migrations="services.reporting",
    reads=TOPICS,
    add_commands=commands.add_commands,
    webhooks=webhooks.OPENAPI_WEBHOOKS,
)
create_app = SERVICE.create_app
