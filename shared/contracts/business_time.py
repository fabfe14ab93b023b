"""Business time: when a caller says something happened, bounded by when the ledger records it.

Eligibility (enrolled, not exited, which period, which policy version) is judged at the time
the ledger records a command, never at the ``occurred_at`` a caller sends: a backdated
request cannot reopen what is closed. ``occurred_at`` is the business time reporting shows,
and a caller may set it only within bounds:

- not after the ledger's clock by more than :data:`CLOCK_SKEW` (clocks differ a little);
- not further back than the pilot's ``backdating_days`` (31 unless configured);
- not before the family's enrolment.

It is always in UTC before a date is taken from it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

from shared.core.errors import UnprocessableError
from shared.core.problems import ProblemCode

__all__ = ["CLOCK_SKEW", "DEFAULT_BACKDATING_DAYS", "check_business_day", "check_occurred_at"]

CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_BACKDATING_DAYS = 31


def check_occurred_at(
    occurred_at: datetime | None,
    recorded_at: datetime,
    *,
    backdating_days: int | None,
    enrolled_on: date | None,
) -> None:
    """Refuse an ``occurred_at`` outside its bounds (``None`` for a bound not known here)."""
    if occurred_at is None:
        return
    moment = occurred_at.astimezone(UTC)
    if moment > recorded_at + CLOCK_SKEW:
        raise UnprocessableError(
            f"occurred_at {moment.isoformat()} is in the future", code="occurred_at_in_future"
        )
    if backdating_days is not None and moment < recorded_at - timedelta(days=backdating_days):
        raise UnprocessableError(
            f"occurred_at may be at most {backdating_days} days before now in this pilot",
            code="occurred_at_too_old",
        )
    if enrolled_on is not None and moment.date() < enrolled_on:
        raise UnprocessableError(
            f"occurred_at is before the family's enrolment on {enrolled_on}",
            code="occurred_at_before_enrolment",
        )


# The codes a business date refuses with: in the future, too old, before the enrolment.
_DAY_CODES: dict[str, tuple[ProblemCode, ProblemCode, ProblemCode]] = {
    "purchased_on": (
        "purchased_on_in_future",
        "purchased_on_too_old",
        "purchased_on_before_enrolment",
    )
}


def check_business_day(
    name: Literal["purchased_on"],
    day: date,
    recorded_at: datetime,
    *,
    backdating_days: int | None,
    enrolled_on: date | None,
) -> None:
    """Refuse a business date a caller gives (a purchase's ``purchased_on``) outside the
    bounds of ``occurred_at``: not after the ledger's day by more than one (a day east of UTC
    is already tomorrow), not further back than ``backdating_days``, not before the family's
    enrolment. 422 ``<name>_in_future``, ``<name>_too_old``, ``<name>_before_enrolment``."""
    today = recorded_at.astimezone(UTC).date()
    if day > today + timedelta(days=1):
        raise UnprocessableError(f"{name} {day} is in the future", code=_DAY_CODES[name][0])
    if backdating_days is not None and day < today - timedelta(days=backdating_days):
        raise UnprocessableError(
            f"{name} may be at most {backdating_days} days before today in this pilot",
            code=_DAY_CODES[name][1],
        )
    if enrolled_on is not None and day < enrolled_on:
        raise UnprocessableError(
            f"{name} {day} is before the family's enrolment on {enrolled_on}",
            code=_DAY_CODES[name][2],
        )
