"""Statement reconciliation: a card or bank statement's lines matched to recorded purchases.

A statement is read from CSV (the layout below) or OFX, and decided as one stream,
``statement:<pilot>:<id>``, where the id is the SHA-256 of the file: importing the same file
again finds the stream and records nothing. Each line, in date order, takes the unmatched
purchase of the same amount within ``tolerance_days`` of its day, preferring one whose
receipt reference the line carries, then one whose vendor kind its description names, then
the nearest day; a purchase is matched once, across statements. Then each purchase of the
statement's days that no line took is recorded as without a line. All of it is pure but for
loading the purchases (:mod:`.handlers`).

CSV layout (UTF-8, a header row, comma-separated)::

    date,amount,description,reference
    2026-03-05,12.50,TESCO STORES 2041,TX-001

``date`` is the day the line was booked (YYYY-MM-DD); ``amount`` the sum paid out in pounds
and pence (a credit is negative); ``description`` the statement's text; ``reference`` the
bank's id for the line (optional: the line's number stands in).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Literal
from uuid import UUID

from ofxparse import OfxParser  # type: ignore[import-untyped]

from shared.contracts.spending import (
    REGISTRY,
    STATEMENT_STREAM,
    PurchaseWithoutLine,
    StatementImported,
    StatementLineMatched,
    StatementLineUnmatched,
)
from shared.core.deciders import Decider
from shared.core.errors import UnprocessableError
from shared.core.events import DomainEvent, Frozen

__all__ = [
    "CSV_COLUMNS",
    "DECIDER",
    "Format",
    "ImportStatement",
    "Line",
    "Purchase",
    "StatementState",
    "match",
    "parse",
    "statement_id",
]

Format = Literal["csv", "ofx"]
CSV_COLUMNS = ("date", "amount", "description", "reference")
MAX_LINES = 10_000


@dataclass(frozen=True)
class Line:
    """One line of a statement."""

    number: int
    booked_on: date
    amount_pence: int  # paid out; a credit is negative
    description: str
    reference: str


@dataclass(frozen=True)
class Purchase:
    """A purchase recorded in the ledger, as matching needs it."""

    purchase_id: UUID
    request_id: UUID
    family_id: str
    amount_pence: int
    purchased_on: date
    vendor: str | None
    receipt_ref: str | None = None


def statement_id(raw: bytes) -> str:
    """A statement's id: the SHA-256 of its file."""
    return hashlib.sha256(raw).hexdigest()


def _refuse(detail: str) -> UnprocessableError:
    return UnprocessableError(detail, code="unreadable_statement")


_MOST_PENCE = 10**12  # ten billion pounds: more is not a line of a family's budget


def _pence(text: str, where: str) -> int:
    try:
        amount = Decimal(text.strip().replace(",", "").replace("£", ""))
    except InvalidOperation as error:
        raise _refuse(f"{where}: amount {text!r} is not a sum of money") from error
    if not amount.is_finite() or abs(amount) * 100 > _MOST_PENCE:
        raise _refuse(f"{where}: amount {text!r} is not a sum of money")
    pence = amount * 100
    if pence != pence.to_integral_value():
        raise _refuse(f"{where}: amount {text!r} has more than pence")
    return int(pence)


def _clean(text: str | None, most: int) -> str:
    """Statement text as the ledger keeps it: no control characters (PostgreSQL refuses NUL)."""
    return "".join(c for c in (text or "") if c.isprintable() or c == " ").strip()[:most]


def parse(raw: bytes, kind: Format) -> list[Line]:
    """A statement's lines; 422 ``unreadable_statement`` naming the first thing wrong."""
    lines = _parse_ofx(raw) if kind == "ofx" else _parse_csv(raw)
    if not lines:
        raise _refuse("the statement has no lines")
    if len(lines) > MAX_LINES:
        raise _refuse(f"the statement has more than {MAX_LINES} lines")
    return lines


def _parse_csv(raw: bytes) -> list[Line]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _refuse("the CSV is not UTF-8") from error
    try:
        return _csv_lines(text)
    except csv.Error as error:
        raise _refuse(f"the CSV cannot be read: {error}") from error


