"""Value types shared by every service's commands, events and HTTP bodies."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from shared.core.events import Frozen

__all__ = [
    "FREE_TEXT",
    "MAX_PENCE",
    "CommandBody",
    "Identifier",
    "IsoDate",
    "Moment",
    "Pence",
    "SignedPence",
    "Text",
    "free_text_fields",
]

# £1bn: far above any family budget, far below bigint; a bound that catches unit mistakes.
MAX_PENCE = 100_000_000_000

Pence = Annotated[int, Field(strict=True, gt=0, le=MAX_PENCE)]
"""A positive amount of money in pence. Strict: floats, strings and booleans are refused."""

SignedPence = Annotated[int, Field(strict=True, ge=-MAX_PENCE, le=MAX_PENCE)]
"""An amount in pence that may be negative (adjustments)."""

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
"""A pilot, family, team or worker reference as API.md defines it."""

FREE_TEXT = "ledger:free-text"
"""The mark of a field that holds what someone wrote about a family: kept only sealed, and
left out of an idempotency key's fingerprint (:func:`free_text_fields`)."""

Text = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True), FREE_TEXT
]
"""Free text (reasons, notes, purposes): bounded, never empty, sealed wherever it is kept."""


def free_text_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of a body model that are free text (:data:`Text`, optional or not)."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if FREE_TEXT in field.metadata or _marks_free_text(field.annotation)
    )


def _marks_free_text(annotation: object) -> bool:
    if FREE_TEXT in getattr(annotation, "__metadata__", ()):
        return True
    return any(_marks_free_text(inner) for inner in get_args(annotation))


EARLIEST_DATE, LATEST_DATE = date(2000, 1, 1), date(2099, 12, 31)
IsoDate = Annotated[date, Field(strict=True, ge=EARLIEST_DATE, le=LATEST_DATE)]
"""A business date, ``YYYY-MM-DD`` only (bodies are validated as JSON), in 2000 to 2099: no
family was helped in year 1, and none will be in 9435."""


def _utc_in_range(moment: datetime) -> datetime:
    try:
        moment = moment.astimezone(UTC)
    except OverflowError as error:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError("the time is outside 2000 to 2099") from error
    if not EARLIEST_DATE <= moment.date() <= LATEST_DATE:
        raise ValueError("the time is outside 2000 to 2099")
    return moment


Moment = Annotated[AwareDatetime, AfterValidator(_utc_in_range)]
"""A business time: RFC 3339 with its offset, converted to UTC, in 2000 to 2099."""


class CommandBody(Frozen):
    """Base of request bodies: every command may say when it happened."""

    occurred_at: Moment | None = Field(
        default=None,
        description="When it happened, as the case system says (RFC 3339, kept in UTC); "
        "default: now. Business time for reporting only: eligibility is judged when the "
        "ledger records the command. 422 occurred_at_in_future beyond 5 minutes ahead, "
        "occurred_at_too_old beyond the pilot's backdating_days (31 unless configured), "
        "occurred_at_before_enrolment before the family's enrolment.",
    )
