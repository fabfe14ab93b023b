"""The reporting service: projections of every topic, and the questions they answer."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.reporting import commands, projections
from services.reporting.handlers import Reporting
from services.reporting.http import REPORTING, routes
from shared.contracts import TOPICS
from shared.web.registry import ServiceDefinition
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = ["SERVICE", "create_app"]


def _setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
    app[REPORTING] = Reporting(core)
    return (projections.CONSUMER,)


SERVICE = ServiceDefinition(
    name="reporting",
    default_port=8084,
    description="Balances (now or as of a moment) and every family's history, projected "
    "from all three topics and rebuildable from them.",
    routes=routes,
    setup=_setup,
    migrations="services.reporting",
    reads=TOPICS,
    add_commands=commands.add_commands,
)
create_app = SERVICE.create_app
