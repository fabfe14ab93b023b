"""Reporting's HTTP queries and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events import Envelope, Frozen

__all__ = ["BalanceQuery", "BalanceView", "HistoryView"]


class BalanceQuery(BaseModel):
    """``as_of``: answer from the facts recorded up to this moment (RFC 3339)."""

    model_config = ConfigDict(extra="forbid")

    as_of: AwareDatetime | None = None


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
