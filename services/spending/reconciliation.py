"""Spending's application for bank statements: import one and reconcile it, list its
exceptions, erase its text.

A statement's lines are read and its text sealed before its transaction, in a worker thread
where the work is heavy (:func:`~shared.core.offload.off_loop`); the reconciliation itself
(:mod:`.statements`, pure) grows with the lines and purchases, not their product. Imports of
one pilot are serialised, so that two statements imported at once never match one purchase
twice. Each line's description and reference are sealed under a key of the statement's own
(subject ``statement:<pilot>:<statement_id>``): erasing the statement's text deletes it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from services.spending import statements
from services.spending.schemas import StatementErasureBody, StatementErasureResult, StatementReport
from shared.contracts import decode
from shared.contracts.spending import (
    PurchaseRecorded,
    PurchaseWithoutLine,
    StatementImported,
    StatementLineMatched,
    StatementLineUnmatched,
)
from shared.core.commands import CommandResult
from shared.core.db import Connection
from shared.core.errors import NotFoundError
from shared.core.events import Actor, Envelope
from shared.core.eventstore import CommandContext
from shared.core.offload import off_loop
from shared.core.personal import Sealer
from shared.web.http import Caller
from shared.web.service import ServiceCore
from shared.web.spreadsheets import safe_cell

__all__ = ["Reconciliation", "statement_subject"]

_PURCHASE_FACTS = """
SELECT family_id, envelope FROM events
WHERE pilot_id = $1 AND type IN ('purchase.recorded', 'statement.line_matched')
ORDER BY position
"""
_EXCEPTION_COLUMNS = (
    "kind",
    "date",
    "amount",
    "description",
    "reference",
    "purchase_id",
    "request_id",
    "family_id",
)


def statement_subject(pilot_id: str, statement_id: str) -> str:
    """The subject whose key seals a statement's text."""
    return f"statement:{pilot_id}:{statement_id}"


