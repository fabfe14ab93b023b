"""The spending service: spend requests and purchases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.spending import views
from services.spending.handlers import Spending
from services.spending.http import SPENDING, routes
from shared.kafka import SERVICE_TOPICS
from shared.service import ConsumerSpec, ServiceCore, build_service_app, utcnow
from shared.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    ids: Callable[[], UUID] = uuid4,
) -> web.Application:
    """The spending service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        app[SPENDING] = Spending(core)
        return (
            ConsumerSpec(
                "spending.views",
                (SERVICE_TOPICS["allocation"], SERVICE_TOPICS["approval"]),
                views.apply,
            ),
        )

    return build_service_app(
        service="spending",
        settings=settings,
        routes=routes(),
        description="Spend requests (request, withdraw, close) and purchases (record, refund).",
        setup=setup,
        clock=clock,
        ids=ids,
    )
