"""The allocation service: pilots, families and budget allocations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from aiohttp import web

from services.allocation.handlers import Allocation
from services.allocation.http import ALLOCATION, routes
from shared import balances
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
    """The allocation service's aiohttp application."""

    def setup(app: web.Application, core: ServiceCore) -> Sequence[ConsumerSpec]:
        app[ALLOCATION] = Allocation(core)
        # What is committed and spent: adjustments may not go below it, exits record it.
        return (
            ConsumerSpec(
                "allocation.balances",
                (SERVICE_TOPICS["spending"], SERVICE_TOPICS["approval"]),
                balances.apply,
            ),
        )

    return build_service_app(
        service="allocation",
        settings=settings,
        routes=routes(),
        description="Pilots (configuration and policy versions), families (enrolment, "
        "randomisation to an arm, exit) and budget allocations.",
        setup=setup,
        clock=clock,
        ids=ids,
    )
