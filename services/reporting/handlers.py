"""Reporting's queries: balances, history, uptake, transactions and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime

import asyncpg

from services.reporting import dashboard, disclosure, statement, trial, uptake, whatif
from services.reporting.purposes import SpendingPurposes
from services.reporting.schemas import BalanceView, Clock, HistoryView, UptakeView
from services.reporting.transactions import transactions_csv
from shared.contracts import balances, views
from shared.contracts.allocation import PilotConfig
from shared.contracts.periods import PeriodLength, period_containing
from shared.core.db import Connection
from shared.core.errors import NotFoundError
from shared.core.events import Envelope
from shared.core.offload import off_loop
from shared.core.personal import Sealer
from shared.web.auth import Principal, require_team
from shared.web.service import ServiceCore

__all__ = ["UPTAKE_EVENT_TYPES", "WHAT_IF_EVENT_TYPES", "Reporting", "policy_what_if"]

UPTAKE_EVENT_TYPES = [
    "family.enrolled",
    "family.budget_allocated",
    "family.budget_adjusted",
    "family.budget_disclosed",
    "family.outcome_recorded",
    "family.exited",
    "spend_request.requested",
    "decision.approved",
    "decision.rejected",
    "decision.budget_reduced",
    "purchase.recorded",
    "purchase.refunded",
]

# What a policy what-if replays (services.reporting.whatif).
WHAT_IF_EVENT_TYPES = [
    "family.enrolled",
    "family.budget_allocated",
    "family.budget_adjusted",
    "decision.budget_reduced",
    "spend_request.requested",
    "decision.referred",
    "decision.approved",
    "decision.rejected",
    "purchase.recorded",
    "purchase.refunded",
]

_NO_FAMILY = "no such family in this pilot"  # also another team's, to its workers
_FAMILY = "SELECT team, enrolled_on FROM family_view WHERE pilot_id = $1 AND family_id = $2"
_PILOT_EVENTS = """
SELECT envelope FROM history WHERE pilot_id = $1 AND type = ANY($2::text[])
ORDER BY recorded_at, source, stream_version
"""
_HISTORY = """
SELECT envelope FROM history
WHERE pilot_id = $1 AND family_id = $2 AND ($3::timestamptz IS NULL OR recorded_at <= $3)
ORDER BY recorded_at, source, stream_version
"""
# The same, up to a moment of business time: what happened by then, as occurred_at says.
_HISTORY_BY_BUSINESS_TIME = """
SELECT envelope FROM history
WHERE pilot_id = $1 AND family_id = $2 AND occurred_at <= $3
ORDER BY recorded_at, source, stream_version
"""


class Reporting:
    """Answers from reporting's projections."""

    def __init__(self, core: ServiceCore, purposes: SpendingPurposes) -> None:
        self._core = core
        self._sealer = Sealer(core.custody)
        self._purposes = purposes

    async def _family(
        self, conn: Connection, principal: Principal, pilot_id: str, family_id: str
    ) -> tuple[date, tuple[PeriodLength, ...]]:
        family = await conn.fetchrow(_FAMILY, pilot_id, family_id)
        pilot = await views.pilot_in_force(conn, pilot_id)
        if family is None or pilot is None:
            raise NotFoundError("no such family in this pilot")
        require_team(
            principal, family["team"], unseen=NotFoundError("no such family in this pilot")
        )
        enrolled_on: date = family["enrolled_on"]
        return enrolled_on, pilot.period_lengths

    async def balance(
        self,
        principal: Principal,
        pilot_id: str,
        family_id: str,
        as_of: datetime | None,
        clock: Clock = "record",
    ) -> BalanceView:
        """The balance of the period containing now, or ``as_of``: from the facts recorded
        by then, or (``clock="business"``) from those that happened by then."""
        moment = as_of or self._core.clock()
        async with self._core.pool.acquire() as conn:
            enrolled_on, lengths = await self._family(conn, principal, pilot_id, family_id)
            # The period of the UTC date: the offset a caller writes a moment in changes nothing.
            period = period_containing(enrolled_on, lengths, moment.astimezone(UTC).date())
            if as_of is None:
                balance = await balances.balance_of(
                    conn, pilot_id, family_id, period.start, period.end
                )
            else:
                facts = await _history(conn, pilot_id, family_id, as_of, clock)
                balance = balances.fold(facts).get(period.start) or balances.Balance.nothing(
                    period.start, period.end
                )
        return BalanceView(
            pilot_id=pilot_id,
            family_id=family_id,
            **balance.model_dump(),
            available_pence=balance.available_pence,
            as_of=moment,
            clock=clock,
        )

    async def history(self, principal: Principal, pilot_id: str, family_id: str) -> HistoryView:
        """Every event of the family, from every service, in recorded order."""
        async with self._core.pool.acquire() as conn:
            await self._family(conn, principal, pilot_id, family_id)
            events = await _history(conn, pilot_id, family_id, None)
        return HistoryView(pilot_id=pilot_id, family_id=family_id, events=tuple(events))

    async def statement(
        self,
        principal: Principal,
        pilot_id: str,
        family_id: str,
        *,
        purposes_asked_as: str | None = None,
    ) -> str:
        """The family's budget statement page for this budget period (:mod:`.statement`);
        with ``purposes_asked_as`` (the caller's Authorization), what each purchase was for,
        asked of spending in the caller's name."""
        now = self._core.clock()
        async with self._core.pool.acquire() as conn:
            enrolled_on, lengths = await self._family(conn, principal, pilot_id, family_id)
            pilot = await views.pilot_in_force(conn, pilot_id)
            events = await _history(conn, pilot_id, family_id, None)
        assert pilot is not None  # _family found it
        period = period_containing(enrolled_on, lengths, now.astimezone(UTC).date())
        balance = balances.fold(events).get(period.start) or balances.Balance.nothing(
            period.start, period.end
        )
        purposes = None
        if purposes_asked_as is not None:
            purposes = await self._purposes.of_family(pilot_id, family_id, purposes_asked_as)
        shown = statement.statement(events, balance, purposes)
        return statement.render(pilot.config.name, family_id, shown, now)

    async def transactions(self, pilot_id: str) -> str:
        """Every purchase and refund of the pilot as CSV."""
        async with self._core.pool.acquire() as conn:
            rows = await conn.fetch(
                _PILOT_EVENTS, pilot_id, ["purchase.recorded", "purchase.refunded"]
            )
        return await off_loop(lambda: transactions_csv(_envelopes(rows)))

    async def _facts(self, pilot_id: str) -> tuple[PilotConfig, uptake.Facts]:
        """The pilot's configuration and the facts of every event recorded so far (read in
        a worker thread: a pilot's every event, in Python)."""
        async with self._core.pool.acquire() as conn:
            pilot = await views.pilot_in_force(conn, pilot_id)
            if pilot is None:
                raise NotFoundError("no such pilot")
            rows = await conn.fetch(_PILOT_EVENTS, pilot_id, UPTAKE_EVENT_TYPES)
        return pilot.config, await off_loop(lambda: uptake.gather(_envelopes(rows)))

    async def uptake(
        self, principal: Principal, pilot_id: str, *, suppress_small_cells: bool
    ) -> UptakeView:
        """The pilot's figures, from every fact recorded so far: exact for an admin or an
        auditor who asks, published (:mod:`.disclosure`) otherwise, and always for a
        manager, who may see their own team's families only."""
        config, facts = await self._facts(pilot_id)
        forecast = config.forecast_spend_per_family_pence
        exact = not suppress_small_cells and principal.role in {"admin", "auditor"}
        if exact:
            figures = await off_loop(uptake.compute, facts, forecast)
        else:
            figures = (await off_loop(_published, facts, forecast, principal)).arms
        return UptakeView(
            pilot_id=pilot_id,
            as_of=self._core.clock(),
            all=figures.pop("all"),
            arms=figures,
        )

    async def trial_dataset(self, pilot_id: str) -> bytes:
        """The pilot's trial dataset and its descriptor, zipped (:mod:`.trial`)."""
        config, facts = await self._facts(pilot_id)
        async with self._core.pool.acquire() as conn, conn.transaction():
            secret = await trial.pilot_secret(conn, self._sealer, pilot_id)
        categories = sorted(
            set(config.categories) | {category for _, _, category, _ in facts.purchases}
        )
        columns = trial.columns_of(categories)
        return await off_loop(
            lambda: trial.package(pilot_id, columns, trial.rows(facts, categories, secret))
        )

    async def what_if(self, pilot_id: str, proposal: PilotConfig) -> whatif.WhatIf:
        """The pilot's recorded requests under a proposed configuration; records nothing."""
        async with self._core.pool.acquire() as conn:
            return await policy_what_if(conn, pilot_id, proposal)

    async def dashboard(self, principal: Principal, pilot_id: str) -> str:
        """The pilot's dashboard page, as it may be published to this caller."""
        config, facts = await self._facts(pilot_id)
        forecast = config.forecast_spend_per_family_pence
        now = self._core.clock()

        def page() -> str:
            chart = dashboard.charts(facts)
            published = _published(facts, forecast, principal, chart)
            return dashboard.render(
                pilot_id,
                config.name,
                now,
                published.arms,
                published.teams,
                dashboard.shown(chart, published),
            )

        return await off_loop(page)


