"""Spending's HTTP bodies and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.spending.requests import Status
from shared.contracts.allocation import ErasureBasis
from shared.contracts.spending import PurchaseMethod
from shared.core.events import Frozen
from shared.core.types import CommandBody, Identifier, IsoDate, Pence, Text

__all__ = [
    "CloseBody",
    "PurchaseBody",
    "PurchaseLine",
    "PurchaseResult",
    "PurposeView",
    "PurposesView",
    "RefundBody",
    "RefundResult",
    "RequestAccepted",
    "RequestView",
    "SpendRequestBody",
    "WithdrawBody",
]

VendorKind = Literal[
    "supermarket",
    "clothing",
    "furniture",
    "household",
    "food_and_drink",
    "leisure",
    "transport",
    "education",
    "childcare",
    "health_and_therapy",
    "housing",
    "utilities",
    "online_retailer",
    "other",
]
"""What kind of business was paid: a closed vocabulary, so no one's name or story is written
into the ledger's permanent, unerasable record (free text is sealed; these are not)."""

ReceiptRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")]
"""A receipt's or invoice's number, which finance matches to the receipt it keeps: letters,
digits and ``. _ / -``, up to 64 characters -- a reference, never a sentence."""


class SpendRequestBody(CommandBody):
    """Ask to spend with a family. ``purpose`` is sealed: erasable, never logged or exported."""

    family_id: Identifier
    amount_pence: Pence
    category: Identifier = Field(description="One of the pilot's categories.")
    purpose: Text
    requested_by: Identifier = Field(description="The worker making the request.")
    family_involved: bool = Field(strict=True, description="Was the family part of the decision?")
    needed_by: IsoDate | None = None
    allocation_version: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="The family's stream_version from your last allocation response: the "
        "request waits (briefly) until spending has seen it, and approval decides only once "
        "it has too, so a fresh allocation is never missed.",
    )


class WithdrawBody(CommandBody):
    """Withdraw a request before anything is bought."""

    reason: Text


class PurchaseBody(CommandBody):
    """Record money spent against an approved request."""

    amount_pence: Pence
    purchased_on: IsoDate
    method: PurchaseMethod
    vendor: VendorKind | None = Field(
        default=None, description="The kind of business paid (a closed list, never a name)."
    )
    receipt_ref: ReceiptRef | None = Field(
        default=None,
        description="The receipt's or invoice's number: 1-64 of letters, digits and . _ / - "
        "(a reference finance matches, never free text).",
    )


class RefundBody(CommandBody):
    """Record money returned from a purchase."""

    amount_pence: Pence
    reason: Text


class CloseBody(CommandBody):
    """Close a request: release what was approved and not spent."""


class RequestAccepted(Frozen):
    """A request recorded; approval decides next."""

    request_id: UUID
    status: Status
    stream_version: int


class RequestView(Frozen):
    """A spend request and its money."""

    request_id: UUID
    pilot_id: str
    family_id: str
    team: str
    status: Status
    amount_pence: int
    category: str
    requested_by: str
    family_involved: bool
    needed_by: date | None
    approved_pence: int
    spent_pence: int = Field(description="Purchases minus refunds.")
    released_pence: int = Field(description="Approved but released by a close or withdrawal.")
    purchases: tuple[PurchaseLine, ...]
    period_start: date
    period_end: date
    stream_version: int


class PurposeView(Frozen):
    """What one spend request was for, opened; ``[erased]`` after the family's erasure."""

    request_id: UUID
    category: str
    requested_at: datetime = Field(description="When the request was recorded.")
    purpose: str


class PurposesView(Frozen):
    """The purposes of the family's spend requests, in the order they were recorded."""

    family_id: str
    purposes: tuple[PurposeView, ...]


class PurchaseLine(Frozen):
    """A purchase as part of its request."""

    purchase_id: UUID
    amount_pence: int
    refunded_pence: int


class PurchaseResult(Frozen):
    """A purchase recorded against a request."""

    purchase_id: UUID
    request_id: UUID
    amount_pence: int
    stream_version: int


class RefundResult(Frozen):
    """A refund recorded against a purchase."""

    refund_id: UUID
    purchase_id: UUID
    request_id: UUID
    amount_pence: int
    stream_version: int


RequestView.model_rebuild()


class StatementQuery(BaseModel):
    """How far apart a line's day and a purchase's day may be and still match."""

    model_config = ConfigDict(extra="forbid")

    tolerance_days: int = Field(default=3, ge=0, le=14)


class StatementReport(Frozen):
    """A statement's reconciliation, as recorded (importing the same file again answers it)."""

    statement_id: str = Field(description="SHA-256 of the file, hex.")
    format: Literal["csv", "ofx"]
    lines: int
    matched: int = Field(description="Lines matched to a purchase.")
    unmatched_lines: int = Field(description="Lines no recorded purchase accounts for.")
    purchases_without_line: int = Field(
        description="Purchases of the statement's days that no line matched."
    )
    replayed: bool = Field(description="True when this file was imported before.")


class StatementErasureBody(CommandBody):
    """Make a statement's text (its lines' descriptions and references) unreadable
    everywhere; its amounts, days and matches stay."""

    basis: ErasureBasis
    erased_on: IsoDate


class StatementErasureResult(Frozen):
    """The statement's text erased."""

    statement_id: str
    keys_erased: int = Field(description="Keys deleted (0 when erased before).")
    stream_version: int
