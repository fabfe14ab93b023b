"""The spending service: spend requests and purchases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.spending import views
from services.spending.handlers import Spending
from services.spending.http import SPENDING, routes
from shared.contracts import allocation, approval, spending
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
    """The spending service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        app[SPENDING] = Spending(core)
        return (ConsumerSpec("spending.views", (allocation.TOPIC, approval.TOPIC), views.apply),)

    return build_service_app(
        SERVICE,
        settings,
        routes=routes(),
        description="Spend requests (request, withdraw, close) and purchases (record, refund).",
        setup=setup,
        clock=clock,
        ids=ids,
    )


SERVICE = ServiceDefinition(
    name="spending",
    default_port=8082,
    create_app=create_app,
    migrations="services.spending",
    topic=spending.TOPIC,
)