def _published(
    facts: uptake.Facts,
    forecast: int | None,
    principal: Principal,
    chart: dashboard.Charts | None = None,
) -> disclosure.Published:
    """Everything the uptake endpoint and the dashboard show, as this caller may see it (a
    manager's own team as it is), each hidden as the other is, so that the two cannot be
    combined against each other."""
    cells, relations = dashboard.chart_cells(chart or dashboard.charts(facts))
    return disclosure.publish(
        facts,
        uptake.compute(facts, forecast),
        uptake.by_team(facts, forecast),
        charts=cells,
        chart_relations=relations,
        known_team=principal.team if principal.role == "manager" else None,
    )


async def policy_what_if(conn: Connection, pilot_id: str, proposal: PilotConfig) -> whatif.WhatIf:
    """A what-if from reporting's database (the endpoint's and ``ledger policy what-if``'s)."""
    pilot = await views.pilot_in_force(conn, pilot_id)
    if pilot is None:
        raise NotFoundError("no such pilot")
    rows = await conn.fetch(_PILOT_EVENTS, pilot_id, WHAT_IF_EVENT_TYPES)
    return await off_loop(
        lambda: whatif.what_if(pilot_id, _envelopes(rows), pilot.config, proposal)
    )


def _envelopes(rows: Iterable[asyncpg.Record]) -> Iterator[Envelope]:
    return (Envelope.model_validate(row["envelope"]) for row in rows)


async def _history(
    conn: Connection,
    pilot_id: str,
    family_id: str,
    until: datetime | None,
    clock: Clock = "record",
) -> list[Envelope]:
    query = _HISTORY_BY_BUSINESS_TIME if clock == "business" and until else _HISTORY
    rows = await conn.fetch(query, pilot_id, family_id, until)
    return [Envelope.model_validate(row["envelope"]) for row in rows]
