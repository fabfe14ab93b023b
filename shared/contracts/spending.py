"""The contract of ``ledger.spending``: spend requests and the purchases made against them.

Spending publishes these events; approval and reporting rely on exactly these shapes, and
allocation sums the purchases into its balances. Free text (``purpose``, ``reason``, and a
bank statement's descriptions and references) travels sealed. A change to an event's shape
is a new ``schema_version`` with an upcaster.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
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
    "StatementTextErased",
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


_SEALED_STATEMENT_TEXT = (
    "Sealed under the statement's own key (sealed:v1:…), erasable with the statement's text "
    "(statement.text_erased); version 1 kept it in clear."
)


class StatementLineMatched(DomainEvent):
    """A statement line is this purchase: the same amount, within the tolerance of its day.
    Version 2 seals ``reference`` (version 1, in clear, reads as it is)."""

    event_type = "statement.line_matched"
    schema_version = 2
    statement_id: str
    line: int
    reference: str = Field(description=_SEALED_STATEMENT_TEXT)
    booked_on: date
    amount_pence: int
    purchase_id: UUID
    request_id: UUID
    family_id: str


class StatementLineUnmatched(DomainEvent):
    """A statement line no purchase recorded in the ledger accounts for. Version 2 seals
    ``reference`` and ``description`` (version 1, in clear, reads as it is)."""

    event_type = "statement.line_unmatched"
    schema_version = 2
    statement_id: str
    line: int
    reference: str = Field(description=_SEALED_STATEMENT_TEXT)
    booked_on: date
    amount_pence: int = Field(description="Paid out; a credit is negative.")
    description: str = Field(description=_SEALED_STATEMENT_TEXT)


class StatementTextErased(DomainEvent):
    """The statement's own key was deleted: its lines' descriptions and references can no
    longer be read anywhere; amounts, days and matches stay."""

    event_type = "statement.text_erased"
    statement_id: str
    basis: Literal["subject_request", "retention_expired", "court_order", "other"]
    erased_on: date
    keys_erased: int


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


def _unchanged(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 of a statement line kept its text in clear: it reads as it is."""
    return data


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
        StatementTextErased,
        PurchaseWithoutLine,
    ),
    {("statement.line_matched", 1): _unchanged, ("statement.line_unmatched", 1): _unchanged},
)

CONTRACT = TopicContract(TOPIC, REGISTRY, frozenset({REQUEST_STREAM, STATEMENT_STREAM}))
"""What ``ledger.spending`` carries: these events, on requests' and statements' streams."""
