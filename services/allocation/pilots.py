"""The pilot aggregate: its configuration (versioned) and its randomisation register.

Stream ``pilot:<pilot_id>``. Enrolments in a randomised pilot append ``FamilyRandomised``
here, so that the register serialises them: the order of these events is the enrolment
order the randomisation is reproducible from. The configuration's shape and the events are
allocation's contract (:mod:`shared.contracts.allocation`).
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from services.allocation.randomisation import arm_for
from shared.contracts.allocation import (
    REGISTRY,
    FamilyRandomised,
    PilotConfig,
    PilotConfigured,
    Randomised,
)
from shared.contracts.periods import PeriodLength, lengths_after
from shared.core.deciders import Decider
from shared.core.errors import NotFoundError
from shared.core.events import DomainEvent, Frozen
from shared.core.types import Identifier

__all__ = [
    "DECIDER",
    "NO_STRATUM",
    "Command",
    "ConfigurePilot",
    "PilotState",
    "RandomiseFamily",
    "decide",
    "evolve",
    "initial_state",
]

NO_STRATUM = "_"  # the stratum of families enrolled without one


# Commands


class ConfigurePilot(Frozen):
    """Create a pilot or change its configuration."""

    pilot_id: Identifier
    config: PilotConfig
    today: date


class RandomiseFamily(Frozen):
    """Assign an arm to a family being enrolled."""

    family_id: Identifier
    stratum: str
    enrolled_on: date


class PilotState(Frozen):
    """What a decision about a pilot needs."""

    pilot_id: str | None = None
    version: int = 0
    config: PilotConfig | None = None
    period_lengths: tuple[PeriodLength, ...] = ()
    randomised: dict[str, int] = Field(default_factory=dict)  # (seed|stratum) -> count

    def require(self) -> PilotConfig:
        """The configuration, or NotFoundError for a pilot never configured."""
        if self.config is None:
            raise NotFoundError("no such pilot")
        return self.config


def initial_state() -> PilotState:
    """A pilot before its first event."""
    return PilotState()


def evolve(state: PilotState, event: DomainEvent) -> PilotState:
    """The pilot after one event."""
    if isinstance(event, PilotConfigured):
        return state.model_copy(
            update={
                "pilot_id": event.pilot_id,
                "version": event.version,
                "config": event.config,
                "period_lengths": event.period_lengths,
            }
        )
    if isinstance(event, FamilyRandomised):
        key = f"{event.seed}|{event.stratum}"
        counts = {**state.randomised, key: state.randomised.get(key, 0) + 1}
        return state.model_copy(update={"randomised": counts})
    return state


def _configure(state: PilotState, command: ConfigurePilot) -> list[DomainEvent]:
    """A new version when the configuration changes; nothing when it is the same."""
    if state.config == command.config:
        return []
    months, today = command.config.period_months, command.today
    return [
        PilotConfigured(
            pilot_id=command.pilot_id,
            version=state.version + 1,
            config=command.config,
            period_lengths=lengths_after(state.period_lengths, months, today),
        )
    ]


def _randomise(state: PilotState, command: RandomiseFamily) -> list[DomainEvent]:
    """The family's arm under the configuration in force; none if the pilot does not randomise."""
    config = state.require()
    policy = config.allocation
    if not isinstance(policy, Randomised):
        return []
    sequence = state.randomised.get(f"{policy.seed}|{command.stratum}", 0)
    arm, block = arm_for(policy.seed, command.stratum, sequence, policy.treatment_ratio)
    return [
        FamilyRandomised(
            family_id=command.family_id,
            stratum=command.stratum,
            seed=policy.seed,
            treatment_ratio=policy.treatment_ratio,
            sequence=sequence,
            block=block,
            arm=arm,
            pilot_version=state.version,
        )
    ]


Command = ConfigurePilot | RandomiseFamily


def decide(state: PilotState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    if isinstance(command, ConfigurePilot):
        return _configure(state, command)
    return _randomise(state, command)


DECIDER = Decider("pilot", initial_state, evolve, decide, REGISTRY)
