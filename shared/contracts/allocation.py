"""The contract of ``ledger.allocation``: pilots' configurations and families' lives.

Allocation publishes these events; spending, approval and reporting rely on exactly these
shapes. Each event class is the one definition of its type and ``schema_version``: the
allocation service decides them, consumers decode them (:func:`shared.contracts.decode`).
A change to an event's shape is a new ``schema_version`` with an upcaster, never an edit.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import date
from fractions import Fraction
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from shared.contracts.periods import ALWAYS, PeriodLength
from shared.core.events import DomainEvent, Envelope, EventRegistry, Frozen
from shared.core.topics import TopicContract
from shared.core.types import Pence

__all__ = [
    "CONTRACT",
    "FAMILY_STREAM",
    "MAX_DENOMINATOR",
    "PILOT_STREAM",
    "REGISTER_STREAM",
    "REGISTRY",
    "TOPIC",
    "AllocationPolicy",
    "ApprovalTier",
    "Arm",
    "BudgetAdjusted",
    "BudgetAllocated",
    "BudgetDisclosed",
    "BudgetReductionRequested",
    "Category",
    "DisclosureMethod",
    "ErasureBasis",
    "EveryoneTreated",
    "FamilyEnrolled",
    "FamilyExited",
    "FamilyRandomised",
    "Outcome",
    "OutcomeRecorded",
    "PersonalDataErased",
    "PilotConfig",
    "PilotConfigured",
    "RandomisationMethod",
    "RandomisationRevealed",
    "Randomised",
    "RevealedSeed",
    "Seed",
    "Stratum",
    "approver_for",
    "family_stream_version",
    "ratio_fraction",
    "seed_commitment",
]

TOPIC = "ledger.allocation"
FAMILY_STREAM = "family"
"""The category of families' streams, ``family:<pilot_id>:<family_id>``."""
PILOT_STREAM = "pilot"
"""The category of pilots' streams, ``pilot:<pilot_id>``."""
REGISTER_STREAM = "register"
"""The category of randomisation registers, ``register:<pilot_id>:<stratum>``."""


def family_stream_version(envelope: Envelope) -> int | None:
    """How far an event of a family's stream takes it; None for events of other streams.

    Read from the envelope, so that a type this code does not know still counts: a caller's
    ``allocation_version`` names a stream version, whatever the event there is.
    """
    if envelope.family_id is None or not envelope.stream_id.startswith(f"{FAMILY_STREAM}:"):
        return None
    return envelope.stream_version


Arm = Literal["treatment", "control"]


ErasureBasis = Literal["subject_request", "retention_expired", "court_order", "other"]


Outcome = Literal[
    "entered_care", "child_protection_plan", "reunified", "remained_at_home", "case_closed"
]

MAX_DENOMINATOR = 20


def ratio_fraction(ratio: float) -> Fraction:
    """The ratio as a small fraction, or ValueError when it is not one (0.37, 0.999…)."""
    fraction = Fraction(ratio).limit_denominator(MAX_DENOMINATOR)
    if abs(float(fraction) - ratio) > 1e-9 or not 0 < fraction < 1:
        raise ValueError(
            f"treatment_ratio must be a fraction between 0 and 1 with a denominator of at most "
            f"{MAX_DENOMINATOR} (such as 0.5, 0.25 or 1/3); got {ratio}"
        )
    return fraction


class EveryoneTreated(Frozen):
    """Every enrolled family is in the treatment arm."""

    # A body names the mode (the variant is found by it: {} is refused), so the schema says
    # it is required; the default is for the ledger's own pilots configured without one.
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"required": ["mode"]})

    mode: Literal["all"] = "all"


RandomisationMethod = Literal["simple", "permuted_blocks", "fixed_blocks"]
Stratum = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class Randomised(Frozen):
    """Families are randomised to treatment or control within strata, by a seed the ledger
    draws and keeps secret until the trial closes (services/allocation/randomisation.py)."""

    mode: Literal["randomised"]
    treatment_ratio: float = Field(gt=0, lt=1, description="A small fraction: 0.5, 0.25, 1/3.")
    method: RandomisationMethod = Field(
        default="simple",
        description="simple: each family's arm drawn alone, so earlier arms tell nothing of "
        "the next; permuted_blocks: blocks of random size holding the ratio exactly (balanced, "
        "but guessable near a block's end by someone who sees every arm); fixed_blocks: "
        "pilots randomised before 2026-12-02 only.",
    )
    strata: tuple[Stratum, ...] = Field(
        default=(),
        max_length=50,
        description="The strata an enrolment may name, and must name one of when any is "
        "listed (a closed list); none: every family is randomised in one sequence.",
    )

    @field_validator("treatment_ratio")
    @classmethod
    def _small_fraction(cls, value: float) -> float:
        ratio_fraction(value)
        return value

    @field_validator("strata")
    @classmethod
    def _distinct(cls, strata: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(strata)) != len(strata):
            raise ValueError("strata must not repeat")
        return strata


