"""Budget periods: a family's periods run from its enrolment date, ``months`` at a time."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from shared.core.events import Frozen

__all__ = ["Period", "add_months", "period_containing"]


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's last day."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


class Period(Frozen):
    """One budget period of a family: ``start`` to ``end`` inclusive."""

    start: date
    end: date


def period_containing(enrolled_on: date, months: int, day: date) -> Period:
    """The family's period that contains ``day`` (the first one for a day before enrolment)."""
    index = 0
    if day >= enrolled_on:
        index = ((day.year - enrolled_on.year) * 12 + day.month - enrolled_on.month) // months
        while add_months(enrolled_on, index * months) > day:
            index -= 1
        while add_months(enrolled_on, (index + 1) * months) <= day:
            index += 1
    return Period(
        start=add_months(enrolled_on, index * months),
        end=add_months(enrolled_on, (index + 1) * months) - timedelta(days=1),
    )
