"""Allocation's application: each command loads its streams, decides, appends, answers.

Every method runs in one transaction through the command runner; nothing here speaks
HTTP. Team checks happen here because only the loaded family knows its team.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date

from services.allocation import families, pilots
from services.allocation.schemas import (
    AdjustmentBody,
    AdjustmentResult,
    AllocationBody,
    AllocationResult,
    DisclosureBody,
    EnrolmentBody,
    EnrolmentResult,
    ErasureBody,
    ErasureResult,
    ExitBody,
    ExitResult,
    FamilyView,
    NotesView,
    NoteView,
    OutcomeBody,
    OutcomeView,
    PeriodView,
    PilotView,
    Recorded,
)
from shared import balances
from shared.auth import Principal, require_team
from shared.commands import Caller, CommandResult
from shared.db import Connection
from shared.events import DomainEvent, Envelope, EventRegistry, fold
from shared.eventstore import CommandContext, PendingEvent, Stream
from shared.personal import Sealer, is_sealed, subject_of
from shared.service import ServiceCore

__all__ = ["REGISTRY", "Allocation"]

REGISTRY = EventRegistry(
    (
        pilots.PilotConfigured,
        pilots.FamilyRandomised,
        families.FamilyEnrolled,
        families.BudgetAllocated,
        families.BudgetAdjusted,
        families.FamilyExited,
        families.BudgetDisclosed,
        families.OutcomeRecorded,
        families.PersonalDataErased,
    )
)


class Allocation:
    """Pilots, families and their budgets."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._store = core.store
        self._sealer = Sealer()

    def _today(self) -> date:
        return self._core.clock().date()

    async def _pilot(self, conn: Connection, pilot_id: str) -> tuple[Stream, pilots.PilotState]:
        stream = await self._store.load(conn, pilots.stream_id(pilot_id))
        return stream, fold(stream.envelopes, REGISTRY, pilots.initial_state(), pilots.evolve)

    async def _family(
        self, conn: Connection, pilot_id: str, family_id: str
    ) -> tuple[Stream, families.FamilyState]:
        stream = await self._store.load(conn, families.stream_id(pilot_id, family_id))
        return stream, fold(stream.envelopes, REGISTRY, families.initial_state(), families.evolve)

    async def _append(
        self,
        conn: Connection,
        stream: Stream,
        events: Sequence[DomainEvent],
        context: CommandContext,
        pilot_id: str,
        family_id: str | None,
    ) -> tuple[Envelope, ...]:
        return await self._store.append(
            conn, stream, [PendingEvent(event, pilot_id, family_id) for event in events], context
        )

    # Pilots

    async def configure_pilot(
        self,
        caller: Caller,
        pilot_id: str,
        config: pilots.PilotConfig,
    ) -> CommandResult:
        """Create the pilot (201) or record a new version of its configuration (200)."""

        async def handle(conn: Connection) -> CommandResult:
            stream, state = await self._pilot(conn, pilot_id)
            events = pilots.decide_configure(
                state, pilots.ConfigurePilot(pilot_id=pilot_id, config=config)
            )
            appended = await self._append(conn, stream, events, caller.context, pilot_id, None)
            version = events[-1].version if events else state.version
            body = PilotView(
                pilot_id=pilot_id,
                version=version,
                config=config,
                stream_version=appended[-1].stream_version if appended else stream.version,
            )
            return CommandResult(201 if state.config is None else 200, body.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def pilot(self, pilot_id: str) -> PilotView:
        """The pilot's configuration in force."""
        async with self._core.pool.acquire() as conn:
            stream, state = await self._pilot(conn, pilot_id)
        return PilotView(
            pilot_id=pilot_id,
            version=state.version,
            config=state.require(),
            stream_version=stream.version,
        )

    # Families

    async def enrol(
        self,
        caller: Caller,
        pilot_id: str,
        body: EnrolmentBody,
    ) -> CommandResult:
        """Enrol a family, randomising it to an arm where the pilot says so."""
        require_team(caller.principal, body.team)

        async def handle(conn: Connection) -> CommandResult:
            pilot_stream, pilot = await self._pilot(conn, pilot_id)
            pilot.require()
            family_stream, family = await self._family(conn, pilot_id, body.family_id)
            stratum = body.stratum or pilots.NO_STRATUM
            # Decide both before appending either: a refusal leaves the register untouched.
            randomised = pilots.decide_randomise(
                pilot,
                pilots.RandomiseFamily(
                    family_id=body.family_id, stratum=stratum, enrolled_on=body.enrolled_on
                ),
            )
            enrolled = families.decide(
                family,
                families.EnrolFamily(
                    family_id=body.family_id,
                    team=body.team,
                    worker=body.worker,
                    enrolled_on=body.enrolled_on,
                    stratum=body.stratum,
                    arm=randomised[0].arm if randomised else "treatment",
                    pilot_version=pilot.version,
                ),
            )
            await self._append(conn, pilot_stream, randomised, caller.context, pilot_id, None)
            appended = await self._append(
                conn, family_stream, enrolled, caller.context, pilot_id, body.family_id
            )
            event = enrolled[0]
            assert isinstance(event, families.FamilyEnrolled)
            result = EnrolmentResult(
                family_id=body.family_id, arm=event.arm, stream_version=appended[-1].stream_version
            )
            return CommandResult(201, result.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def family(self, principal: Principal, pilot_id: str, family_id: str) -> FamilyView:
        """The family as recorded, for callers allowed to see it."""
        async with self._core.pool.acquire() as conn:
            stream, state = await self._family(conn, pilot_id, family_id)
        state.require()
        assert state.team is not None
        assert state.worker is not None
        assert state.arm is not None
        require_team(principal, state.team)
        return FamilyView(
            pilot_id=pilot_id,
            family_id=family_id,
            team=state.team,
            worker=state.worker,
            stratum=state.stratum,
            arm=state.arm,
            enrolled_on=state.enrolment_date,
            status="exited" if state.exited_on else "active",
            exited_on=state.exited_on,
            periods=tuple(
                PeriodView(
                    period_start=start, period_end=state.period_ends[start], allocated_pence=amount
                )
                for start, amount in sorted(state.allocated.items())
            ),
            disclosures=state.disclosures,
            outcomes=tuple(OutcomeView(outcome=o, occurred_on=d) for o, d in state.outcomes),
            stream_version=stream.version,
        )

    async def _family_command(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        build: CommandBuilder,
        answer: Callable[[Envelope, DomainEvent], Recorded],
        status: int = 201,
    ) -> CommandResult:
        """What every family command shares: load, check the team, build, decide, append."""

        async def handle(conn: Connection) -> CommandResult:
            _, pilot = await self._pilot(conn, pilot_id)
            config = pilot.require()
            stream, family = await self._family(conn, pilot_id, family_id)
            family.require()
            assert family.team is not None
            require_team(caller.principal, family.team)
            command = await build(conn, pilot, config)
            events = families.decide(family, command)
            appended = await self._append(conn, stream, events, caller.context, pilot_id, family_id)
            return CommandResult(status, answer(appended[-1], events[-1]).model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def _seal(
        self, conn: Connection, pilot_id: str, family_id: str, text: str | None
    ) -> str | None:
        return await self._sealer.seal(conn, subject_of(pilot_id, family_id), text)

    async def allocate(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: AllocationBody,
    ) -> CommandResult:
        """Allocate money for a period."""
        allocation_id = self._core.ids()

        async def build(
            conn: Connection, pilot: pilots.PilotState, config: pilots.PilotConfig
        ) -> families.Command:
            return families.AllocateBudget(
                allocation_id=allocation_id,
                amount_pence=body.amount_pence,
                period_start=body.period_start,
                period_end=body.period_end,
                note=await self._seal(conn, pilot_id, family_id, body.note),
                today=self._today(),
                config=config,
                pilot_version=pilot.version,
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, _answer(AllocationResult)
        )

    async def adjust(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: AdjustmentBody,
    ) -> CommandResult:
        """Raise or lower a period's allocation."""
        adjustment_id = self._core.ids()

        async def build(
            conn: Connection, _: pilots.PilotState, config: pilots.PilotConfig
        ) -> families.Command:
            reason = await self._seal(conn, pilot_id, family_id, body.reason)
            assert reason is not None
            return families.AdjustBudget(
                adjustment_id=adjustment_id,
                delta_pence=body.delta_pence,
                reason=reason,
                period_start=body.period_start,
                today=self._today(),
                config=config,
                spend=await _spend(conn, pilot_id, family_id),
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, _answer(AdjustmentResult)
        )

    async def exit(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: ExitBody,
    ) -> CommandResult:
        """The family leaves the pilot."""

        async def build(
            conn: Connection, _: pilots.PilotState, config: pilots.PilotConfig
        ) -> families.Command:
            reason = await self._seal(conn, pilot_id, family_id, body.reason)
            assert reason is not None
            return families.ExitFamily(
                reason=reason,
                exited_on=body.exited_on,
                today=self._today(),
                config=config,
                spend=await _spend(conn, pilot_id, family_id),
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, _answer(ExitResult), status=200
        )

    async def disclose(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: DisclosureBody,
    ) -> CommandResult:
        """Record that the family was told its budget."""
        command = families.DiscloseBudget(
            disclosed_on=body.disclosed_on,
            amount_disclosed_pence=body.amount_disclosed_pence,
            method=body.method,
        )
        return await self._family_command(
            caller,
            pilot_id,
            family_id,
            _given(command),
            _answer(Recorded),
        )

    async def record_outcome(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: OutcomeBody,
    ) -> CommandResult:
        """Record an outcome for evaluation."""
        command = families.RecordOutcome(outcome=body.outcome, occurred_on=body.occurred_on)
        return await self._family_command(
            caller,
            pilot_id,
            family_id,
            _given(command),
            _answer(Recorded),
        )

    async def erase(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: ErasureBody,
    ) -> CommandResult:
        """Delete the family's sealing keys here, and record that it was done."""

        async def build(
            conn: Connection, _: pilots.PilotState, __: pilots.PilotConfig
        ) -> families.Command:
            erased = await self._sealer.erase(conn, subject_of(pilot_id, family_id))
            return families.ErasePersonalData(
                basis=body.basis, erased_on=body.erased_on, keys_erased=erased
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, _answer(ErasureResult), status=200
        )

    async def notes(self, principal: Principal, pilot_id: str, family_id: str) -> NotesView:
        """The family's free text, opened (or marked erased), for those allowed to read it."""
        async with self._core.pool.acquire() as conn:
            stream, state = await self._family(conn, pilot_id, family_id)
            state.require()
            assert state.team is not None
            require_team(principal, state.team)
            subject = subject_of(pilot_id, family_id)
            notes = []
            for envelope in stream.envelopes:
                for field in ("note", "reason"):
                    sealed = envelope.data.get(field)
                    if isinstance(sealed, str) and is_sealed(sealed):
                        notes.append(
                            NoteView(
                                event_id=envelope.id,
                                type=envelope.type,
                                field=field,
                                text=await self._sealer.open(conn, subject, sealed) or "",
                            )
                        )
        return NotesView(family_id=family_id, notes=tuple(notes))


CommandBuilder = Callable[
    [Connection, pilots.PilotState, pilots.PilotConfig], Awaitable[families.Command]
]


async def _spend(conn: Connection, pilot_id: str, family_id: str) -> dict[date, families.Spend]:
    """Committed and spent per period, from the balances allocation consumes."""
    periods = await balances.of_family(conn, pilot_id, family_id)
    return {
        start: families.Spend(committed_pence=b.committed_pence, spent_pence=b.spent_pence)
        for start, b in periods.items()
    }


def _given(command: families.Command) -> CommandBuilder:
    async def build(
        _: Connection, __: pilots.PilotState, ___: pilots.PilotConfig
    ) -> families.Command:
        return command

    return build


def _answer(model: type[Recorded]) -> Callable[[Envelope, DomainEvent], Recorded]:
    """A command's answer: the result model filled from its event and envelope."""

    def answer(envelope: Envelope, event: DomainEvent) -> Recorded:
        values = {
            **event.model_dump(),
            "family_id": envelope.family_id,
            "event_id": envelope.id,
            "stream_version": envelope.stream_version,
        }
        return model.model_validate({name: values[name] for name in model.model_fields})

    return answer
