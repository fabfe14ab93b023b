"""The approval service: decisions on spend requests, holds on families' balances."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.approval.handlers import Approval
from services.approval.http import APPROVAL, routes
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
    """The approval service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        approval = Approval(core)
        app[APPROVAL] = approval
        # One runner per topic, so that each moves at its own pace (approval.handlers
        # explains how a request waits for the allocation it was made after).
        return (
            ConsumerSpec("approval.allocation", (SERVICE_TOPICS["allocation"],), approval.on_event),
            ConsumerSpec("approval.spending", (SERVICE_TOPICS["spending"],), approval.on_event),
        )

    return build_service_app(
        service="approval",
        settings=settings,
        routes=routes(),
        description="Decisions on spend requests under each pilot's policy, holds on families' "
        "balances, and the managers' queue.",
        setup=setup,
        clock=clock,
        ids=ids,
    )
