"""The contract of ``ledger.spending``: spend requests and the purchases made against them.

Spending publishes these events; approval and reporting rely on exactly these shapes, and
allocation sums the purchases into its balances. Free text (``purpose``, ``reason``) travels
sealed. A change to an event's shape is a new ``schema_version`` with an upcaster.
"""

from __future__ import annotations

from datetime import date
from typing import Literal
from uuid import UUID

from pydantic import Field

from shared.core.events import DomainEvent, EventRegistry
from shared.core.topics import TopicContract

__all__ = [
    "CONTRACT",
    "REGISTRY",
    "REQUEST_STREAM",
    "STATEMENT_STREAM",
    "TOPIC",
    "PurchaseMethod",
    "PurchaseRecorded",
    "PurchaseRefunded",
    "PurchaseWithoutLine",
    "RequestClosed",
    "SpendRequested",
    "SpendWithdrawn",
    "StatementImported",
    "StatementLineMatched",
    "StatementLineUnmatched",
]

TOPIC = "ledger.spending"
REQUEST_STREAM = "request"
"""The category of spend requests' streams, ``request:<pilot_id>:<request_id>``."""
STATEMENT_STREAM = "statement"
"""The category of imported statements' streams, ``statement:<pilot_id>:<statement_id>``."""

PurchaseMethod = Literal["card", "cash", "invoice", "voucher", "transfer"]


class SpendRequested(DomainEvent):
    """A request to spend, stamped with what the ledger knew when it was made."""

    event_type = "spend_request.requested"
    request_id: UUID
    family_id: str
    team: str
    amount_pence: int
    category: str
    purpose: str
    requested_by: str
    family_involved: bool
    needed_by: date | None
    pilot_version: int = Field(description="The pilot configuration in force: it judges this.")
    allocation_version: int = Field(
        description="The family's allocation stream version this request was made after; "
        "approval decides only once it has seen at least this much."
    )
    period_start: date
    period_end: date


class SpendWithdrawn(DomainEvent):
    """The request was withdrawn before any purchase."""

    event_type = "spend_request.withdrawn"
    request_id: UUID
    reason: str


class PurchaseRecorded(DomainEvent):
    """Money spent against an approved request."""

    event_type = "purchase.recorded"
    purchase_id: UUID
    request_id: UUID
    amount_pence: int
    purchased_on: date
    method: PurchaseMethod
    vendor: str | None
    receipt_ref: str | None
    category: str
    period_start: date
    period_end: date


class PurchaseRefunded(DomainEvent):
    """Money returned from a purchase."""

    event_type = "purchase.refunded"
    refund_id: UUID
    purchase_id: UUID
    request_id: UUID
    amount_pence: int
    reason: str
    category: str
    period_start: date
    period_end: date


class RequestClosed(DomainEvent):
    """No more purchases; what was approved and not bought is released."""

    event_type = "spend_request.closed"
    request_id: UUID
    purchased_pence: int


class StatementImported(DomainEvent):
    """Finance imported a card or bank statement of the pilot; its lines follow, each matched
    to a purchase or not, then the purchases of its days that no line matched."""

    event_type = "statement.imported"
    statement_id: str = Field(description="SHA-256 of the file, hex: the same file, the same id.")
    format: Literal["csv", "ofx"]
    lines: int
    first_day: date | None
    last_day: date | None
    tolerance_days: int


class StatementLineMatched(DomainEvent):
    """A statement line is this purchase: the same amount, within the tolerance of its day."""

    event_type = "statement.line_matched"
    statement_id: str
    line: int
    reference: str
    booked_on: date
    amount_pence: int
    purchase_id: UUID
    request_id: UUID
    family_id: str


class StatementLineUnmatched(DomainEvent):
    """A statement line no purchase recorded in the ledger accounts for."""

    event_type = "statement.line_unmatched"
    statement_id: str
    line: int
    reference: str
    booked_on: date
    amount_pence: int = Field(description="Paid out; a credit is negative.")
    description: str


class PurchaseWithoutLine(DomainEvent):
    """A purchase of the statement's days that no line of it (nor of an earlier one) matched."""

    event_type = "statement.purchase_unmatched"
    statement_id: str
    purchase_id: UUID
    request_id: UUID
    family_id: str
    purchased_on: date
    amount_pence: int
    vendor: str | None


REGISTRY = EventRegistry(
    (
        SpendRequested,
        SpendWithdrawn,
        PurchaseRecorded,
        PurchaseRefunded,
        RequestClosed,
        StatementImported,
        StatementLineMatched,
        StatementLineUnmatched,
        PurchaseWithoutLine,
    )
)

CONTRACT = TopicContract(TOPIC, REGISTRY, frozenset({REQUEST_STREAM, STATEMENT_STREAM}))
"""What ``ledger.spending`` carries: these events, on requests' and statements' streams."""