class Reconciliation:
    """Bank statements of a pilot, reconciled with its purchases."""

    def __init__(self, core: ServiceCore) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)

    async def import_statement(
        self, pilot_id: str, raw: bytes, kind: statements.Format, tolerance_days: int
    ) -> tuple[int, StatementReport]:
        """Reconcile a statement with the pilot's purchases and record it (201); the same file
        again records nothing and answers the first import's report (200)."""
        lines = await off_loop(statements.parse, raw, kind)
        statement = statements.statement_id(raw)
        subject = statement_subject(pilot_id, statement)
        context = CommandContext(
            actor=Actor(sub="finance-import", role="finance"),
            correlation_id=f"statement-{statement[:16]}",
            causation_id=None,
            occurred_at=None,
        )

        async def handle(conn: Connection) -> CommandResult:
            aggregates = self._core.aggregates
            # One import of the pilot at a time: each matches only what the last left.
            await aggregates.serialise(conn, statements.DECIDER, pilot_id)
            recorded = await aggregates.load(conn, statements.DECIDER, pilot_id, statement)
            if recorded.state.imported:
                report = _report(recorded.stream.envelopes, replayed=True)
                return CommandResult(200, report.model_dump(mode="json"))
            rows = await conn.fetch(_PURCHASE_FACTS, pilot_id)
            texts = [text for line in lines for text in (line.description, line.reference)]
            sealed = await self._sealer.seal_many(conn, subject, texts)
            command = statements.ImportStatement(
                statement_id=statement,
                format=kind,
                lines=tuple(lines),
                sealed={
                    line.number: (sealed[2 * n], sealed[2 * n + 1]) for n, line in enumerate(lines)
                },
                purchases=tuple(await off_loop(_unmatched_purchases, rows)),
                tolerance_days=tolerance_days,
            )
            decided = await aggregates.execute(conn, recorded, command, context, None)
            report = _report(decided.envelopes, replayed=False)
            return CommandResult(201, report.model_dump(mode="json"))

        result = await self._core.commands.run(handle, None)
        return result.status, StatementReport.model_validate(result.body)

    async def exceptions(self, pilot_id: str, statement: str) -> str:
        """The statement's lines without a purchase and purchases without a line, as CSV
        that a spreadsheet shows and never runs; erased text reads ``[erased]``."""
        async with self._core.pool.acquire() as conn:
            recorded = await self._core.aggregates.load(
                conn, statements.DECIDER, pilot_id, statement
            )
            opened = await self._sealer.opener(conn, statement_subject(pilot_id, statement))
        if not recorded.state.imported:
            raise NotFoundError("no such statement")
        rows: list[list[Any]] = []
        for envelope in recorded.stream.envelopes:
            match decode(envelope):
                case StatementLineUnmatched() as line:
                    rows.append(
                        [
                            "line_without_purchase",
                            line.booked_on,
                            _pounds(line.amount_pence),
                            opened(line.description),
                            opened(line.reference),
                            "",
                            "",
                            "",
                        ]
                    )
                case PurchaseWithoutLine() as bought:
                    rows.append(
                        [
                            "purchase_without_line",
                            bought.purchased_on,
                            _pounds(bought.amount_pence),
                            bought.vendor or "",
                            "",
                            bought.purchase_id,
                            bought.request_id,
                            bought.family_id,
                        ]
                    )
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(_EXCEPTION_COLUMNS)
        writer.writerows([safe_cell(cell) for cell in row] for row in rows)
        return text.getvalue()

    async def erase_text(
        self, caller: Caller, pilot_id: str, statement: str, body: StatementErasureBody
    ) -> CommandResult:
        """Delete the statement's own key and record that it was done."""

        async def handle(conn: Connection) -> CommandResult:
            recorded = await self._core.aggregates.load(
                conn, statements.DECIDER, pilot_id, statement
            )
            erased = await self._sealer.erase(conn, statement_subject(pilot_id, statement))
            command = statements.EraseStatementText(
                basis=body.basis, erased_on=body.erased_on, keys_erased=erased
            )
            decided = await self._core.aggregates.execute(
                conn, recorded, command, caller.context, None
            )
            result = StatementErasureResult(
                statement_id=statement, keys_erased=erased, stream_version=decided.stream_version
            )
            return CommandResult(200, result.model_dump(mode="json"))

        return await self._core.commands.run(handle, caller.idempotency)


def _unmatched_purchases(rows: Sequence[Any]) -> list[statements.Purchase]:
    """The pilot's purchases that no statement has matched yet (rows of purchases and
    matches in recorded order)."""
    purchases: dict[UUID, statements.Purchase] = {}
    for row in rows:
        envelope = Envelope.model_validate(row["envelope"])
        match decode(envelope):
            case PurchaseRecorded() as event:
                purchases[event.purchase_id] = statements.Purchase(
                    event.purchase_id,
                    event.request_id,
                    row["family_id"] or "",
                    event.amount_pence,
                    event.purchased_on,
                    event.vendor,
                    event.receipt_ref,
                )
            case StatementLineMatched() as event:
                purchases.pop(event.purchase_id, None)
    return list(purchases.values())


def _report(envelopes: Sequence[Envelope], *, replayed: bool) -> StatementReport:
    """A statement's report, counted from its recorded events."""
    events = [decode(envelope) for envelope in envelopes]
    [imported] = [e for e in events if isinstance(e, StatementImported)]
    return StatementReport(
        statement_id=imported.statement_id,
        format=imported.format,
        lines=imported.lines,
        matched=sum(isinstance(e, StatementLineMatched) for e in events),
        unmatched_lines=sum(isinstance(e, StatementLineUnmatched) for e in events),
        purchases_without_line=sum(isinstance(e, PurchaseWithoutLine) for e in events),
        replayed=replayed,
    )


def _pounds(pence: int) -> str:
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"
