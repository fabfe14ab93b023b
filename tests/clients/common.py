"""What both generated clients' flows share: where the services are, the callers' tokens,
the bodies they send, and waiting for what a later service records."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

URLS: dict[str, str] = json.loads(os.environ["LEDGER_CLIENT_URLS"])
TOKENS: dict[str, str] = json.loads(os.environ["LEDGER_CLIENT_TOKENS"])
PILOT = "gen"
FAMILY = "fam-gen"
PILOT_CONFIG: dict[str, Any] = {
    "name": "Generated",
    "period_months": 12,
    "family_cap_pence": 400_000,
    "approval_tiers": [{"up_to_pence": 50_000, "approver": "auto"}],
    "categories": ["practical", "therapeutic"],
    "forecast_spend_per_family_pence": 400_000,
    "backdating_days": 366,
}
ENROLMENT = {"family_id": FAMILY, "team": "t-1", "worker": "sw-1", "enrolled_on": "2026-01-05"}
ALLOCATION = {"amount_pence": 200_000}
SPEND = {
    "family_id": FAMILY,
    "amount_pence": 60_000,  # above the auto tier: a manager decides
    "category": "practical",
    "purpose": "a bed and bedding",
    "requested_by": "sw-1",
    "family_involved": True,
}
PURCHASE = {"amount_pence": 58_500, "purchased_on": "2026-04-02", "method": "card"}
# The card statement line of that purchase.
STATEMENT = "date,amount,description,reference\n2026-04-02,585.00,BEDS DIRECT,TX-1\n"


def until(found: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    """``found()`` once it is not None (another service records it a moment later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not in time: {what}")


def settled(spent_pence: int, committed_pence: int) -> bool:
    """Reporting has the purchase and the close (nothing left committed)."""
    return spent_pence == PURCHASE["amount_pence"] and committed_pence == 0


def report(summary: dict[str, Any]) -> None:
    """The flow's outcome, for the test to check: one JSON line on stdout."""
    print(json.dumps(summary, default=str))  # noqa: T201 - the test reads it
