"""The allocation service: pilots, families and budget allocations."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from services.allocation import recovery
from services.allocation.commands import add_audits, add_commands
from services.allocation.handlers import Allocation
from services.allocation.http import ALLOCATION, routes
from services.allocation.retention import RetentionSweep
from shared.contracts import allocation, approval, spending
from shared.web.registry import ServiceDefinition
from shared.web.service import ConsumerSpec, ServiceCore

__all__ = ["SERVICE", "create_app"]


def _setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
    service = app[ALLOCATION] = Allocation(core)
    core.tasks["retention"] = RetentionSweep(
        core.pool, service, core.metrics, core.clock, core.settings.retention_interval_seconds
    )
    topics = (spending.TOPIC, approval.TOPIC)
    return (ConsumerSpec("allocation.balances", topics, service.on_event),)


SERVICE = ServiceDefinition(
    name="allocation",
    default_port=8081,
    description="Pilots (configuration and policy versions), families (enrolment, "
    "randomisation to an arm, exit) and budget allocations.",
    routes=routes,
    setup=_setup,
    migrations="services.allocation",
    publishes=allocation.CONTRACT,
    reads=(spending.TOPIC, approval.TOPIC),
    add_commands=add_commands,
    add_audits=add_audits,
    effects=recovery.put_back,
)
create_app = SERVICE.create_app