AllocationPolicy = Annotated[EveryoneTreated | Randomised, Field(discriminator="mode")]


class ApprovalTier(Frozen):
    """Requests up to this amount are approved by this approver."""

    up_to_pence: Pence
    approver: Literal["auto", "manager"]


def approver_for(tiers: Sequence[ApprovalTier], amount_pence: int) -> Literal["auto", "manager"]:
    """Who decides a request: the first tier the amount fits in; above the last, a manager."""
    for tier in tiers:
        if amount_pence <= tier.up_to_pence:
            return tier.approver
    return "manager"


Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class RetentionPolicy(Frozen):
    """When the ledger erases a family's free text by itself, as the council's retention
    schedule says (basis ``retention_expired``)."""

    free_text_months_after_exit: int = Field(
        strict=True, ge=1, le=1200, description="Months after a family's exit date."
    )


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
    backdating_days: int = Field(
        default=31,
        strict=True,
        ge=0,
        le=366,
        description="How far back a caller's occurred_at may go, in days (business time only: "
        "eligibility is always judged when the ledger records a command).",
    )
    retention: RetentionPolicy | None = Field(
        default=None,
        description="Erase a family's free text this long after its exit (checked hourly by "
        "the allocation service, and by `ledger retention run`); none: only on request.",
    )

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


class Seed(Frozen):
    """A randomised pilot's seed, as the ledger keeps and publishes it: its commitment, and
    the seed sealed under a key of the pilot's own in allocation. Pilots configured before
    seeds were secret chose their own and published it: ``public`` holds it."""

    commitment: str = Field(description='SHA-256 of "ledger-randomisation-seed:" + seed, hex.')
    sealed: str | None = None
    public: str | None = None


class PilotConfigured(DomainEvent):
    """A pilot's configuration, as of a version; requests are judged by the version in force.

    ``period_lengths`` is every ``period_months`` the pilot has had, each with the day it
    applies from (:mod:`shared.contracts.periods`). Version 2 added
    ``config.backdating_days`` (version 1 reads as 31 days); version 3 added
    ``period_lengths`` (version 2 reads as its ``period_months`` since always, as it was);
    version 4 took the seed out of ``config.allocation`` into ``seed``, sealed, with its
    commitment (version 3's own seed reads as public, its blocks as ``fixed_blocks``).
    """

    event_type = "pilot.configured"
    schema_version = 4
    pilot_id: str
    version: int
    config: PilotConfig
    period_lengths: tuple[PeriodLength, ...] = Field(min_length=1)
    seed: Seed | None = Field(
        default=None, description="The seed randomisations use from this version (randomised)."
    )


class RevealedSeed(Frozen):
    """A seed made public once its trial closed, and the commitment it answers."""

    commitment: str
    seed: str


class RandomisationRevealed(DomainEvent):
    """The trial closed: every seed the pilot randomised with is made public, so that anyone
    can check each against its commitment and recompute every assignment."""

    event_type = "pilot.randomisation_revealed"
    pilot_id: str
    seeds: tuple[RevealedSeed, ...]
    revealed_on: date


class FamilyRandomised(DomainEvent):
    """A family's place in its stratum's sequence and the arm it was given, for good. Version
    2 names the seed by its commitment (version 1 named the seed itself, and its block)."""

    event_type = "pilot.family_randomised"
    schema_version = 2
    family_id: str
    stratum: str
    seed_commitment: str
    method: RandomisationMethod
    treatment_ratio: float
    sequence: int = Field(description="0-based position among the stratum's randomised families")
    arm: Arm
    pilot_version: int


DisclosureMethod = Literal["in_person", "phone", "letter", "email", "other"]


class FamilyEnrolled(DomainEvent):
    """A family joined the pilot, in an arm that never changes."""

    event_type = "family.enrolled"
    family_id: str
    team: str
    worker: str
    enrolled_on: date
    stratum: str | None
    arm: Arm
    pilot_version: int


_AS_ALLOCATION_KNEW = (
    "The period's allocation after this event as allocation knew it when deciding: cuts that "
    "approval had accepted but allocation had not yet heard of are not subtracted. Balances "
    "add up amounts and deltas instead; this is for reading."
)


