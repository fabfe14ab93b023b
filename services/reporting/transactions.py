"""The transactions export: one row per purchase and per refund, for finance and auditors.

Never the free-text purpose. A refund row carries its purchase's method and vendor and a
negative amount. Cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

from shared.events import Envelope

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
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _gbp(pence: int) -> str:
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A vendor named "=HYPERLINK(…)" must stay text when finance opens the file; a negative
    # amount is a number and stays one.
    if text.startswith(_FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def transactions_csv(events: Iterable[Envelope]) -> str:
    """The CSV text for purchase and refund events given in recorded order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    purchases: dict[str, dict[str, Any]] = {}
    for envelope in events:
        data = envelope.data
        if envelope.type == "purchase.recorded":
            purchases[data["purchase_id"]] = data
            row = (
                data["purchased_on"],
                envelope.time.isoformat(),
                "purchase",
                envelope.family_id,
                data["request_id"],
                data["purchase_id"],
                "",
                data["category"],
                data["method"],
                data["vendor"],
                data["receipt_ref"],
                data["amount_pence"],
                _gbp(data["amount_pence"]),
            )
        elif envelope.type == "purchase.refunded":
            bought = purchases.get(data["purchase_id"], {})
            amount = -int(data["amount_pence"])
            row = (
                envelope.occurred_at.date().isoformat(),
                envelope.time.isoformat(),
                "refund",
                envelope.family_id,
                data["request_id"],
                data["purchase_id"],
                data["refund_id"],
                data["category"],
                bought.get("method"),
                bought.get("vendor"),
                "",
                amount,
                _gbp(amount),
            )
        else:
            continue
        writer.writerow([_cell(value) for value in row])
    return out.getvalue()
