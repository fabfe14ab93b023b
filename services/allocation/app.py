"""The allocation service: pilots, families and budget allocations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.allocation.handlers import Allocation
from services.allocation.http import ALLOCATION, routes
from shared.contracts import allocation, approval, balances, spending
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
    """The allocation service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        app[ALLOCATION] = Allocation(core)
        # What is committed and spent: adjustments may not go below it, exits record it.
        return (
            ConsumerSpec(
                "allocation.balances", (spending.TOPIC, approval.TOPIC), balances.apply_envelope
            ),
        )

    return build_service_app(
        SERVICE,
        settings,
        routes=routes(),
        description="Pilots (configuration and policy versions), families (enrolment, "
        "randomisation to an arm, exit) and budget allocations.",
        setup=setup,
        clock=clock,
        ids=ids,
    )


SERVICE = ServiceDefinition(
    name="allocation",
    default_port=8081,
    create_app=create_app,
    migrations="services.allocation",
    topic=allocation.TOPIC,
)