class BudgetAllocated(DomainEvent):
    """Money allocated to a family for one period: the period's allocation grows by
    ``amount_pence``."""

    event_type = "family.budget_allocated"
    allocation_id: UUID
    amount_pence: int
    period_start: date
    period_end: date
    note: str | None
    pilot_version: int
    period_allocated_pence: int = Field(description=_AS_ALLOCATION_KNEW)


class BudgetAdjusted(DomainEvent):
    """A period's allocation raised by ``delta_pence``.

    Ledgers from before cuts were decided by approval also hold negative deltas, decided
    here against a lagging copy of the holds; they read the same way (the allocation grows
    by the delta). Cuts are now :class:`BudgetReductionRequested`.
    """

    event_type = "family.budget_adjusted"
    adjustment_id: UUID
    delta_pence: int
    reason: str
    period_start: date
    period_end: date
    period_allocated_pence: int = Field(description=_AS_ALLOCATION_KNEW)


class BudgetReductionRequested(DomainEvent):
    """An admin asks to cut a period's allocation by ``amount_pence``.

    Nothing moves yet: approval, which guards ``available`` for holds, accepts the cut
    (``decision.budget_reduced``) only if the period's available balance covers it, and
    refuses it otherwise (``decision.budget_reduction_refused``).
    """

    event_type = "family.budget_reduction_requested"
    reduction_id: UUID
    amount_pence: int = Field(gt=0)
    reason: str
    period_start: date
    period_end: date


class FamilyExited(DomainEvent):
    """The family left the pilot; the balance of its current period as it stood."""

    event_type = "family.exited"
    reason: str
    exited_on: date
    period_start: date | None
    period_end: date | None
    allocated_pence: int
    committed_pence: int
    spent_pence: int
    available_pence: int


class BudgetDisclosed(DomainEvent):
    """The family was told how much is available to them (transparency)."""

    event_type = "family.budget_disclosed"
    disclosed_on: date
    amount_disclosed_pence: int | None
    method: DisclosureMethod


class OutcomeRecorded(DomainEvent):
    """An outcome for the family, for evaluation by arm."""

    event_type = "family.outcome_recorded"
    outcome: Outcome
    occurred_on: date


class PersonalDataErased(DomainEvent):
    """The family's sealing keys were deleted: its free text can no longer be read anywhere."""

    event_type = "family.personal_data_erased"
    basis: ErasureBasis
    erased_on: date
    keys_erased: int


def _configured_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "config": {**data["config"], "backdating_days": 31}}


def _configured_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    length = {"since": ALWAYS.isoformat(), "months": data["config"]["period_months"]}
    return {**data, "period_lengths": [length]}


def seed_commitment(seed: str) -> str:
    """The commitment a seed is published as (services/allocation/randomisation.py)."""
    return hashlib.sha256(b"ledger-randomisation-seed:" + seed.encode()).hexdigest()


def _configured_v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    allocation = dict(data["config"].get("allocation") or {"mode": "all"})
    if allocation.get("mode") != "randomised":
        return {**data, "seed": None}
    seed = allocation.pop("seed")
    allocation |= {"method": "fixed_blocks", "strata": []}
    public = {"commitment": seed_commitment(seed), "sealed": None, "public": seed}
    return {**data, "config": {**data["config"], "allocation": allocation}, "seed": public}


def _randomised_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in data.items() if key not in {"seed", "block"}}
    return {**kept, "seed_commitment": seed_commitment(data["seed"]), "method": "fixed_blocks"}


REGISTRY = EventRegistry(
    (
        PilotConfigured,
        FamilyRandomised,
        FamilyEnrolled,
        BudgetAllocated,
        BudgetAdjusted,
        BudgetReductionRequested,
        FamilyExited,
        BudgetDisclosed,
        OutcomeRecorded,
        PersonalDataErased,
        RandomisationRevealed,
    ),
    {
        ("pilot.configured", 1): _configured_v1_to_v2,
        ("pilot.configured", 2): _configured_v2_to_v3,
        ("pilot.configured", 3): _configured_v3_to_v4,
        ("pilot.family_randomised", 1): _randomised_v1_to_v2,
    },
)

CONTRACT = TopicContract(TOPIC, REGISTRY, frozenset({PILOT_STREAM, FAMILY_STREAM, REGISTER_STREAM}))
"""What ``ledger.allocation`` carries: these events, on pilots', families' and registers'
streams."""
