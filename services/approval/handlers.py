"""Approval's application: it reacts to allocation and spending, and takes managers' decisions.

Every decision locks the family period's balance row first (``shared.balances.lock``) and
applies its own events to the balances in the same transaction: two decisions on one
family's money never see the same ``available``, whatever arrives concurrently.

Causality: a request names the pilot configuration version and the family's allocation
stream version it was made after. It waits (status ``waiting``, no decision) until
approval's views have both, so a fresh allocation is never missed; each allocation or
configuration event approval applies retries the requests waiting on it. Allocation and
spending are consumed by separate runners; advisory locks (``_serialise``) keep a request
from being recorded as waiting while the event that would wake it slips past.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from services.approval import decisions, views
from services.approval.schemas import DecisionBody, DecisionResult, PendingList, PendingRequest
from shared import balances
from shared.auth import Principal
from shared.commands import Caller, CommandResult
from shared.db import Connection
from shared.errors import NotFoundError
from shared.events import Actor, DomainEvent, Envelope, EventRegistry, fold
from shared.eventstore import CommandContext, PendingEvent
from shared.personal import Sealer, subject_of
from shared.service import ServiceCore

__all__ = ["REGISTRY", "Approval"]

REGISTRY = EventRegistry(
    (
        decisions.RequestReferred,
        decisions.RequestApproved,
        decisions.RequestRejected,
        decisions.HoldReleased,
    )
)
POLICY = Actor(sub="policy", role="system")
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))"
_STATUS_AFTER = {
    "decision.referred": "referred",
    "decision.approved": "approved",
    "decision.rejected": "rejected",
}


class Approval:
    """Decisions on spend requests, and the balances they are made against."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._store = core.store
        self._sealer = Sealer()

    async def _decide(
        self,
        conn: Connection,
        pilot_id: str,
        facts: decisions.RequestFacts,
        command: decisions.Command,
        context: CommandContext,
    ) -> tuple[Envelope, ...]:
        """Decide on the request's stream, append, and apply the events to the balances."""
        stream = await self._store.load(conn, decisions.stream_id(pilot_id, facts.request_id))
        state = fold(stream.envelopes, REGISTRY, decisions.initial_state(), decisions.evolve)
        events: Sequence[DomainEvent] = decisions.decide(state, command)
        envelopes = await self._store.append(
            conn, stream, [PendingEvent(e, pilot_id, facts.family_id) for e in events], context
        )
        for envelope in envelopes:
            await balances.apply(conn, envelope)
            status = _STATUS_AFTER.get(envelope.type)
            if status is not None:
                await views.set_status(
                    conn,
                    facts.request_id,
                    status,
                    int(envelope.data.get("approved_pence", 0)),
                    datetime.fromisoformat(envelope.data["decided_at"]),
                )
        return envelopes

    # Reactions to other services' events (the consumer's handler)

    async def on_event(self, conn: Connection, envelope: Envelope) -> None:
        """Apply one event of allocation or spending, deciding what it makes decidable."""
        await _serialise(conn, envelope)
        kind = envelope.type
        if kind == "pilot.configured":
            await views.record_policy(conn, envelope)
            for family_id in await views.waiting_families(conn, envelope.pilot_id):
                await self._decide_waiting(conn, envelope.pilot_id, family_id, envelope)
            return
        await balances.apply(conn, envelope)
        if envelope.family_id is None:
            return
        if kind == "family.personal_data_erased":
            # Managers' notes and reasons here are sealed with approval's own keys.
            await self._sealer.erase(conn, subject_of(envelope.pilot_id, envelope.family_id))
        if kind.startswith("family."):
            await views.record_family(conn, envelope)
            await self._decide_waiting(conn, envelope.pilot_id, envelope.family_id, envelope)
        elif kind == "spend_request.requested":
            await views.record_request(conn, envelope)
            await self._decide_waiting(conn, envelope.pilot_id, envelope.family_id, envelope)
        elif kind == "purchase.recorded":
            await views.record_purchase(
                conn, UUID(envelope.data["request_id"]), envelope.data["amount_pence"]
            )
        elif kind in {"spend_request.withdrawn", "spend_request.closed"}:
            await self._release(conn, envelope)

    async def _decide_waiting(
        self, conn: Connection, pilot_id: str, family_id: str, cause: Envelope
    ) -> None:
        """Decide the family's waiting requests whose policy and allocation approval has seen."""
        rows = await views.waiting(conn, pilot_id, family_id)
        if not rows:
            return
        seen = await views.family_version(conn, pilot_id, family_id)
        for row in rows:
            policy = await views.policy(conn, pilot_id, row["policy_version"])
            if policy is None or seen < row["allocation_version"]:
                continue  # a later allocation or configuration event will bring it back here
            facts = views.request_facts(row)
            balance = await balances.lock(
                conn, pilot_id, family_id, facts.period_start, facts.period_end
            )
            command = decisions.DecideAutomatically(
                request=facts,
                policy=policy,
                available_pence=balance.available_pence,
                decided_at=self._core.clock(),
            )
            context = CommandContext(
                actor=POLICY, correlation_id=cause.correlation_id, causation_id=str(cause.id)
            )
            await self._decide(conn, pilot_id, facts, command, context)

    async def _release(self, conn: Connection, envelope: Envelope) -> None:
        request_id = UUID(envelope.data["request_id"])
        row = await views.request_row(conn, envelope.pilot_id, request_id)
        if row is None:
            return
        cause = "closed" if envelope.type == "spend_request.closed" else "withdrawn"
        facts = views.request_facts(row)
        if row["status"] == "approved":
            await balances.lock(
                conn, envelope.pilot_id, facts.family_id, facts.period_start, facts.period_end
            )
            command = decisions.ReleaseHold(
                request=facts, purchased_pence=row["purchased_pence"], cause=cause
            )
            context = CommandContext(
                actor=POLICY, correlation_id=envelope.correlation_id, causation_id=str(envelope.id)
            )
            await self._decide(conn, envelope.pilot_id, facts, command, context)
        await views.set_status(conn, request_id, cause, row["approved_pence"], None)

    # Managers

    async def decide_by_manager(
        self,
        caller: Caller,
        pilot_id: str,
        request_id: UUID,
        body: DecisionBody,
        *,
        approve: bool,
    ) -> CommandResult:
        """A manager approves or rejects a referred request."""
        principal = caller.principal

        async def handle(conn: Connection) -> CommandResult:
            row = await views.request_row(conn, pilot_id, request_id)
            if row is None:
                raise NotFoundError("no such spend request awaiting approval")
            facts = views.request_facts(row)
            balance = await balances.lock(
                conn, pilot_id, facts.family_id, facts.period_start, facts.period_end
            )
            note = await self._sealer.seal(conn, subject_of(pilot_id, facts.family_id), body.note)
            command = decisions.DecideByManager(
                request=facts,
                approve=approve,
                manager=principal.sub,
                manager_team=principal.team,
                note=note,
                policy_version=row["policy_version"],
                available_pence=balance.available_pence,
                withdrawn=row["status"] in {"withdrawn", "closed"},
                decided_at=self._core.clock(),
            )
            envelopes = await self._decide(conn, pilot_id, facts, command, caller.context)
            envelope = envelopes[-1]
            after = await balances.balance_of(
                conn, pilot_id, facts.family_id, facts.period_start, facts.period_end
            )
            result = DecisionResult(
                request_id=request_id,
                status="approved" if approve else "rejected",
                approved_pence=int(envelope.data.get("approved_pence", 0)),
                available_pence=after.available_pence,
                stream_version=envelope.stream_version,
            )
            return CommandResult(200, result.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def pending(self, principal: Principal, pilot_id: str) -> PendingList:
        """Requests awaiting a manager, oldest first: a manager's own team's; all for auditors."""
        team = principal.team if principal.role == "manager" else None
        async with self._core.pool.acquire() as conn:
            rows = await views.pending(conn, pilot_id, team)
            items = [await _pending_item(conn, row) for row in rows]
        return PendingList(requests=tuple(items))


async def _serialise(conn: Connection, envelope: Envelope) -> None:
    """Lock what this event may wake, so that no waiting request misses its wake-up.

    A request recorded as waiting by one consumer while another applies the allocation it
    waits for must not be missed by both: family events lock the family (and share the
    pilot), configuration events lock the whole pilot. Held until the batch commits.
    """
    if envelope.family_id is None:
        await conn.execute(_LOCK, f"pilot:{envelope.pilot_id}")
        return
    await conn.execute(_LOCK_SHARED, f"pilot:{envelope.pilot_id}")
    await conn.execute(_LOCK, f"family:{envelope.pilot_id}:{envelope.family_id}")


async def _pending_item(conn: Connection, row: asyncpg.Record) -> PendingRequest:
    balance = await balances.balance_of(
        conn, row["pilot_id"], row["family_id"], row["period_start"], row["period_end"]
    )
    return PendingRequest(
        request_id=row["request_id"],
        family_id=row["family_id"],
        team=row["team"],
        amount_pence=row["amount_pence"],
        category=row["category"],
        requested_by=row["requested_by"],
        family_involved=row["family_involved"],
        requested_at=row["requested_at"],
        available_pence=balance.available_pence,
    )
