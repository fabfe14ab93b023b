"""Allocation's application: each command loads its aggregates, decides, appends, answers.

Every method runs in one transaction through the command runner, and every decision goes
through the shared executor (:mod:`shared.core.deciders`); nothing here speaks HTTP. Team
checks happen here because only the loaded family knows its team.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import date
from uuid import UUID

from services.allocation import adjustments, families, pilots, register
from services.allocation.retention import Due
from services.allocation.schemas import (
    AdjustmentBody,
    AdjustmentResult,
    AdjustmentView,
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
    RevealBody,
)
from shared.contracts import balances, decode
from shared.contracts.allocation import (
    Arm,
    BudgetAdjusted,
    BudgetReductionRequested,
    FamilyRandomised,
    PilotConfig,
    Randomised,
    RevealedSeed,
    Seed,
    seed_commitment,
)
from shared.contracts.approval import ReductionDecided
from shared.contracts.business_time import check_occurred_at
from shared.core.aggregates import Aggregate, Decided, answer
from shared.core.commands import CommandResult, IdempotencyRequest, fingerprint
from shared.core.db import Connection
from shared.core.errors import ConflictError, NotFoundError, UnprocessableError
from shared.core.events import Actor, Envelope
from shared.core.eventstore import CommandContext
from shared.core.personal import Sealer, is_sealed, subject_of
from shared.web.auth import Principal, require_team
from shared.web.http import Caller
from shared.web.service import ServiceCore

__all__ = ["RETENTION_ACTOR", "Allocation"]

RETENTION_ACTOR = "ledger/retention"  # who erases when a retention policy says

Pilot = Aggregate[pilots.PilotState, pilots.Command]
Family = Aggregate[families.FamilyState, families.Command]


class Allocation:
    """Pilots, families and their budgets."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)

    async def on_event(self, conn: Connection, envelope: Envelope) -> None:
        """Apply one event of spending or approval: a cut's outcome, or what is committed
        and spent (an exit records it)."""
        event = decode(envelope)
        if isinstance(event, ReductionDecided):
            await adjustments.settle(conn, event)
            return
        await balances.apply(conn, envelope.pilot_id, envelope.family_id, event)

    def _today(self) -> date:
        return self._core.clock().date()

    async def _pilot(self, conn: Connection, pilot_id: str) -> Pilot:
        return await self._core.aggregates.load(conn, pilots.DECIDER, pilot_id)

    async def _family(self, conn: Connection, pilot_id: str, family_id: str) -> Family:
        return await self._core.aggregates.load(conn, families.DECIDER, pilot_id, family_id)

    # Pilots

    async def configure_pilot(
        self,
        caller: Caller,
        pilot_id: str,
        config: PilotConfig,
    ) -> CommandResult:
        """Create the pilot (201) or record a new version of its configuration (200)."""

        async def handle(conn: Connection) -> CommandResult:
            pilot = await self._pilot(conn, pilot_id)
            command = pilots.ConfigurePilot(
                pilot_id=pilot_id,
                config=config,
                today=self._today(),
                fresh_seed=await self._fresh_seed(conn, pilot_id),
            )
            decided = await self._core.aggregates.execute(
                conn, pilot, command, caller.context, None
            )
            body = _pilot_view(pilot_id, decided.state, decided.stream_version)
            created = pilot.state.config is None
            return CommandResult(201 if created else 200, body.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

    async def _fresh_seed(self, conn: Connection, pilot_id: str) -> Seed:
        """A new randomisation seed (256 bits), sealed under the pilot's own key, and its
        commitment: the decider takes it if the pilot needs one."""
        seed = secrets.token_hex(32)
        sealed = await self._sealer.seal(conn, _seed_subject(pilot_id), seed)
        return Seed(commitment=seed_commitment(seed), sealed=sealed)

    async def pilot(self, pilot_id: str) -> PilotView:
        """The pilot's configuration in force, its seed's commitment, and the seeds revealed."""
        async with self._core.pool.acquire() as conn:
            pilot = await self._pilot(conn, pilot_id)
        pilot.state.require()
        return _pilot_view(pilot_id, pilot.state, pilot.stream.version)

    async def reveal(self, caller: Caller, pilot_id: str, body: RevealBody) -> CommandResult:
        """Close the trial's randomisation: publish every seed the pilot randomised with."""

        async def handle(conn: Connection) -> CommandResult:
            pilot = await self._pilot(conn, pilot_id)
            subject = _seed_subject(pilot_id)
            opened = {
                seed.commitment: await self._sealer.open(conn, subject, seed.sealed) or ""
                for seed in pilot.state.seeds.values()
                if seed.sealed is not None
            }
            command = pilots.RevealSeeds(
                pilot_id=pilot_id, opened=opened, revealed_on=body.revealed_on
            )
            decided = await self._core.aggregates.execute(
                conn, pilot, command, caller.context, None
            )
            view = _pilot_view(pilot_id, decided.state, decided.stream_version)
            return CommandResult(200, view.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)

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
            pilot = await self._pilot(conn, pilot_id)
            config = pilot.state.require()
            check_occurred_at(
                caller.context.occurred_at,
                self._core.clock(),
                backdating_days=config.backdating_days,
                enrolled_on=body.enrolled_on,
            )
            family = await self._family(conn, pilot_id, body.family_id)
            arm = await self._randomise(conn, caller, pilot, body)
            enrolled = await self._core.aggregates.execute(
                conn,
                family,
                families.EnrolFamily(
                    family_id=body.family_id,
                    team=body.team,
                    worker=body.worker,
                    enrolled_on=body.enrolled_on,
                    stratum=body.stratum,
                    arm=arm,
                    pilot_version=pilot.state.version,
                ),
                caller.context,
                body.family_id,
            )
            return answer(201, EnrolmentResult, enrolled)

        return await self._core.commands.run(handle, caller.idempotency)

    async def _randomise(
        self, conn: Connection, caller: Caller, pilot: Pilot, body: EnrolmentBody
    ) -> Arm:
        """The family's arm from its stratum's register (treatment where none randomises).

        Recorded in the caller's transaction before the family's own decider runs: if that
        refuses (enrolled twice), neither is recorded.
        """
        config = pilot.state.require()
        if not isinstance(config.allocation, Randomised):
            return "treatment"
        stratum = _stratum(config.allocation, body.stratum)
        seed = pilot.state.secret_seed()
        if seed is None or seed.sealed is None:
            raise ConflictError(
                "this pilot's randomisation seed is not secret (it was chosen by hand before "
                "seeds were secret, or revealed when a trial closed): configure the pilot again "
                "(PUT) to have the ledger draw a new one",
                code="seed_not_secret",
            )
        opened = await self._sealer.open(conn, _seed_subject(pilot.pilot_id), seed.sealed)
        assert opened is not None
        aggregates = self._core.aggregates
        await aggregates.serialise(conn, register.DECIDER, pilot.pilot_id, stratum)
        stratum_register = await aggregates.load(
            conn, register.DECIDER, pilot.pilot_id, stratum, last_only=True
        )
        if stratum_register.stream.version and not stratum_register.state.knows(
            seed.commitment
        ):  # the pilot went back to a seed used before: its place is further back
            stratum_register = await aggregates.load(
                conn, register.DECIDER, pilot.pilot_id, stratum
            )
        randomise = register.RandomiseFamily(
            family_id=body.family_id,
            stratum=stratum,
            enrolled_on=body.enrolled_on,
            config=config,
            pilot_version=pilot.state.version,
            seed=opened,
            commitment=seed.commitment,
            earlier=pilot.state.randomised_before(seed.commitment, stratum),
        )
        randomised = await aggregates.execute(
            conn, stratum_register, randomise, caller.context, None
        )
        [event] = randomised.events
        assert isinstance(event, FamilyRandomised)
        return event.arm

    async def family(self, principal: Principal, pilot_id: str, family_id: str) -> FamilyView:
        """The family as recorded, for callers allowed to see it."""
        async with self._core.pool.acquire() as conn:
            family = await self._family(conn, pilot_id, family_id)
            reduced = await adjustments.reduced(conn, pilot_id, family_id)
        state = family.state.require()
        assert state.team is not None
        assert state.worker is not None
        assert state.arm is not None
        require_team(principal, state.team, unseen=_unseen_family())
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
                    period_start=start,
                    period_end=state.period_ends[start],
                    allocated_pence=given - reduced.get(start, 0),
                )
                for start, given in sorted(state.allocated.items())
            ),
            disclosures=state.disclosures,
            outcomes=tuple(OutcomeView(outcome=o, occurred_on=d) for o, d in state.outcomes),
            stream_version=family.stream.version,
        )

    async def _family_command(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        build: CommandBuilder,
        result: type[Recorded],
        status: int = 201,
    ) -> CommandResult:
        """A family command answered with ``result`` filled from its event."""

        async def handle(conn: Connection) -> CommandResult:
            decided = await self._decide_family(conn, caller, pilot_id, family_id, build)
            return answer(status, result, decided)

        return await self._core.commands.run(handle, caller.idempotency)

    async def _decide_family(
        self,
        conn: Connection,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        build: CommandBuilder,
    ) -> Decided[families.FamilyState]:
        """What every family command shares: load, check the team, build, decide, append."""
        pilot = await self._pilot(conn, pilot_id)
        config = pilot.state.require()
        family = await self._family(conn, pilot_id, family_id)
        team = family.state.require().team
        assert team is not None
        require_team(caller.principal, team, unseen=_unseen_family())
        check_occurred_at(
            caller.context.occurred_at,
            self._core.clock(),
            backdating_days=config.backdating_days,
            enrolled_on=family.state.enrolment_date,
        )
        command = await build(conn, pilot.state, config)
        return await self._core.aggregates.execute(conn, family, command, caller.context, family_id)

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
            conn: Connection, pilot: pilots.PilotState, config: PilotConfig
        ) -> families.Command:
            return families.AllocateBudget(
                allocation_id=allocation_id,
                amount_pence=body.amount_pence,
                period_start=body.period_start,
                period_end=body.period_end,
                note=await self._sealer.seal(conn, subject_of(pilot_id, family_id), body.note),
                today=self._today(),
                config=config,
                period_lengths=pilot.period_lengths,
                pilot_version=pilot.version,
                reduced=await adjustments.reduced(conn, pilot_id, family_id),
            )

        return await self._family_command(caller, pilot_id, family_id, build, AllocationResult)

    async def adjust(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: AdjustmentBody,
    ) -> CommandResult:
        """Top up a period's allocation (201), or ask approval to cut it (202)."""
        adjustment_id = self._core.ids()

        async def build(
            conn: Connection, pilot: pilots.PilotState, config: PilotConfig
        ) -> families.Command:
            return families.AdjustBudget(
                adjustment_id=adjustment_id,
                delta_pence=body.delta_pence,
                reason=await self._sealer.seal(conn, subject_of(pilot_id, family_id), body.reason),
                period_start=body.period_start,
                today=self._today(),
                config=config,
                period_lengths=pilot.period_lengths,
                reduced=await adjustments.reduced(conn, pilot_id, family_id),
            )

        async def handle(conn: Connection) -> CommandResult:
            decided = await self._decide_family(conn, caller, pilot_id, family_id, build)
            [envelope], [event] = decided.envelopes, decided.events
            assert isinstance(event, BudgetAdjusted | BudgetReductionRequested)
            period = (event.period_start, event.period_end)
            status = await adjustments.record(conn, envelope, event)
            result = AdjustmentResult(
                family_id=family_id,
                event_id=envelope.id,
                stream_version=envelope.stream_version,
                adjustment_id=adjustment_id,
                delta_pence=body.delta_pence,
                period_start=period[0],
                period_end=period[1],
                status=status,
                period_allocated_pence=(
                    event.period_allocated_pence if isinstance(event, BudgetAdjusted) else None
                ),
            )
            return CommandResult(
                201 if status == "applied" else 202, result.model_dump(mode="json")
            )

        return await self._core.commands.run(handle, caller.idempotency)

    async def adjustment(
        self, principal: Principal, pilot_id: str, family_id: str, adjustment_id: UUID
    ) -> AdjustmentView:
        """Where one of the family's adjustments stands."""
        async with self._core.pool.acquire() as conn:
            family = await self._family(conn, pilot_id, family_id)
            team = family.state.require().team
            assert team is not None
            require_team(principal, team, unseen=_unseen_family())
            found = await adjustments.view(conn, pilot_id, family_id, adjustment_id)
        if found is None:
            raise NotFoundError("no such adjustment for this family")
        return found

    async def exit(
        self,
        caller: Caller,
        pilot_id: str,
        family_id: str,
        body: ExitBody,
    ) -> CommandResult:
        """The family leaves the pilot."""

        async def build(
            conn: Connection, pilot: pilots.PilotState, config: PilotConfig
        ) -> families.Command:
            return families.ExitFamily(
                reason=await self._sealer.seal(conn, subject_of(pilot_id, family_id), body.reason),
                exited_on=body.exited_on,
                today=self._today(),
                config=config,
                period_lengths=pilot.period_lengths,
                spend=await _spend(conn, pilot_id, family_id),
                reduced=await adjustments.reduced(conn, pilot_id, family_id),
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, ExitResult, status=200
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
            Recorded,
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
            Recorded,
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
            conn: Connection, _: pilots.PilotState, __: PilotConfig
        ) -> families.Command:
            erased = await self._sealer.erase(conn, subject_of(pilot_id, family_id))
            return families.ErasePersonalData(
                basis=body.basis, erased_on=body.erased_on, keys_erased=erased
            )

        return await self._family_command(
            caller, pilot_id, family_id, build, ErasureResult, status=200
        )

    # Retention: what services.allocation.retention asks of the service.

    async def retention_months(self, conn: Connection, pilot_id: str) -> int | None:
        """The months after exit the pilot's policy in force keeps free text for; None: none."""
        policy = (await self._pilot(conn, pilot_id)).state.require().retention
        return None if policy is None else policy.free_text_months_after_exit

    async def erase_expired(self, item: Due, today: date) -> None:
        """Erase as an administrator would, basis retention_expired, in the ledger's name;
        keyed by the family and its exit, so that a second sweep finds it done."""
        body = ErasureBody(basis="retention_expired", erased_on=today)
        caller = Caller(
            principal=Principal(sub=RETENTION_ACTOR, role="admin", pilot=item.pilot_id),
            context=CommandContext(
                actor=Actor(sub=RETENTION_ACTOR, role="admin"),
                correlation_id=f"retention-{item.family_id}-{item.exited_on}",
                causation_id=None,
                occurred_at=None,
            ),
            idempotency=IdempotencyRequest(
                scope=f"{RETENTION_ACTOR}|{item.pilot_id}",
                key=f"{item.family_id}|{item.exited_on}",
                fingerprint=fingerprint(
                    "ERASE", item.family_id, {"exited_on": str(item.exited_on)}
                ),
            ),
        )
        await self.erase(caller, item.pilot_id, item.family_id, body)

    async def notes(self, principal: Principal, pilot_id: str, family_id: str) -> NotesView:
        """The family's free text, opened (or marked erased), for those allowed to read it."""
        async with self._core.pool.acquire() as conn:
            family = await self._family(conn, pilot_id, family_id)
            team = family.state.require().team
            assert team is not None
            require_team(principal, team, unseen=_unseen_family())
            subject = subject_of(pilot_id, family_id)
            notes = []
            for envelope in family.stream.envelopes:
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


