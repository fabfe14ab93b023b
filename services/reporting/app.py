"""The reporting service: projections of every topic, and the questions they answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.reporting import commands, projections
from services.reporting.handlers import Reporting
from services.reporting.http import REPORTING, routes
from shared.core.settings import Settings
from shared.web.registry import ServiceDefinition
from shared.web.service import ConsumerSpec, ServiceCore, build_service_app, utcnow

__all__ = ["SERVICE", "create_app"]


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    ids: Callable[[], UUID] = uuid4,
) -> web.Application:
    """The reporting service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        app[REPORTING] = Reporting(core)
        return (projections.CONSUMER,)

    return build_service_app(
        SERVICE,
        settings,
        routes=routes(),
        description="Balances (now or as of a moment) and every family's history, projected "
        "from all three topics and rebuildable from them.",
        setup=setup,
        clock=clock,
        ids=ids,
    )


SERVICE = ServiceDefinition(
    name="reporting",
    default_port=8084,
    create_app=create_app,
    migrations="services.reporting",
    add_commands=commands.add_commands,
)
