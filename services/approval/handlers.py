"""Approval's application: it reacts to allocation and spending, and takes managers' decisions.

Every decision -- on a spend request or on a cut to a budget -- locks the family period's
balance row first (``shared.contracts.balances.lock``) and applies its own events to the
balances in the same transaction: two decisions on one family's money never see the same
``available``, whatever arrives concurrently.

Causality: a request names the pilot configuration version and the family's allocation
stream version it was made after. It waits (status ``waiting``, no decision) until
approval's views have both, so a fresh allocation is never missed; each allocation or
configuration event approval applies retries the requests waiting on it. Allocation and
spending are consumed by separate runners; advisory locks (``_serialise``) keep a request
from being recorded as waiting while the event that would wake it slips past.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from services.approval import decisions, process, reductions
from services.approval.schemas import DecisionBody, DecisionResult, PendingList, PendingRequest
from shared.contracts import balances, decode
from shared.contracts.allocation import (
    BudgetReductionRequested,
    PersonalDataErased,
    PilotConfigured,
    family_stream_version,
)
from shared.contracts.approval import DecisionMade, HoldReleased
from shared.contracts.business_time import check_occurred_at
from shared.contracts.spending import (
    PurchaseRecorded,
    RequestClosed,
    SpendRequested,
    SpendWithdrawn,
)
from shared.core.aggregates import Decided
from shared.core.commands import CommandResult
from shared.core.db import Connection, model_of
from shared.core.errors import NotFoundError
from shared.core.events import Actor, Envelope
from shared.core.eventstore import CommandContext
from shared.core.personal import Sealer, subject_of
from shared.web.auth import Principal, require_team
from shared.web.http import Caller
from shared.web.service import ServiceCore

__all__ = ["Approval"]

POLICY = Actor(sub="policy", role="system")


class Approval:
    """Decisions on spend requests, and the balances they are made against."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)

    async def _decide(
        self,
        conn: Connection,
        pilot_id: str,
        facts: decisions.RequestFacts,
        command: decisions.Command,
        context: CommandContext,
    ) -> Decided[decisions.DecisionState]:
        """Decide on the request's stream, append, and apply the events to the balances and
        the request's row.

        A waiting request whose stream holds its decision already was decided before the
        store was restored to a moment and rolled forward (``ledger recover`` put the
        decision back, and this consumer met the request again): nothing is decided
        again, and its row takes what the stream says."""
        decision = await self._core.aggregates.load(
            conn, decisions.DECIDER, pilot_id, facts.request_id
        )
        decided = await self._core.aggregates.execute(
            conn, decision, command, context, facts.family_id
        )
        for event in decided.events:
            await balances.apply(conn, pilot_id, facts.family_id, event)
            if isinstance(event, DecisionMade | HoldReleased):
                await process.record_decision(conn, event)
        if not decided.events and isinstance(command, decisions.DecideAutomatically):
            for envelope in decision.stream.envelopes:
                made = decode(envelope)
                if isinstance(made, DecisionMade | HoldReleased):
                    await process.record_decision(conn, made)
        return decided

    # Reactions to other services' events (the consumer's handler)

    async def on_event(self, conn: Connection, envelope: Envelope) -> None:
        """Apply one event of allocation or spending, deciding what it makes decidable.
        What it may wake is locked already: its batch's locks were all taken, in one order,
        before any of its events was applied (:func:`lock_in_order`, the consumers' prepare)."""
        pilot_id, family_id = envelope.pilot_id, envelope.family_id
        event = decode(envelope)
        if isinstance(event, PilotConfigured):
            await process.record_policy(conn, pilot_id, event)
            for waiting_family in await process.waiting_families(conn, pilot_id):
                await self._decide_waiting(conn, pilot_id, waiting_family, envelope)
            return
        await balances.apply(conn, pilot_id, family_id, event)
        if family_id is None:
            return
        version = family_stream_version(envelope)
        if version is not None:
            if isinstance(event, PersonalDataErased):
                # Managers' notes and reasons here are sealed with approval's own keys.
                await self._sealer.erase(conn, subject_of(pilot_id, family_id))
            await process.record_family(conn, pilot_id, family_id, event, version)
            if isinstance(event, BudgetReductionRequested):
                await self._decide_reduction(conn, envelope, event)
            await self._decide_waiting(conn, pilot_id, family_id, envelope)
        elif isinstance(event, SpendRequested):
            await process.record_request(conn, envelope, event, self._core.clock())
            await self._decide_waiting(conn, pilot_id, family_id, envelope)
        elif isinstance(event, PurchaseRecorded):
            await process.record_purchase(conn, event.request_id, event.amount_pence)
        elif isinstance(event, SpendWithdrawn | RequestClosed):
            await self._release(conn, envelope, event)

    async def _decide_waiting(
        self, conn: Connection, pilot_id: str, family_id: str, cause: Envelope
    ) -> None:
        """Decide the family's waiting requests whose policy and allocation approval has seen."""
        for waiting in await process.waiting(conn, pilot_id, family_id):
            policy = waiting.policy
            if policy is None or waiting.family_version < waiting.row["allocation_version"]:
                continue  # a later allocation or configuration event will bring it back here
            facts = process.request_facts(waiting.row)
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

    async def _decide_reduction(
        self, conn: Connection, cause: Envelope, cut: BudgetReductionRequested
    ) -> None:
        """Accept or refuse a cut against the period's balance, locked as for a hold."""
        pilot_id, family_id = cause.pilot_id, cause.family_id
        assert family_id is not None
        balance = await balances.lock(conn, pilot_id, family_id, cut.period_start, cut.period_end)
        reduction = await self._core.aggregates.load(
            conn, reductions.DECIDER, pilot_id, cut.reduction_id
        )
        command = reductions.DecideReduction(
            reduction=cut, available_pence=balance.available_pence, decided_at=self._core.clock()
        )
        context = CommandContext(
            actor=POLICY, correlation_id=cause.correlation_id, causation_id=str(cause.id)
        )
        decided = await self._core.aggregates.execute(conn, reduction, command, context, family_id)
        for event in decided.events:
            await balances.apply(conn, pilot_id, family_id, event)

    async def _release(
        self, conn: Connection, envelope: Envelope, event: SpendWithdrawn | RequestClosed
    ) -> None:
        request_id = event.request_id
        row = await process.request_row(conn, envelope.pilot_id, request_id)
        if row is None:
            return
        cause = "closed" if isinstance(event, RequestClosed) else "withdrawn"
        facts = process.request_facts(row)
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
        await process.set_status(conn, request_id, cause, row["approved_pence"], None)

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
            row = await process.request_row(conn, pilot_id, request_id)
            unseen = NotFoundError("no such spend request awaiting approval")
            if row is None:
                raise unseen
            require_team(principal, row["team"], unseen=unseen)  # another team's: not there
            facts = process.request_facts(row)
            check_occurred_at(
                caller.context.occurred_at,
                self._core.clock(),
                backdating_days=await process.backdating_days(
                    conn, pilot_id, row["policy_version"]
                ),
                enrolled_on=None,  # approval does not keep it; spending checked the request
            )
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
            decided = await self._decide(conn, pilot_id, facts, command, caller.context)
            after = await balances.balance_of(
                conn, pilot_id, facts.family_id, facts.period_start, facts.period_end
            )
            result = DecisionResult(
                request_id=request_id,
                status="approved" if approve else "rejected",
                approved_pence=decided.state.approved_pence,
                available_pence=after.available_pence,
                stream_version=decided.stream_version,
            )
            return CommandResult(200, result.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def pending(self, principal: Principal, pilot_id: str) -> PendingList:
        """Requests awaiting a manager, oldest first: a manager's own team's; all for auditors."""
        team = principal.team if principal.role == "manager" else None
        async with self._core.pool.acquire() as conn:
            rows = await process.pending(conn, pilot_id, team)
            items = [await _pending_item(conn, row) for row in rows]
        return PendingList(requests=tuple(items))


# Each lock once (exclusive if any event wants it so), taken as the rows come: by rank (the
# pilots', then the families'), then by lock id.
_LOCK_ALL = """
SELECT CASE WHEN exclusive THEN pg_advisory_xact_lock(id) ELSE pg_advisory_xact_lock_shared(id) END
FROM (
    SELECT min(rank) AS rank, hashtextextended(key, 0) AS id, bool_or(exclusive) AS exclusive
    FROM unnest($1::text[], $2::boolean[], $3::integer[]) AS wanted(key, exclusive, rank)
    GROUP BY 2
    ORDER BY 1, 2
) ordered
"""


async def lock_in_order(conn: Connection, envelopes: Sequence[Envelope]) -> None:
    """Lock what a batch's events may wake, before any is applied, so that no waiting
    request misses its wake-up: a request recorded as waiting by one consumer while another
    applies the allocation it waits for must not be missed by both. A family's event locks
    the family and shares its pilot's lock; a configuration event locks the whole pilot.
    Held until the batch commits. Taken in one order, the pilots', then the families', each
    by lock id: taken event by event, two consumers whose batches named two families in
    opposite orders deadlocked (PostgreSQL broke it, and a batch was retried); in one
    order, one waits for the other."""
    pilots: dict[str, bool] = {}
    families: set[str] = set()
    for envelope in envelopes:
        key = f"pilot:{envelope.pilot_id}"
        pilots[key] = pilots.get(key, False) or envelope.family_id is None
        if envelope.family_id is not None:
            families.add(f"family:{envelope.pilot_id}:{envelope.family_id}")
    keys = [*pilots, *families]
    exclusive = [*pilots.values(), *[True] * len(families)]
    if keys:  # one statement
        ranks = [0] * len(pilots) + [1] * len(families)
        await conn.execute(_LOCK_ALL, keys, exclusive, ranks)


async def _pending_item(conn: Connection, row: asyncpg.Record) -> PendingRequest:
    balance = await balances.balance_of(
        conn, row["pilot_id"], row["family_id"], row["period_start"], row["period_end"]
    )
    return model_of(PendingRequest, row, available_pence=balance.available_pence)