def _seed_subject(pilot_id: str) -> str:
    """The subject whose key seals a pilot's randomisation seeds (three parts: a family's
    subject has two, so the two never meet)."""
    return f"randomisation:{pilot_id}:seed"


def _stratum(policy: Randomised, given: str | None) -> str:
    """The stratum an enrolment is randomised in: one the pilot lists, or, where it lists
    none, the one stratum of everyone (422 ``unknown_stratum`` otherwise: an enroller who
    could name any stratum could start a fresh sequence of their own)."""
    if not policy.strata:
        if given is not None:
            raise UnprocessableError(
                "this pilot randomises every family in one sequence: give no stratum",
                code="unknown_stratum",
            )
        return pilots.NO_STRATUM
    if given not in policy.strata:
        raise UnprocessableError(
            f"stratum must be one of the pilot's: {', '.join(policy.strata)}",
            code="unknown_stratum",
        )
    return given


def _pilot_view(pilot_id: str, state: pilots.PilotState, stream_version: int) -> PilotView:
    seed = state.seed if isinstance(state.require().allocation, Randomised) else None
    revealed = [RevealedSeed(commitment=c, seed=seed) for c, seed in state.revealed.items()]
    return PilotView(
        pilot_id=pilot_id,
        version=state.version,
        config=state.require(),
        seed_commitment=seed.commitment if seed else None,
        revealed_seeds=tuple(revealed),
        stream_version=stream_version,
    )


def _unseen_family() -> NotFoundError:
    """What another team's worker is told of a family: what a missing one answers."""
    return NotFoundError("no such family in this pilot")


CommandBuilder = Callable[[Connection, pilots.PilotState, PilotConfig], Awaitable[families.Command]]


async def _spend(conn: Connection, pilot_id: str, family_id: str) -> dict[date, families.Spend]:
    """Committed and spent per period, from the balances allocation consumes."""
    periods = await balances.of_family(conn, pilot_id, family_id)
    return {
        start: families.Spend(committed_pence=b.committed_pence, spent_pence=b.spent_pence)
        for start, b in periods.items()
    }


def _given(command: families.Command) -> CommandBuilder:
    async def build(_: Connection, __: pilots.PilotState, ___: PilotConfig) -> families.Command:
        return command

    return build
