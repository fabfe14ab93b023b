"""The randomisation register of one stratum: stream ``register:<pilot_id>:<stratum>``.

Each enrolment in a randomised pilot appends ``FamilyRandomised`` to its stratum's register;
the order of these events is the enrolment order the randomisation is reproducible from
(``services/allocation/randomisation.py``). A stream per stratum keeps the registers out of
the pilot's stream, so that a family command loads only the pilot's configuration, whatever
the number of families, and enrolments in different strata never meet. Enrolments in one
stratum are serialised by a lock on the register taken before it is loaded
(:meth:`shared.core.aggregates.Aggregates.serialise`): none of them fails for having raced
another.

Pilots randomised before registers had streams of their own kept their randomisations in the
pilot's stream; the handler passes their count in (``earlier``), so sequences carry on.

Each event carries its place in its seed's sequence, and names the seed by its commitment,
so the last event alone gives the next place for its seed: the handler loads only the last
event (a register's cost does not grow with the stratum), and the whole stream only when
the pilot has gone back to another seed.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from services.allocation.randomisation import arm_for
from shared.contracts.allocation import (
    REGISTER_STREAM,
    REGISTRY,
    FamilyRandomised,
    PilotConfig,
    Randomised,
)
from shared.core.deciders import Decider
from shared.core.events import DomainEvent, Frozen
from shared.core.types import Identifier

__all__ = ["DECIDER", "RandomiseFamily", "RegisterState", "decide", "evolve", "initial_state"]


class RandomiseFamily(Frozen):
    """Give a family being enrolled its arm, under the configuration in force, with the
    pilot's seed (opened by the handler: it is never in an event, only its commitment)."""

    family_id: Identifier
    stratum: str
    enrolled_on: date
    config: PilotConfig
    pilot_version: int
    seed: str
    commitment: str
    earlier: int = Field(ge=0, description="Randomised with this seed in the pilot's stream.")


class RegisterState(Frozen):
    """The next place in each seed's sequence (by its commitment), for the seeds the events
    folded used."""

    following: dict[str, int] = Field(default_factory=dict)

    def knows(self, commitment: str) -> bool:
        """Whether the events folded said where this seed's sequence stands."""
        return commitment in self.following


def initial_state() -> RegisterState:
    """A stratum nobody was randomised in."""
    return RegisterState()


def evolve(state: RegisterState, event: DomainEvent) -> RegisterState:
    """The register after one event."""
    if isinstance(event, FamilyRandomised):
        following = {**state.following, event.seed_commitment: event.sequence + 1}
        return state.model_copy(update={"following": following})
    return state


def decide(state: RegisterState, command: RandomiseFamily) -> list[DomainEvent]:
    """The family's arm; nothing when the pilot does not randomise."""
    policy = command.config.allocation
    if not isinstance(policy, Randomised):
        return []
    sequence = state.following.get(command.commitment, command.earlier)
    arm = arm_for(command.seed, command.stratum, sequence, policy.treatment_ratio, policy.method)
    return [
        FamilyRandomised(
            family_id=command.family_id,
            stratum=command.stratum,
            seed_commitment=command.commitment,
            method=policy.method,
            treatment_ratio=policy.treatment_ratio,
            sequence=sequence,
            arm=arm,
            pilot_version=command.pilot_version,
        )
    ]


DECIDER = Decider(REGISTER_STREAM, initial_state, evolve, decide, REGISTRY)
