"""The transactions export: one row per purchase and per refund, for finance and auditors.

Never the free-text purpose. A refund row carries its purchase's method and vendor and a
negative amount. Cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from uuid import UUID

from shared.contracts import decode
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded
from shared.core.events import Envelope
from shared.web.spreadsheets import safe_cell

__all__ = ["COLUMNS", "transactions_csv"]

COLUMNS = (
    "date",
    "recorded_at",
    "kind",
    "family_id",
    "request_id",
    "purchase_id",
    "refund_id",
    "category",
    "method",
    "vendor",
    "receipt_ref",
    "amount_pence",
    "amount_gbp",
)


def _gbp(pence: int) -> str:
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"


def transactions_csv(events: Iterable[Envelope]) -> str:
    """The CSV text for purchase and refund events given in recorded order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    purchases: dict[UUID, PurchaseRecorded] = {}
    for envelope in events:
        match decode(envelope):
            case PurchaseRecorded() as purchase:
                purchases[purchase.purchase_id] = purchase
                row = _purchase_row(envelope, purchase)
            case PurchaseRefunded() as refund:
                row = _refund_row(envelope, refund, purchases.get(refund.purchase_id))
            case _:
                continue
        writer.writerow([safe_cell(value) for value in row])
    return out.getvalue()


def _purchase_row(envelope: Envelope, purchase: PurchaseRecorded) -> tuple[object, ...]:
    return (
        purchase.purchased_on.isoformat(),
        envelope.time.isoformat(),
        "purchase",
        envelope.family_id,
        purchase.request_id,
        purchase.purchase_id,
        "",
        purchase.category,
        purchase.method,
        purchase.vendor,
        purchase.receipt_ref,
        purchase.amount_pence,
        _gbp(purchase.amount_pence),
    )


def _refund_row(
    envelope: Envelope, refund: PurchaseRefunded, bought: PurchaseRecorded | None
) -> tuple[object, ...]:
    amount = -refund.amount_pence
    return (
        envelope.occurred_at.date().isoformat(),
        envelope.time.isoformat(),
        "refund",
        envelope.family_id,
        refund.request_id,
        refund.purchase_id,
        refund.refund_id,
        refund.category,
        bought.method if bought else None,
        bought.vendor if bought else None,
        "",
        amount,
        _gbp(amount),
    )
