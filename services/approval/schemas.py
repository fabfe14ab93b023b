"""Approval's HTTP bodies and responses (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.core.events import Frozen
from shared.core.types import CommandBody, Text

__all__ = [
    "DecisionBody",
    "DecisionResult",
    "PendingList",
    "PendingQuery",
    "PendingRequest",
    "RejectionBody",
]


class DecisionBody(CommandBody):
    """A manager's decision. ``note`` (approve) or ``reason`` (reject) is sealed free text."""

    note: Text | None = None


class RejectionBody(CommandBody):
    """A manager's rejection, with a reason (sealed free text)."""

    reason: Text


class DecisionResult(Frozen):
    """The decision and the family's available balance after it."""

    request_id: UUID
    status: Literal["approved", "rejected"]
    approved_pence: int
    available_pence: int
    stream_version: int


class PendingRequest(Frozen):
    """A request awaiting a manager."""

    request_id: UUID
    family_id: str
    team: str
    amount_pence: int
    category: str
    requested_by: str
    family_involved: bool
    requested_at: datetime
    available_pence: int


class PendingList(Frozen):
    """Requests awaiting a manager, oldest first."""

    requests: tuple[PendingRequest, ...]


class PendingQuery(BaseModel):
    """Which requests to list."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending"] = "pending"