def _csv_lines(text: str) -> list[Line]:
    reader = csv.DictReader(io.StringIO(text))
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    if not {"date", "amount", "description"} <= set(header):
        raise _refuse(f"the CSV's header must name {', '.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    lines = []
    for number, row in enumerate(reader, start=1):
        if number > MAX_LINES:
            raise _refuse(f"the statement has more than {MAX_LINES} lines")
        where = f"line {number}"
        try:
            booked_on = date.fromisoformat((row.get("date") or "").strip())
        except ValueError as error:
            raise _refuse(f"{where}: date {row.get('date')!r} is not YYYY-MM-DD") from error
        lines.append(
            Line(
                number,
                booked_on,
                _pence(str(row.get("amount") or ""), where),
                _clean(str(row.get("description") or ""), 500),
                _clean(str(row.get("reference") or ""), 200) or f"line {number}",
            )
        )
    return lines


def _parse_ofx(raw: bytes) -> list[Line]:
    try:
        with warnings.catch_warnings():  # the parser calls BeautifulSoup's deprecated names
            warnings.simplefilter("ignore", DeprecationWarning)
            ofx = OfxParser.parse(io.BytesIO(raw))
        transactions = [t for account in ofx.accounts for t in account.statement.transactions]
    except Exception as error:
        raise _refuse(f"the OFX cannot be read: {type(error).__name__}") from error
    return [
        Line(
            number,
            transaction.date.date(),
            -_pence(str(transaction.amount), f"transaction {number}"),  # OFX: debits < 0
            _clean(" ".join(filter(None, (transaction.payee, transaction.memo))), 500),
            _clean(transaction.id, 200) or f"transaction {number}",
        )
        for number, transaction in enumerate(transactions, start=1)
    ]


def _words(text: str | None) -> set[str]:
    return {word for word in re.split(r"[^a-z0-9]+", (text or "").lower()) if len(word) >= 3}


def _names_receipt(receipt_ref: str | None, line: Line) -> bool:
    """The line is this purchase's receipt: its reference, or named in its description."""
    if not receipt_ref:
        return False
    return receipt_ref == line.reference or receipt_ref.lower() in line.description.lower()


def match(
    lines: Sequence[Line], purchases: Sequence[Purchase], tolerance_days: int
) -> tuple[list[tuple[Line, Purchase]], list[Line], list[Purchase]]:
    """Lines matched to purchases, lines without one, and the purchases of the statement's
    days that no line took (``purchases``: those not matched by an earlier statement)."""
    taken: set[UUID] = set()
    matched: list[tuple[Line, Purchase]] = []
    unmatched: list[Line] = []
    for line in sorted(lines, key=lambda line: (line.booked_on, line.number)):
        said = _words(line.description)
        candidates = [
            p
            for p in purchases
            if p.purchase_id not in taken
            and p.amount_pence == line.amount_pence
            and abs((p.purchased_on - line.booked_on).days) <= tolerance_days
        ]
        if not candidates:
            unmatched.append(line)
            continue
        best = min(
            candidates,
            key=lambda p: (
                not _names_receipt(p.receipt_ref, line),
                not (_words(p.vendor) & said),
                abs((p.purchased_on - line.booked_on).days),
                p.purchased_on,
                str(p.purchase_id),
            ),
        )
        taken.add(best.purchase_id)
        matched.append((line, best))
    first = min(line.booked_on for line in lines)
    last = max(line.booked_on for line in lines)
    without = [
        p for p in purchases if p.purchase_id not in taken and first <= p.purchased_on <= last
    ]
    return matched, unmatched, sorted(without, key=lambda p: (p.purchased_on, str(p.purchase_id)))


class StatementState(Frozen):
    """Whether the statement was imported (its stream has events)."""

    imported: bool = False


class ImportStatement(Frozen):
    """Record a statement's reconciliation, decided from its lines and the purchases."""

    statement_id: str
    format: Format
    lines: tuple[Line, ...]
    purchases: tuple[Purchase, ...]
    tolerance_days: int


def _decide(state: StatementState, command: ImportStatement) -> list[DomainEvent]:
    if state.imported:
        return []  # the same file again: nothing more to record
    matched, unmatched, without = match(command.lines, command.purchases, command.tolerance_days)
    statement = command.statement_id
    events: list[DomainEvent] = [
        StatementImported(
            statement_id=statement,
            format=command.format,
            lines=len(command.lines),
            first_day=min(line.booked_on for line in command.lines),
            last_day=max(line.booked_on for line in command.lines),
            tolerance_days=command.tolerance_days,
        )
    ]
    events += [
        StatementLineMatched(
            statement_id=statement,
            line=line.number,
            reference=line.reference,
            booked_on=line.booked_on,
            amount_pence=line.amount_pence,
            purchase_id=purchase.purchase_id,
            request_id=purchase.request_id,
            family_id=purchase.family_id,
        )
        for line, purchase in matched
    ]
    events += [
        StatementLineUnmatched(
            statement_id=statement,
            line=line.number,
            reference=line.reference,
            booked_on=line.booked_on,
            amount_pence=line.amount_pence,
            description=line.description,
        )
        for line in unmatched
    ]
    events += [
        PurchaseWithoutLine(
            statement_id=statement,
            purchase_id=purchase.purchase_id,
            request_id=purchase.request_id,
            family_id=purchase.family_id,
            purchased_on=purchase.purchased_on,
            amount_pence=purchase.amount_pence,
            vendor=purchase.vendor,
        )
        for purchase in without
    ]
    return events


def _evolve(state: StatementState, event: DomainEvent) -> StatementState:
    return StatementState(imported=True) if isinstance(event, StatementImported) else state


DECIDER: Decider[StatementState, ImportStatement] = Decider(
    category=STATEMENT_STREAM,
    initial_state=StatementState,
    evolve=_evolve,
    decide=_decide,
    registry=REGISTRY,
)
