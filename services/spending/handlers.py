"""Spending's application: requests, withdrawals, purchases, refunds and closes.

Each command is atomic: a spend request writes in one statement, the others run in one
transaction (``shared.core.commands``). Facts owned by other services come from spending's
views (``views.py``); where the caller has seen a newer fact than a view holds, the
handler waits for the view (``shared.core.consistency``) rather than answer from the past.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import partial
from uuid import UUID

from services.spending import indexes, requests, views
from services.spending.schemas import (
    CloseBody,
    PurchaseBody,
    PurchaseLine,
    PurchaseResult,
    PurposesView,
    PurposeView,
    RefundBody,
    RefundResult,
    RequestAccepted,
    RequestView,
    SpendRequestBody,
    WithdrawBody,
)
from shared.contracts import decode
from shared.contracts.business_time import check_business_day, check_occurred_at
from shared.contracts.periods import period_containing
from shared.contracts.spending import (
    SpendRequested,
)
from shared.contracts.views import PilotInForce
from shared.core.aggregates import Aggregate, Decided, answer
from shared.core.commands import CommandResult, together_connection
from shared.core.consistency import NotYetConsistentError, wait_for_view
from shared.core.db import Connection
from shared.core.errors import ForbiddenError, NotFoundError, UnprocessableError
from shared.core.events import Envelope
from shared.core.personal import Sealer, subject_of
from shared.web.auth import TEAM_SCOPED_ROLES, Principal, require_team
from shared.web.http import Caller
from shared.web.service import ServiceCore

__all__ = ["Spending"]

Request = Aggregate[requests.RequestState, requests.Command]
Answer = Callable[[Decided[requests.RequestState]], CommandResult]
# A command built inside its transaction, given the subject whose key seals its free text.
CommandBuilder = Callable[[Connection, str], Awaitable[requests.Command]]
# How long a command waits for a view to reach what the caller has seen.
VIEW_WAIT_SECONDS = 5.0
UNKNOWN_FAMILY_WAIT_SECONDS = 1.0
DECISION_WAIT_SECONDS = 3.0

_REQUESTS_OF_FAMILY = """
SELECT envelope FROM events
WHERE pilot_id = $1 AND family_id = $2 AND type = 'spend_request.requested' ORDER BY position
"""


class Spending:
    """Spend requests and the purchases made against them."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)

    async def _load(self, conn: Connection, pilot_id: str, request_id: UUID) -> Request:
        return await self._core.aggregates.load(conn, requests.DECIDER, pilot_id, request_id)

    async def request(self, caller: Caller, pilot_id: str, body: SpendRequestBody) -> CommandResult:
        """Record a spend request for approval to decide."""
        principal = caller.principal
        if principal.role == "social_worker" and body.requested_by != principal.sub:
            raise ForbiddenError(
                "social workers make requests in their own name", code="forbidden_requester"
            )
        request_id = self._core.ids()
        # Judged as of now, whatever occurred_at says: a backdated request cannot reopen what
        # is closed (an exit, a past period, an older policy). See shared.contracts.business_time.
        now = self._core.clock()
        requested_on = now.astimezone(UTC).date()
        waited = False

        async def handle(conn: Connection) -> CommandResult:
            read = await _views(conn, pilot_id, body.family_id, principal)
            if not waited and not _caught_up(read, body.allocation_version):
                raise _ViewsBehindError
            pilot, family = _eligible(principal, read.pilot, read.family, body, requested_on)
            check_occurred_at(
                caller.context.occurred_at,
                now,
                backdating_days=pilot.config.backdating_days,
                enrolled_on=family.enrolled_on,
            )
            period = period_containing(family.enrolled_on, pilot.period_lengths, requested_on)
            subject = subject_of(pilot_id, body.family_id)
            purpose = await self._sealer.seal(conn, subject, body.purpose, live=read.key)
            command = requests.RequestSpend(
                request_id=request_id,
                family_id=body.family_id,
                team=family.team,
                amount_pence=body.amount_pence,
                category=body.category,
                purpose=purpose,
                requested_by=body.requested_by,
                family_involved=body.family_involved,
                needed_by=body.needed_by,
                pilot_version=pilot.version,
                allocation_version=max(family.stream_version, body.allocation_version or 0),
                period_start=period.start,
                period_end=period.end,
            )
            request = self._core.aggregates.new(requests.DECIDER, pilot_id, request_id)
            decided = await self._core.aggregates.execute(
                conn, request, command, caller.context, body.family_id
            )
            await indexes.record(conn, pilot_id, body.family_id, decided.events)
            result = RequestAccepted(
                request_id=request_id, status="submitted", stream_version=decided.stream_version
            )
            return CommandResult(202, result.model_dump(mode="json"))

        # Two round trips: what it reads, in one statement, then what it writes, in one.
        try:
            return await self._core.commands.run(handle, caller.idempotency, one_statement=True)
        except _ViewsBehindError:  # nothing written: wait for the views, holding nothing
            await self._await_views(principal, pilot_id, body.family_id, body.allocation_version)
        waited = True
        return await self._core.commands.run(handle, caller.idempotency, one_statement=True)

    async def _await_views(
        self, principal: Principal, pilot_id: str, family_id: str, seen: int | None
    ) -> None:
        """Wait until the views hold the family (at the version the caller saw) and its pilot.

        A family is enrolled under a pilot configuration; its events and the pilot's travel
        on different partitions, so either may arrive first. Without a version from the
        caller, a family not seen within a short wait is taken to be unknown (422).
        """

        async def caught_up(conn: Connection) -> bool:
            return _caught_up(await _views(conn, pilot_id, family_id, principal), seen)

        views_consumer = self._core.consumers.get(views.CONSUMER)
        if seen and views_consumer is not None and not views_consumer.reading:
            async with self._core.commands.connection() as conn:
                if not await caught_up(conn):  # and it cannot until its consumer reads again
                    raise NotYetConsistentError(
                        f"spending has not yet seen allocation version {seen} of this family "
                        "and is not reading allocation's events now; retry"
                    )
        seconds = VIEW_WAIT_SECONDS if seen is not None else UNKNOWN_FAMILY_WAIT_SECONDS
        if not await wait_for_view(self._core.pool, caught_up, seconds=seconds) and seen:
            raise NotYetConsistentError(
                f"spending has not yet seen allocation version {seen} of this family; retry"
            )

    async def view(self, principal: Principal, pilot_id: str, request_id: UUID) -> RequestView:
        """A request with its status and money, for callers allowed to see it."""
        async with self._core.pool.acquire() as conn:
            request = await self._load(conn, pilot_id, request_id)
            decision = await views.decision_of(conn, request_id)
        require_team(
            principal, request.state.require().team, unseen=NotFoundError("no such spend request")
        )
        return _view(pilot_id, request.state, decision, request.stream.version)

    async def _decision(self, request_id: UUID) -> requests.Decision | None:
        """Approval's decision, waiting briefly for one the caller may already have seen.
        A batch's line does not wait (:func:`~shared.core.commands.together_connection`):
        where spending has heard nothing of a decision yet, it answers 503 at once."""
        found: list[requests.Decision | None] = [None]

        async def decided(conn: Connection) -> bool:
            found[0] = await views.decision_of(conn, request_id)
            return found[0] is not None and found[0].outcome != "referred"

        await wait_for_view(self._core.pool, decided, seconds=DECISION_WAIT_SECONDS)
        if found[0] is None and together_connection() is not None:
            raise NotYetConsistentError(
                "spending has not yet heard approval's decision on this request; retry"
            )
        return found[0]

    async def _request_command(
        self,
        caller: Caller,
        pilot_id: str,
        request_id: UUID,
        build: CommandBuilder,
        respond: Answer | None = None,
    ) -> CommandResult:
        """Load, check the team, build (sealing its text in this transaction: a refusal
        keeps no key), decide, append; answer (by default with the request's view)."""

        async def handle(conn: Connection) -> CommandResult:
            request = await self._load(conn, pilot_id, request_id)
            made = request.state.require()
            require_team(caller.principal, made.team, unseen=NotFoundError("no such spend request"))
            command = await build(conn, subject_of(pilot_id, made.family_id))
            purchased_on = (
                command.purchased_on if isinstance(command, requests.RecordPurchase) else None
            )
            await _within_business_time(
                conn, caller, pilot_id, made.family_id, self._core.clock(), purchased_on
            )
            decided = await self._core.aggregates.execute(
                conn, request, command, caller.context, made.family_id
            )
            await indexes.record(conn, pilot_id, made.family_id, decided.events)
            if respond is not None:
                return respond(decided)
            decision = await views.decision_of(conn, request_id)
            body = _view(pilot_id, decided.state, decision, decided.stream_version)
            return CommandResult(200, body.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def withdraw(
        self, caller: Caller, pilot_id: str, request_id: UUID, body: WithdrawBody
    ) -> CommandResult:
        """Withdraw a request before anything is bought."""
        await self._require_visible(caller.principal, pilot_id, request_id)
        decision = await self._current_decision(request_id)

        async def build(conn: Connection, subject: str) -> requests.Command:
            reason = await self._sealer.seal(conn, subject, body.reason)
            return requests.WithdrawRequest(reason=reason, decision=decision)

        return await self._request_command(caller, pilot_id, request_id, build)

    async def purchase(
        self, caller: Caller, pilot_id: str, request_id: UUID, body: PurchaseBody
    ) -> CommandResult:
        """Record a purchase against an approved request."""
        await self._require_visible(caller.principal, pilot_id, request_id)
        command = requests.RecordPurchase(
            purchase_id=self._core.ids(),
            amount_pence=body.amount_pence,
            purchased_on=body.purchased_on,
            method=body.method,
            vendor=body.vendor,
            receipt_ref=body.receipt_ref,
            decision=await self._decision(request_id),
        )
        return await self._request_command(
            caller, pilot_id, request_id, _given(command), partial(answer, 201, PurchaseResult)
        )

    async def refund(
        self, caller: Caller, pilot_id: str, purchase_id: UUID, body: RefundBody
    ) -> CommandResult:
        """Record money returned from a purchase."""
        async with self._core.commands.connection() as conn:
            request_id = await indexes.request_of_purchase(conn, pilot_id, purchase_id)
        if request_id is None:
            raise NotFoundError("no such purchase")
        refund_id = self._core.ids()

        async def build(conn: Connection, subject: str) -> requests.Command:
            return requests.RefundPurchase(
                refund_id=refund_id,
                purchase_id=purchase_id,
                amount_pence=body.amount_pence,
                reason=await self._sealer.seal(conn, subject, body.reason),
            )

        return await self._request_command(
            caller, pilot_id, request_id, build, partial(answer, 201, RefundResult)
        )

    async def close(
        self, caller: Caller, pilot_id: str, request_id: UUID, _: CloseBody
    ) -> CommandResult:
        """Close a request, releasing what was approved and not spent."""
        await self._require_visible(caller.principal, pilot_id, request_id)
        command = requests.CloseRequest(decision=await self._decision(request_id))
        return await self._request_command(caller, pilot_id, request_id, _given(command))

    async def _current_decision(self, request_id: UUID) -> requests.Decision | None:
        async with self._core.commands.connection() as conn:
            return await views.decision_of(conn, request_id)

    async def purposes(self, principal: Principal, pilot_id: str, family_id: str) -> PurposesView:
        """What each of the family's requests was for, opened, for those allowed to read it:
        the twin of allocation's notes, and what a statement shows when the worker asks."""
        unseen = NotFoundError("no such family in this pilot")
        async with self._core.pool.acquire() as conn:
            family = await views.family_of(conn, pilot_id, family_id)
            if family is None:
                raise unseen
            require_team(principal, family.team, unseen=unseen)
            subject = subject_of(pilot_id, family_id)
            purposes = []
            for row in await conn.fetch(_REQUESTS_OF_FAMILY, pilot_id, family_id):
                envelope = Envelope.model_validate(row["envelope"])
                event = decode(envelope)
                assert isinstance(event, SpendRequested)
                purposes.append(
                    PurposeView(
                        request_id=event.request_id,
                        category=event.category,
                        requested_at=envelope.time,
                        purpose=await self._sealer.open(conn, subject, event.purpose) or "",
                    )
                )
        return PurposesView(family_id=family_id, purposes=tuple(purposes))

    async def _require_visible(self, principal: Principal, pilot_id: str, request_id: UUID) -> None:
        async with self._core.commands.connection() as conn:
            team = await indexes.team_of(conn, pilot_id, request_id)
        if team is None:
            raise NotFoundError("no such spend request")
        require_team(principal, team, unseen=NotFoundError("no such spend request"))


class _ViewsBehindError(Exception):
    """The views do not yet hold what a request needs: wait for them (outside the
    transaction, which this rolls back), then run it again."""


async def _views(
    conn: Connection, pilot_id: str, family_id: str, principal: Principal
) -> views.ForRequest:
    """The views of the pilot and of the family, as they stand, the family as the caller may
    know it: another team's is not there for a worker or manager, and takes the very path a
    missing one takes (the same wait for the view, the same answer), so that neither the
    answer nor its time tells a family of another team from one that does not exist."""
    read = await views.for_request(conn, pilot_id, family_id)
    family = read.family
    if family is not None and principal.role in TEAM_SCOPED_ROLES and principal.team != family.team:
        return replace(read, family=None, key=None)
    return read


def _caught_up(read: views.ForRequest, seen: int | None) -> bool:
    """Whether the views hold the family, at the version the caller saw, and its pilot at the
    configuration it was enrolled under (their events travel on different partitions)."""
    if read.family is None or read.family.stream_version < (seen or 0):
        return False
    return read.pilot is not None and read.pilot.version >= read.family.pilot_version


def _eligible(
    principal: Principal,
    pilot: PilotInForce | None,
    family: views.FamilyView | None,
    body: SpendRequestBody,
    on: date,
) -> tuple[PilotInForce, views.FamilyView]:
    """The pilot and family a request is for, once it may be made for them on ``on``."""
    if pilot is None:
        raise NotFoundError("no such pilot")
    if family is None:
        raise UnprocessableError("no such family in this pilot", code="unknown_family")
    unknown = UnprocessableError("no such family in this pilot", code="unknown_family")
    require_team(principal, family.team, unseen=unknown)
    _refuse_family(family, on)
    if body.category not in pilot.config.categories:
        raise UnprocessableError(
            f"category {body.category} is not one of {', '.join(pilot.config.categories)}",
            code="unknown_category",
        )
    return pilot, family


async def _within_business_time(
    conn: Connection,
    caller: Caller,
    pilot_id: str,
    family_id: str,
    now: datetime,
    purchased_on: date | None = None,
) -> None:
    """The caller's occurred_at, and a purchase's day, within the pilot's backdating window
    and the family's life."""
    if caller.context.occurred_at is None and purchased_on is None:
        return
    pilot = await views.pilot_of(conn, pilot_id)
    family = await views.family_of(conn, pilot_id, family_id)
    backdating = pilot.config.backdating_days if pilot else None
    enrolled_on = family.enrolled_on if family else None
    check_occurred_at(
        caller.context.occurred_at, now, backdating_days=backdating, enrolled_on=enrolled_on
    )
    if purchased_on is not None:
        check_business_day(
            "purchased_on", purchased_on, now, backdating_days=backdating, enrolled_on=enrolled_on
        )


def _refuse_family(family: views.FamilyView, on: date) -> None:
    if family.exited_on is not None and family.exited_on <= on:
        raise UnprocessableError(
            f"the family left the pilot on {family.exited_on}", code="family_exited"
        )
    if family.arm == "control":
        raise UnprocessableError(
            "the family is in the control arm and has no budget", code="control_arm"
        )


def _view(
    pilot_id: str,
    state: requests.RequestState,
    decision: requests.Decision | None,
    stream_version: int,
) -> RequestView:
    request = state.require()
    status = requests.status_of(state, decision)
    approved = decision.approved_pence if decision and decision.outcome == "approved" else 0
    released = approved - state.purchased_pence if status in {"closed", "withdrawn"} else 0
    return RequestView(
        request_id=request.request_id,
        pilot_id=pilot_id,
        family_id=request.family_id,
        team=request.team,
        status=status,
        amount_pence=request.amount_pence,
        category=request.category,
        requested_by=request.requested_by,
        family_involved=request.family_involved,
        needed_by=request.needed_by,
        approved_pence=approved,
        spent_pence=state.spent_pence,
        released_pence=max(0, released),
        purchases=tuple(
            PurchaseLine(
                purchase_id=purchase_id,
                amount_pence=amount,
                refunded_pence=state.refunds.get(purchase_id, 0),
            )
            for purchase_id, amount in state.purchases.items()
        ),
        period_start=request.period_start,
        period_end=request.period_end,
        stream_version=stream_version,
    )


def _given(command: requests.Command) -> CommandBuilder:
    async def build(_: Connection, __: str) -> requests.Command:
        return command

    return build
