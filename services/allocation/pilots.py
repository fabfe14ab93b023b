"""The pilot aggregate: its configuration, versioned.

Stream ``pilot:<pilot_id>``. The configuration's shape and the events are allocation's
contract (:mod:`shared.contracts.allocation`). Randomisations have registers of their own,
one per stratum (:mod:`services.allocation.register`); those recorded here before then
still count (:meth:`PilotState.randomised_before`).
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


class PilotState(Frozen):
    """What a decision about a pilot needs."""

    pilot_id: str | None = None
    version: int = 0
    config: PilotConfig | None = None
    period_lengths: tuple[PeriodLength, ...] = ()
    # Randomisations recorded in this stream before registers had streams of their own.
    randomised: dict[str, int] = Field(default_factory=dict)  # (seed|stratum) -> count

    def randomised_before(self, seed: str, stratum: str) -> int:
        """How many families this stream randomised with the seed in the stratum."""
        return self.randomised.get(f"{seed}|{stratum}", 0)

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


Command = ConfigurePilot


def decide(state: PilotState, command: Command) -> list[DomainEvent]:
    """The events a command produces, or the error that refuses it."""
    return _configure(state, command)


DECIDER = Decider(PILOT_STREAM, initial_state, evolve, decide, REGISTRY)
