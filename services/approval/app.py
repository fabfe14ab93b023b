"""The approval service: decisions on spend requests, holds on families' balances."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.approval.handlers import Approval
from services.approval.http import APPROVAL, routes
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
    """The approval service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        service = Approval(core)
        app[APPROVAL] = service
        # One runner per topic, so that each moves at its own pace (approval.handlers
        # explains how a request waits for the allocation it was made after).
        return (
            ConsumerSpec("approval.allocation", (allocation.TOPIC,), service.on_event),
            ConsumerSpec("approval.spending", (spending.TOPIC,), service.on_event),
        )

    return build_service_app(
        SERVICE,
        settings,
        routes=routes(),
        description="Decisions on spend requests under each pilot's policy, holds on families' "
        "balances, and the managers' queue.",
        setup=setup,
        clock=clock,
        ids=ids,
    )


SERVICE = ServiceDefinition(
    name="approval",
    default_port=8083,
    create_app=create_app,
    migrations="services.approval",
    topic=approval.TOPIC,
)
