"""The pilot aggregate: its configuration, versioned, and its randomisation seeds.

Stream ``pilot:<pilot_id>``. The configuration's shape and the events are allocation's
contract (:mod:`shared.contracts.allocation`). Randomisations have registers of their own,
one per stratum (:mod:`services.allocation.register`); those recorded here before then
still count (:meth:`PilotState.randomised_before`).

A randomised pilot's seed is drawn by the ledger, never given: the command carries a fresh
one (drawn and sealed by the handler, as time and ids are), which the decider takes when
the pilot has no secret seed to randomise with (it never randomised, its seed was public,
or it was revealed when a trial closed). Revealing makes every seed the pilot used public,
after which no family is randomised with them.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from shared.contracts.allocation import (
    PILOT_STREAM,
    REGISTRY,
    FamilyRandomised,
    PilotConfig,
    PilotConfigured,
    RandomisationRevealed,
    Randomised,
    RevealedSeed,
    Seed,
)
from shared.contracts.periods import PeriodLength, lengths_after
from shared.core.deciders import Decider
from shared.core.errors import ConflictError, NotFoundError
from shared.core.events import DomainEvent, Frozen
from shared.core.types import Identifier

__all__ = [
    "DECIDER",
    "NO_STRATUM",
    "Command",
    "ConfigurePilot",
    "PilotState",
    "RevealSeeds",
    "decide",
    "evolve",
    "initial_state",
]

NO_STRATUM = "_"  # the stratum of families enrolled without one


# Commands


class ConfigurePilot(Frozen):
    """Create a pilot or change its configuration. ``fresh_seed``: a seed the handler drew
    and sealed, taken if the pilot needs one."""

    pilot_id: Identifier
    config: PilotConfig
    today: date
    fresh_seed: Seed


class RevealSeeds(Frozen):
    """The trial closed: publish every seed the pilot randomised with (``opened``: each
    sealed one as the handler opened it, by commitment)."""

    pilot_id: Identifier
    opened: dict[str, str]
    revealed_on: date


class PilotState(Frozen):
    """What a decision about a pilot needs."""

    pilot_id: str | None = None
    version: int = 0
    config: PilotConfig | None = None
    period_lengths: tuple[PeriodLength, ...] = ()
    seed: Seed | None = None  # the seed randomisations use now
    seeds: dict[str, Seed] = Field(default_factory=dict)  # every one used, by commitment
    revealed: dict[str, str] = Field(default_factory=dict)  # seeds made public, by commitment
    # Randomisations recorded in this stream before registers had streams of their own.
    randomised: dict[str, int] = Field(default_factory=dict)  # (commitment|stratum) -> count

    def randomised_before(self, commitment: str, stratum: str) -> int:
        """How many families this stream randomised with the seed in the stratum."""
        return self.randomised.get(f"{commitment}|{stratum}", 0)

    def require(self) -> PilotConfig:
        """The configuration, or NotFoundError for a pilot never configured."""
        if self.config is None:
            raise NotFoundError("no such pilot")
        return self.config

    def secret_seed(self) -> Seed | None:
        """The seed to randomise with, if it is still secret."""
        seed = self.seed
        if seed is None or seed.public is not None or seed.commitment in self.revealed:
            return None
        return seed


def initial_state() -> PilotState:
    """A pilot before its first event."""
    return PilotState()


def evolve(state: PilotState, event: DomainEvent) -> PilotState:
    """The pilot after one event."""
    if isinstance(event, PilotConfigured):
        seeds = (
            state.seeds
            if event.seed is None
            else {**state.seeds, event.seed.commitment: event.seed}
        )
        return state.model_copy(
            update={
                "pilot_id": event.pilot_id,
                "version": event.version,
                "config": event.config,
                "period_lengths": event.period_lengths,
                "seed": event.seed or state.seed,
                "seeds": seeds,
            }
        )
    if isinstance(event, RandomisationRevealed):
        revealed = {**state.revealed, **{seed.commitment: seed.seed for seed in event.seeds}}
        return state.model_copy(update={"revealed": revealed})
    if isinstance(event, FamilyRandomised):
        key = f"{event.seed_commitment}|{event.stratum}"
        counts = {**state.randomised, key: state.randomised.get(key, 0) + 1}
        return state.model_copy(update={"randomised": counts})
    return state


def _configure(state: PilotState, command: ConfigurePilot) -> list[DomainEvent]:
    """A new version when the configuration changes, or when a randomised pilot has no
    secret seed to randomise with; nothing when it is the same."""
    randomised = isinstance(command.config.allocation, Randomised)
    seed = state.seed
    if randomised and state.secret_seed() is None:
        seed = command.fresh_seed
    if state.config == command.config and seed == state.seed:
        return []
    months, today = command.config.period_months, command.today
    return [
        PilotConfigured(
            pilot_id=command.pilot_id,
            version=state.version + 1,
            config=command.config,
            period_lengths=lengths_after(state.period_lengths, months, today),
            seed=seed if randomised else None,
        )
    ]


def _reveal(state: PilotState, command: RevealSeeds) -> list[DomainEvent]:
    state.require()
    hidden = [seed for seed in state.seeds.values() if seed.commitment not in state.revealed]
    if not hidden:
        raise ConflictError(
            "this pilot has no seed left to reveal: it never randomised, or its seeds were "
            "revealed already",
            code="nothing_to_reveal",
        )
    return [
        RandomisationRevealed(
            pilot_id=command.pilot_id,
            seeds=tuple(
                RevealedSeed(
                    commitment=seed.commitment,
                    seed=seed.public or command.opened[seed.commitment],
                )
                for seed in hidden
            ),
            revealed_on=command.revealed_on,
        )
    ]


Command = ConfigurePilot | RevealSeeds


def decide(state: PilotState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    if isinstance(command, RevealSeeds):
        return _reveal(state, command)
    return _configure(state, command)


DECIDER = Decider(PILOT_STREAM, initial_state, evolve, decide, REGISTRY)
