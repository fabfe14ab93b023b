"""Reporting's HTTP queries and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from services.reporting.uptake import Figures
from shared.core.events import Envelope, Frozen
from shared.core.types import Moment

__all__ = ["BalanceQuery", "BalanceView", "HistoryView", "UptakeQuery", "UptakeView"]


class BalanceQuery(BaseModel):
    """``as_of``: answer from the facts recorded up to this moment (RFC 3339)."""

    model_config = ConfigDict(extra="forbid")

    as_of: Moment | None = None


class BalanceView(Frozen):
    """A family's money in the period containing now (or ``as_of``)."""

    pilot_id: str
    family_id: str
    period_start: date
    period_end: date
    allocated_pence: int = Field(description="Allocations and adjustments for the period.")
    committed_pence: int = Field(description="Approved holds not yet spent or released.")
    spent_pence: int = Field(description="Purchases minus refunds.")
    available_pence: int = Field(description="allocated - committed - spent.")
    as_of: datetime


class HistoryView(Frozen):
    """Every event of the family from every service, in the order it was recorded."""

    pilot_id: str
    family_id: str
    events: tuple[Envelope, ...]


class UptakeQuery(BaseModel):
    """``suppress_small_cells``: counts of 1 to 4 families as "<5", and what rests on them
    hidden, as publication needs (:func:`services.reporting.uptake.suppress`)."""

    model_config = ConfigDict(extra="forbid")

    suppress_small_cells: bool = False


class UptakeView(Frozen):
    """A pilot's uptake and evaluation figures, overall and per arm where it randomises."""

    pilot_id: str
    as_of: datetime
    all: Figures
    arms: dict[str, Figures] = Field(description="Per arm (treatment, control) when randomised.")
