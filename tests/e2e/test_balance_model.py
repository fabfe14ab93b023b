"""Random sequences of the ledger's operations against a simple reference model of the balance.

Hypothesis draws a sequence of operations; each runs through HTTP on the real services. After
every step, approval's balance for the family must equal the model's, and available must
never be below zero.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.settings import Settings
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, wait_for

AUTO_UP_TO = 30_000
FAMILIES = count()


@dataclass
class Request:
    """The model of one request."""

    request_id: str
    amount: int
    status: str
    approved: int = 0
    purchases: list[tuple[str, int]] = field(default_factory=list)
    refunded: dict[str, int] = field(default_factory=dict)

    @property
    def purchased(self) -> int:
        return sum(amount for _, amount in self.purchases)


@dataclass
class Model:
    """What the balance must be, computed the plainest way."""

    allocated: int = 0
    requests: list[Request] = field(default_factory=list)

    @property
    def committed(self) -> int:
        return sum(r.approved - r.purchased for r in self.requests if r.status == "approved")

    @property
    def spent(self) -> int:
        return sum(r.purchased - sum(r.refunded.values()) for r in self.requests)

    @property
    def available(self) -> int:
        return self.allocated - self.committed - self.spent

    def pick(self, index: int, *statuses: str) -> Request | None:
        matching = [r for r in self.requests if r.status in statuses]
        return matching[index % len(matching)] if matching else None


# Names repeated in the list are drawn more often: most runs should reach every operation.
NAMES = (
    ["allocate"]
    + ["request"] * 4
    + ["approve"] * 2
    + ["reject"]
    + ["purchase"] * 4
    + ["refund"] * 2
    + ["withdraw"]
    + ["close"] * 2
)
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.integers(500, 60_000),  # an amount
        st.integers(0, 9),  # which request or purchase
        st.integers(1, 100),  # what share of what is left
    ),
    min_size=6,
    max_size=24,
)


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token) as system:
        await system.configure(
            family_cap_pence=10_000_000,
            approval_tiers=[{"up_to_pence": AUTO_UP_TO, "approver": "auto"}],
        )
        yield system


class Run:
    """One example: a family, the system and the model."""

    def __init__(self, system: System, settings: Settings) -> None:
        self.system = system
        self.settings = settings
        self.family = f"model-{next(FAMILIES)}"
        self.model = Model()
        self.version = 0

    async def step(self, operation: tuple[str, int, int, int]) -> None:  # noqa: C901 - one arm per operation
        system, model = self.system, self.model
        name, amount_drawn, index, share = operation
        if name == "allocate":
            self.version = await system.allocate(self.family, amount_drawn)
            model.allocated += amount_drawn
        elif name == "request":
            amount = amount_drawn
            accepted = await system.request(self.family, amount, version=self.version)
            view = await system.settled(
                accepted["request_id"], "approved", "rejected", "awaiting_approval"
            )
            expected = (
                "rejected"
                if amount > model.available
                else "approved"
                if amount <= AUTO_UP_TO
                else "awaiting_approval"
            )
            assert view["status"] == expected
            model.requests.append(
                Request(
                    accepted["request_id"],
                    amount,
                    expected,
                    amount if expected == "approved" else 0,
                )
            )
        elif name in {"approve", "reject"}:
            request = model.pick(index, "awaiting_approval")
            if request is None:
                return
            path = f"/pilots/wigan/spend-requests/{request.request_id}/{name}"
            body = {} if name == "approve" else {"reason": "not now"}
            response = await system.approval.post(path, json=body, headers=system.manager())
            if name == "approve" and request.amount > model.available:
                assert response.status == 422
                return
            assert response.status == 200, await response.text()
            request.status = "approved" if name == "approve" else "rejected"
            request.approved = request.amount if name == "approve" else 0
            await system.settled(request.request_id, "approved", "rejected")
        elif name == "purchase":
            request = model.pick(index, "approved")
            if request is None or request.purchased == request.approved:
                return
            amount = max(1, (request.approved - request.purchased) * share // 100)
            response = await system.spending.post(
                f"/pilots/wigan/spend-requests/{request.request_id}/purchases",
                json={"amount_pence": amount, "purchased_on": "2026-03-01", "method": "card"},
                headers=system.worker(),
            )
            assert response.status == 201, await response.text()
            request.purchases.append(((await response.json())["purchase_id"], amount))
        elif name == "refund":
            bought = [
                (r, p, a)
                for r in model.requests
                for p, a in r.purchases
                if a > r.refunded.get(p, 0)
            ]
            if not bought:
                return
            request, purchase_id, amount = bought[index % len(bought)]
            refund = max(1, (amount - request.refunded.get(purchase_id, 0)) * share // 100)
            response = await system.spending.post(
                f"/pilots/wigan/purchases/{purchase_id}/refunds",
                json={"amount_pence": refund, "reason": "returned"},
                headers=system.finance(),
            )
            assert response.status == 201, await response.text()
            request.refunded[purchase_id] = request.refunded.get(purchase_id, 0) + refund
        elif name in {"withdraw", "close"}:
            statuses = ("approved", "awaiting_approval") if name == "withdraw" else ("approved",)
            request = model.pick(index, *statuses)
            if request is None or (name == "withdraw" and request.purchases):
                return
            body = {"reason": "not needed"} if name == "withdraw" else {}
            response = await system.spending.post(
                f"/pilots/wigan/spend-requests/{request.request_id}/{name}",
                json=body,
                headers=system.worker(),
            )
            assert response.status == 200, await response.text()
            request.status = "withdrawn" if name == "withdraw" else "closed"
        await self.check()

    async def check(self) -> None:
        """Approval's balance is the model's, and available is never negative."""
        expected = (self.model.allocated, self.model.committed, self.model.spent)
        seen: list[tuple[int, int, int]] = []

        async def matches() -> bool:
            async with connect_service_db(self.settings, "approval") as conn:
                row = await conn.fetchrow(
                    "SELECT allocated_pence, held_pence, spent_pence FROM balances "
                    "WHERE family_id = $1",
                    self.family,
                )
            actual = (0, 0, 0) if row is None else tuple(row.values())
            assert actual[0] - actual[1] - actual[2] >= 0, f"available below zero: {actual}"
            seen.append(actual)
            return actual == expected

        try:
            await wait_for(matches, timeout=15)
        except AssertionError:
            raise AssertionError(f"approval has {seen[-1]}, the model {expected}") from None


@given(operations=OPERATIONS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
async def test_balances_follow_the_model(
    system: System, settings: Settings, operations: list[tuple[str, int, int, int]]
) -> None:
    """After every step the balance equals the model's and available is at least zero."""
    run = Run(system, settings)
    run.version = await system.enrol(run.family)
    for operation in [("allocate", 50_000, 0, 0), *operations]:
        await run.step(operation)
