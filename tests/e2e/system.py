"""The allocation, spending and approval services running together, for e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from services.allocation.app import create_app as allocation_app
from services.approval.app import create_app as approval_app
from services.reporting.app import create_app as reporting_app
from services.spending.app import create_app as spending_app
from shared.core.settings import Settings
from tests.support import serve, wait_for

Client = TestClient[web.Request, web.Application]

__all__ = ["WIGAN", "Client", "System", "auth", "running_system"]


# The pilot most tests configure: up to £500 decided on the worker's say.
WIGAN: dict[str, Any] = {
    "name": "Wigan",
    "period_months": 12,
    "family_cap_pence": 400_000,
    "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
    "categories": ["practical", "therapeutic", "relationship", "other"],
    "forecast_spend_per_family_pence": 400_000,
    # The tests' purchases are dated in the spring of 2026, and a purchase's day may go back
    # at most this far (as occurred_at may).
    "backdating_days": 366,
}


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class System:
    """Clients for each service, and helpers that speak for the usual actors."""

    allocation: Client
    spending: Client
    approval: Client
    token: Callable[..., str]
    reporting: Client | None = None
    pilot: str = "wigan"

    @property
    def reports(self) -> Client:
        """Reporting's client (a system started with ``reporting=True``)."""
        assert self.reporting is not None
        return self.reporting

    def admin(self) -> dict[str, str]:
        return auth(self.token("admin", self.pilot, sub="finance-1"))

    def worker(self, sub: str = "sw-1", team: str = "t-1") -> dict[str, str]:
        return auth(self.token("social_worker", self.pilot, sub=sub, team=team))

    def manager(self, sub: str = "m-1", team: str = "t-1") -> dict[str, str]:
        return auth(self.token("manager", self.pilot, sub=sub, team=team))

    def finance(self) -> dict[str, str]:
        return auth(self.token("finance", self.pilot, sub="fin-1"))

    async def configure(self, **overrides: Any) -> None:
        config = {**WIGAN, **overrides}
        response = await self.allocation.put(
            f"/pilots/{self.pilot}", json=config, headers=self.admin()
        )
        assert response.status in {200, 201}, await response.text()

    async def enrol(self, family: str, *, team: str = "t-1", allocate: int | None = None) -> int:
        """Enrol (and optionally fund) a family; return its allocation stream version."""
        response = await self.allocation.post(
            f"/pilots/{self.pilot}/families",
            json={"family_id": family, "team": team, "worker": "sw-1", "enrolled_on": "2026-01-05"},
            headers=self.admin(),
        )
        assert response.status == 201, await response.text()
        version = int((await response.json())["stream_version"])
        if allocate is not None:
            version = await self.allocate(family, allocate)
        return version

    async def allocate(self, family: str, amount: int) -> int:
        response = await self.allocation.post(
            f"/pilots/{self.pilot}/families/{family}/allocations",
            json={"amount_pence": amount},
            headers=self.admin(),
        )
        assert response.status == 201, await response.text()
        return int((await response.json())["stream_version"])

    async def request(
        self,
        family: str,
        amount: int,
        *,
        version: int | None = None,
        sub: str = "sw-1",
        team: str = "t-1",
        category: str = "practical",
        expect: int = 202,
        occurred_at: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "family_id": family,
            "amount_pence": amount,
            "category": category,
            "purpose": "school uniform and shoes",
            "requested_by": sub,
            "family_involved": True,
        }
        if version is not None:
            body["allocation_version"] = version
        if occurred_at is not None:
            body["occurred_at"] = occurred_at
        response = await self.spending.post(
            f"/pilots/{self.pilot}/spend-requests", json=body, headers=self.worker(sub, team)
        )
        assert response.status == expect, await response.text()
        return dict(await response.json())

    async def status(self, request_id: str) -> dict[str, Any]:
        response = await self.spending.get(
            f"/pilots/{self.pilot}/spend-requests/{request_id}", headers=self.admin()
        )
        assert response.status == 200, await response.text()
        return dict(await response.json())

    async def settled(self, request_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        """The request once spending shows one of the statuses."""
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.update(await self.status(request_id))
            return found["status"] in statuses

        await wait_for(check, timeout=timeout)
        return found


@asynccontextmanager
async def running_system(
    settings: Settings,
    token: Callable[..., str],
    *,
    reporting: bool = False,
    kafka_passwords: Mapping[str, str] | None = None,
) -> AsyncIterator[System]:
    """The services on one broker, each with its own database (reporting if asked). With
    ``kafka_passwords``, each connects to Kafka as its own principal, as in production."""

    def own(service: str) -> Settings:
        if kafka_passwords is None:
            return settings
        password = SecretStr(kafka_passwords[service])
        return settings.model_copy(update={"kafka_username": service, "kafka_password": password})

    async with AsyncExitStack() as stack:

        async def start(
            service: str, app: Callable[[Settings], web.Application], **more: str
        ) -> Client:
            chosen = own(service).model_copy(update=more)
            return await stack.enter_async_context(serve(chosen, service, app))

        system = System(
            await start("allocation", allocation_app),
            await start("spending", spending_app),
            await start("approval", approval_app),
            token,
        )
        if reporting:  # it asks spending what requests were for (a statement's purposes)
            spending_url = str(system.spending.make_url("/"))
            system.reporting = await start("reporting", reporting_app, spending_url=spending_url)
        yield system
