"""The approval service: decisions on spend requests, holds on families' balances."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.approval import recovery
from services.approval.handlers import Approval, lock_in_order
from services.approval.http import APPROVAL, routes
from shared.contracts import allocation, approval, spending
from shared.web.registry import ServiceDefinition
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = ["SERVICE", "create_app"]


def _setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
    service = Approval(core)
    app[APPROVAL] = service
    # One runner per topic, so that each moves at its own pace (approval.handlers
    # explains how a request waits for the allocation it was made after).
    return (
        ConsumerSpec(
            "approval.allocation", (allocation.TOPIC,), service.on_event, prepare=lock_in_order
        ),
        ConsumerSpec(
            "approval.spending", (spending.TOPIC,), service.on_event, prepare=lock_in_order
        ),
    )


SERVICE = ServiceDefinition(
    name="approval",
    default_port=8083,
    description="Decisions on spend requests under each pilot's policy, holds on families' "
    "balances, and the managers' queue.",
    routes=routes,
    setup=_setup,
    migrations="services.approval",
    publishes=approval.CONTRACT,
    reads=(allocation.TOPIC, spending.TOPIC),
    effects=recovery.put_back,
)
create_app = SERVICE.create_app
