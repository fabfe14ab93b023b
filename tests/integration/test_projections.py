"""Reporting's projections do not depend on how the three topics interleave, nor on how
their records are batched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import projections
from shared.contracts import allocation, spending
from shared.contracts import approval as decisions
from shared.core.events import DomainEvent, Envelope
from shared.core.eventstore import EventStore, PendingEvent, Stream
from shared.core.settings import Settings
from tests.integration.fixtures import CONTEXT, migrated_pool, utcnow

PERIOD: dict[str, Any] = {"period_start": date(2026, 1, 1), "period_end": date(2026, 12, 31)}
R1, R2, P1 = UUID(int=1), UUID(int=2), UUID(int=3)


def stream(source: str, stream_id: str, family: str, events: list[DomainEvent]) -> list[Envelope]:
    store = EventStore(f"ledger/{source}", utcnow, lambda: UUID(int=0))
    sealed = store.seal(
        Stream(stream_id, ()), [PendingEvent(e, "p", family) for e in events], CONTEXT
    )
    # The store's id factory is fixed here; give each event a distinct, stable id.
    return [
        e.model_copy(
            update={"id": uuid5(NAMESPACE_URL, f"{source}/{stream_id}/{e.stream_version}")}
        )
        for e in sealed
    ]


def topics() -> dict[str, list[Envelope]]:
    """Each topic's events, in the order that topic holds them."""
    enrolled = allocation.FamilyEnrolled(
        family_id="f",
        team="t",
        worker="w",
        enrolled_on=date(2026, 1, 1),
        stratum=None,
        arm="treatment",
        pilot_version=1,
    )
    allocated = allocation.BudgetAllocated(
        allocation_id=UUID(int=9),
        amount_pence=50_000,
        note=None,
        pilot_version=1,
        period_allocated_pence=50_000,
        **PERIOD,
    )
    adjusted = allocation.BudgetAdjusted(
        adjustment_id=UUID(int=8),
        delta_pence=-5_000,
        reason="r",
        period_allocated_pence=45_000,
        **PERIOD,
    )
    requested = [
        spending.SpendRequested(
            request_id=r,
            family_id="f",
            team="t",
            amount_pence=amount,
            category="practical",
            purpose="x",
            requested_by="w",
            family_involved=True,
            needed_by=None,
            pilot_version=1,
            allocation_version=2,
            **PERIOD,
        )
        for r, amount in ((R1, 10_000), (R2, 20_000))
    ]
    purchase = spending.PurchaseRecorded(
        purchase_id=P1,
        request_id=R1,
        amount_pence=7_000,
        purchased_on=date(2026, 2, 1),
        method="card",
        vendor=None,
        receipt_ref=None,
        category="practical",
        **PERIOD,
    )
    refund = spending.PurchaseRefunded(
        refund_id=UUID(int=4),
        purchase_id=P1,
        request_id=R1,
        amount_pence=1_000,
        reason="r",
        category="practical",
        **PERIOD,
    )
    closed = spending.RequestClosed(request_id=R1, purchased_pence=7_000)
    moment = utcnow()

    def approved(request: UUID, amount: int) -> decisions.RequestApproved:
        return decisions.RequestApproved(
            request_id=request,
            family_id="f",
            amount_pence=amount,
            policy_version=1,
            requested_at=moment,
            decided_at=moment,
            decided_by="policy",
            approved_pence=amount,
            rule="auto_tier",
            **PERIOD,
        )

    released = decisions.HoldReleased(request_id=R1, released_pence=3_000, cause="closed", **PERIOD)
    return {
        "allocation": stream("allocation", "family:p:f", "f", [enrolled, allocated, adjusted]),
        "spending": stream("spending", "request:p:1", "f", [requested[0], purchase, refund, closed])
        + stream("spending", "request:p:2", "f", [requested[1]]),
        "approval": stream("approval", "decision:p:1", "f", [approved(R1, 10_000), released])
        + stream("approval", "decision:p:2", "f", [approved(R2, 20_000)]),
    }


TOPICS = topics()
LABELS = [name for name, events in TOPICS.items() for _ in events]


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "reporting", max_size=2) as pool:
        yield pool


async def projected(
    pool: asyncpg.Pool[asyncpg.Record], order: list[str], sizes: list[int] | None = None
) -> tuple[Any, ...]:
    """Apply the topics in this interleaving, read every projection, undo it all. With
    ``sizes``, in batches of those sizes (the last takes what is left), as a consumer's
    fast path applies them; else one by one."""
    cursors = {name: iter(events) for name, events in TOPICS.items()}
    envelopes = [next(cursors[name]) for name in order]
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            if sizes is None:
                for envelope in envelopes:
                    await projections.apply(conn, envelope)
            else:
                for size in [*sizes, len(envelopes)]:
                    batch, envelopes = envelopes[:size], envelopes[size:]
                    if batch:
                        await projections.apply_many(conn, batch)
            state = (
                [
                    tuple(r)
                    for r in await conn.fetch("SELECT * FROM balances ORDER BY period_start")
                ],
                [tuple(r) for r in await conn.fetch("SELECT * FROM family_view")],
                [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT event_id, envelope FROM history ORDER BY event_id"
                    )
                ],
            )
        finally:
            await transaction.rollback()
    return state


@given(order=st.permutations(LABELS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_any_interleaving_gives_the_same_projections(
    pool: asyncpg.Pool[asyncpg.Record], order: list[str]
) -> None:
    """Balances, families and history come out the same however the topics interleave."""
    reference = await projected(pool, LABELS)
    assert reference[0] == [("p", "f", date(2026, 1, 1), date(2026, 12, 31), 45_000, 20_000, 6_000)]
    assert await projected(pool, order) == reference


@given(order=st.permutations(LABELS), sizes=st.lists(st.integers(1, len(LABELS)), max_size=4))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_any_batching_gives_the_same_projections(
    pool: asyncpg.Pool[asyncpg.Record], order: list[str], sizes: list[int]
) -> None:
    """Applied in batches of any sizes, as a consumer's fast path does (one set-based
    statement per projection), the projections are those of one event at a time."""
    reference = await projected(pool, LABELS)
    assert await projected(pool, order, sizes) == reference
