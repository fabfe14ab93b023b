"""Budget periods: a family's periods run back to back from its enrolment date.

Each period lasts the pilot's ``period_months`` in force when it starts. A change of
``period_months`` is recorded with the day it applies from (the day after it was made): a
period already begun keeps its length, the family's next period takes the new one, so
periods never overlap and no money is stranded in a period cut short.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from shared.core.events import Frozen

__all__ = ["ALWAYS", "Period", "PeriodLength", "add_months", "lengths_after", "period_containing"]

ALWAYS = date(1, 1, 1)
"""The ``since`` of a pilot's first period length: it applies to every period."""


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's last day."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


class Period(Frozen):
    """One budget period of a family: ``start`` to ``end`` inclusive."""

    start: date
    end: date


class PeriodLength(Frozen):
    """From ``since`` on, each period that starts lasts ``months``."""

    since: date
    months: int


def lengths_after(
    lengths: tuple[PeriodLength, ...], months: int, today: date
) -> tuple[PeriodLength, ...]:
    """The lengths once ``period_months`` is set to ``months`` on ``today``.

    A new length applies from tomorrow: a period that starts today has begun under the old.
    """
    if not lengths:
        return (PeriodLength(since=ALWAYS, months=months),)
    since = today + timedelta(days=1)
    if lengths[-1].since == since:  # a second change the same day replaces the first
        lengths = lengths[:-1]
    if lengths[-1].months == months:
        return lengths
    return (*lengths, PeriodLength(since=since, months=months))


def period_containing(enrolled_on: date, lengths: tuple[PeriodLength, ...], day: date) -> Period:
    """The family's period that contains ``day`` (the first one for a day before enrolment)."""
    elapsed, start = 0, enrolled_on  # months from enrolment to the period's start
    while True:
        months = _months_at(lengths, start)
        following = add_months(enrolled_on, elapsed + months)
        if day < following:
            return Period(start=start, end=following - timedelta(days=1))
        elapsed, start = elapsed + months, following


def _months_at(lengths: tuple[PeriodLength, ...], start: date) -> int:
    """The length of a period that starts on ``start``."""
    months = lengths[0].months
    for length in lengths:
        if length.since > start:
            break
        months = length.months
    return months
