"""The pilot aggregate: its configuration (versioned) and its randomisation register.

Stream ``pilot:<pilot_id>``. Enrolments in a randomised pilot append ``FamilyRandomised``
here, so that the register serialises them: the order of these events is the enrolment
order the randomisation is reproducible from.
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from services.allocation.randomisation import Arm, arm_for, ratio_fraction
from shared.errors import NotFoundError
from shared.events import DomainEvent, Frozen
from shared.types import Identifier, Pence

__all__ = [
    "NO_STRATUM",
    "AllocationPolicy",
    "ApprovalTier",
    "ConfigurePilot",
    "EveryoneTreated",
    "FamilyRandomised",
    "PilotConfig",
    "PilotConfigured",
    "PilotState",
    "RandomiseFamily",
    "Randomised",
    "decide_configure",
    "decide_randomise",
    "evolve",
    "initial_state",
    "stream_id",
]

NO_STRATUM = "_"  # the stratum of families enrolled without one


def stream_id(pilot_id: str) -> str:
    """The pilot's stream."""
    return f"pilot:{pilot_id}"


class EveryoneTreated(Frozen):
    """Every enrolled family is in the treatment arm."""

    mode: Literal["all"] = "all"


class Randomised(Frozen):
    """Families are randomised to treatment or control by permuted blocks within strata."""

    mode: Literal["randomised"]
    treatment_ratio: float = Field(gt=0, lt=1, description="A small fraction: 0.5, 0.25, 1/3.")
    seed: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    @field_validator("treatment_ratio")
    @classmethod
    def _small_fraction(cls, value: float) -> float:
        ratio_fraction(value)
        return value


AllocationPolicy = Annotated[EveryoneTreated | Randomised, Field(discriminator="mode")]


class ApprovalTier(Frozen):
    """Requests up to this amount are approved by this approver."""

    up_to_pence: Pence
    approver: Literal["auto", "manager"]


Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class PilotConfig(Frozen):
    """A pilot's rules: configuration, not code."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    period_months: int = Field(strict=True, ge=1, le=120)
    family_cap_pence: Pence = Field(description="The most a family may be allocated per period.")
    allocation: AllocationPolicy = Field(default_factory=EveryoneTreated)
    approval_tiers: tuple[ApprovalTier, ...] = Field(
        default=(),
        description="Ascending; a request of amount A goes to the first tier with A <= "
        "up_to_pence, above the last tier to a manager; empty: a manager decides every request.",
    )
    categories: tuple[Category, ...] = Field(min_length=1)
    forecast_spend_per_family_pence: Pence | None = None

    @field_validator("approval_tiers")
    @classmethod
    def _ascending(cls, tiers: tuple[ApprovalTier, ...]) -> tuple[ApprovalTier, ...]:
        limits = [tier.up_to_pence for tier in tiers]
        if any(later <= earlier for earlier, later in itertools.pairwise(limits)):
            raise ValueError("approval_tiers must be strictly ascending by up_to_pence")
        return tiers

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(categories)) != len(categories):
            raise ValueError("categories must not repeat")
        return categories


# Commands


class ConfigurePilot(Frozen):
    """Create a pilot or change its configuration."""

    pilot_id: Identifier
    config: PilotConfig


class RandomiseFamily(Frozen):
    """Assign an arm to a family being enrolled."""

    family_id: Identifier
    stratum: str
    enrolled_on: date


# Events


class PilotConfigured(DomainEvent):
    """A pilot's configuration, as of a version; requests are judged by the version in force."""

    event_type = "pilot.configured"
    pilot_id: str
    version: int
    config: PilotConfig


class FamilyRandomised(DomainEvent):
    """A family's place in its stratum's sequence and the arm it was given, for good."""

    event_type = "pilot.family_randomised"
    family_id: str
    stratum: str
    seed: str
    treatment_ratio: float
    sequence: int = Field(description="0-based position among the stratum's randomised families")
    block: int
    arm: Arm
    pilot_version: int


class PilotState(Frozen):
    """What a decision about a pilot needs."""

    pilot_id: str | None = None
    version: int = 0
    config: PilotConfig | None = None
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
            update={"pilot_id": event.pilot_id, "version": event.version, "config": event.config}
        )
    if isinstance(event, FamilyRandomised):
        key = f"{event.seed}|{event.stratum}"
        counts = {**state.randomised, key: state.randomised.get(key, 0) + 1}
        return state.model_copy(update={"randomised": counts})
    return state


def decide_configure(state: PilotState, command: ConfigurePilot) -> list[PilotConfigured]:
    """A new version when the configuration changes; nothing when it is the same."""
    if state.config == command.config:
        return []
    return [
        PilotConfigured(pilot_id=command.pilot_id, version=state.version + 1, config=command.config)
    ]


def decide_randomise(state: PilotState, command: RandomiseFamily) -> list[FamilyRandomised]:
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
