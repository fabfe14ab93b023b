"""The spending service: spend requests and purchases."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.spending import recovery, views
from services.spending.handlers import Spending
from services.spending.http import RECONCILIATION, SPENDING, routes
from services.spending.reconciliation import Reconciliation
from shared.contracts import allocation, approval, spending
from shared.web.registry import ServiceDefinition
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = ["SERVICE", "create_app"]


def _setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
    app[SPENDING] = Spending(core)
    app[RECONCILIATION] = Reconciliation(core)
    return (ConsumerSpec(views.CONSUMER, (allocation.TOPIC, approval.TOPIC), views.apply),)


SERVICE = ServiceDefinition(
    name="spending",
    default_port=8082,
    description="Spend requests (request, withdraw, close) and purchases (record, refund).",
    routes=routes,
    setup=_setup,
    migrations="services.spending",
    publishes=spending.CONTRACT,
    reads=(allocation.TOPIC, approval.TOPIC),
    effects=recovery.put_back,
)
create_app = SERVICE.create_app
