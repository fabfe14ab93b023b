"""Allocation's HTTP bodies and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from shared.contracts.allocation import (
    ApprovalTier,
    Arm,
    Category,
    DisclosureMethod,
    ErasureBasis,
    Outcome,
    PilotConfig,
    Randomised,
    RevealedSeed,
)
from shared.core.events import Frozen
from shared.core.types import CommandBody, Identifier, IsoDate, Pence, SignedPence, Text

__all__ = [
    "AdjustmentBody",
    "AdjustmentResult",
    "AdjustmentStatus",
    "AdjustmentView",
    "AllocationBody",
    "AllocationResult",
    "DisclosureBody",
    "EnrolmentBody",
    "EnrolmentResult",
    "ErasureBody",
    "ErasureResult",
    "ExitBody",
    "ExitResult",
    "FamilyView",
    "NoteView",
    "NotesView",
    "OutcomeBody",
    "PeriodView",
    "PilotConfigBody",
    "PilotView",
    "Recorded",
    "RevealBody",
]


class PilotConfigBody(PilotConfig):
    """A pilot's configuration as an admin sends it: the contract's, with bounded lists.

    The bounds are the API's, not the contract's: events recorded before them still read.
    """

    approval_tiers: tuple[ApprovalTier, ...] = Field(
        default=(),
        max_length=20,
        description="Ascending; a request of amount A goes to the first tier with A <= "
        "up_to_pence, above the last tier to a manager; empty: a manager decides every request.",
    )
    categories: tuple[Category, ...] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _no_fixed_blocks(self) -> PilotConfigBody:
        if isinstance(self.allocation, Randomised) and self.allocation.method == "fixed_blocks":
            raise ValueError(
                "fixed_blocks is kept for pilots randomised before 2026-12-02: choose simple "
                "or permuted_blocks"
            )
        return self

    def config(self) -> PilotConfig:
        """The configuration to record."""
        return PilotConfig.model_validate(self.model_dump())


class EnrolmentBody(CommandBody):
    """Enrol a family (its case-system reference, never a name)."""

    family_id: Identifier
    team: Identifier
    worker: Identifier
    enrolled_on: IsoDate
    stratum: Identifier | None = Field(
        default=None,
        description="In a randomised pilot that lists strata, one of them (the pilot's "
        "configuration names them, such as age cohorts 0-4, 5-9, 10-16); otherwise none.",
    )


class AllocationBody(CommandBody):
    """Allocate money for a period: the current period unless ``period_start`` names one."""

    amount_pence: Pence
    period_start: IsoDate | None = None
    period_end: IsoDate | None = None
    note: Text | None = None


class AdjustmentBody(CommandBody):
    """Raise or lower a period's allocation."""

    delta_pence: SignedPence = Field(description="Positive raises, negative lowers; never 0.")
    reason: Text
    period_start: IsoDate | None = None

    @field_validator("delta_pence")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("delta_pence must not be 0")
        return value


class ExitBody(CommandBody):
    """The family leaves the pilot."""

    reason: Text
    exited_on: IsoDate


class DisclosureBody(CommandBody):
    """The family was told what their budget is."""

    disclosed_on: IsoDate
    amount_disclosed_pence: Pence | None = None
    method: DisclosureMethod


class OutcomeBody(CommandBody):
    """What happened to the family."""

    outcome: Outcome
    occurred_on: IsoDate


class ErasureBody(CommandBody):
    """Make the family's free text unreadable everywhere; amounts and history stay."""

    basis: ErasureBasis
    erased_on: IsoDate


class PilotView(Frozen):
    """A pilot's configuration in force, and of its randomisation what may be known: the
    commitment to its secret seed, and the seeds revealed when a trial closed."""

    pilot_id: str
    version: int
    config: PilotConfig
    seed_commitment: str | None = Field(
        default=None,
        description="A randomised pilot's commitment to its seed: SHA-256 of "
        '"ledger-randomisation-seed:" + seed, hex. The seed stays secret until revealed.',
    )
    revealed_seeds: tuple[RevealedSeed, ...] = Field(
        default=(), description="Every seed revealed when a trial closed, with its commitment."
    )
    stream_version: int


class RevealBody(CommandBody):
    """Close a trial's randomisation: its seeds are made public."""

    revealed_on: IsoDate


class EnrolmentResult(Frozen):
    """The enrolled family's arm."""

    family_id: str
    arm: Arm
    stream_version: int


class Recorded(Frozen):
    """A fact recorded about a family."""

    family_id: str
    event_id: UUID
    stream_version: int


class AllocationResult(Recorded):
    """An allocation and the period it went to."""

    allocation_id: UUID
    amount_pence: int
    period_start: date
    period_end: date
    period_allocated_pence: int


AdjustmentStatus = Literal["applied", "pending", "accepted", "refused"]


class AdjustmentResult(Recorded):
    """An adjustment as recorded: a top-up applied (201), or a cut pending approval (202)."""

    adjustment_id: UUID
    delta_pence: int
    period_start: date
    period_end: date
    status: AdjustmentStatus = Field(
        description="applied: a top-up, in force now. pending: a cut, which approval accepts "
        "only if the period's available balance covers it; follow it at "
        "GET .../adjustments/{adjustment_id}."
    )
    period_allocated_pence: int | None = Field(
        description="The period's allocation after a top-up; null while a cut is pending."
    )


class AdjustmentView(Frozen):
    """Where an adjustment stands."""

    adjustment_id: UUID
    family_id: str
    delta_pence: int
    period_start: date
    period_end: date
    status: AdjustmentStatus = Field(
        description="applied (a top-up), pending (a cut awaiting approval), accepted (the cut "
        "is in force) or refused (what is held and spent leaves less available than the cut)."
    )
    available_pence: int | None = Field(
        description="The period's available balance after approval's decision on a cut."
    )
    recorded_at: datetime
    decided_at: datetime | None


class ExitResult(Recorded):
    """The exit and the balance of the period at exit."""

    exited_on: date
    allocated_pence: int
    committed_pence: int
    spent_pence: int
    available_pence: int


class ErasureResult(Recorded):
    """How many sealing keys were deleted."""

    keys_erased: int


class NoteView(Frozen):
    """One piece of the family's free text, opened; ``[erased]`` after an erasure."""

    event_id: UUID
    type: str
    field: str
    text: str


class NotesView(Frozen):
    """The family's free text, in the order it was recorded."""

    family_id: str
    notes: tuple[NoteView, ...]


class PeriodView(Frozen):
    """One budget period's allocation."""

    period_start: date
    period_end: date
    allocated_pence: int


class OutcomeView(Frozen):
    """An outcome recorded for the family."""

    outcome: Outcome
    occurred_on: date


class FamilyView(Frozen):
    """A family as allocation knows it."""

    pilot_id: str
    family_id: str
    team: str
    worker: str
    stratum: str | None
    arm: Arm
    enrolled_on: date
    status: str = Field(description="active or exited")
    exited_on: date | None
    periods: tuple[PeriodView, ...]
    disclosures: int
    outcomes: tuple[OutcomeView, ...]
    stream_version: int
