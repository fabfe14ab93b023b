"""A family's budget statement: a page a family can read, on a phone or on paper (pure).

What the family has been given this budget period, what has been spent on what (the
category and the day), and what is left. The free text written about the family is sealed
and stays off the page, unless the worker chooses to show what each purchase was for: then
the purposes, opened by spending (:mod:`.purposes`), are given to :func:`statement`. The figures are
:func:`shared.contracts.balances.fold` of the family's facts, the same rules as the balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from uuid import UUID

from shared.contracts import decode
from shared.contracts.allocation import BudgetAdjusted, BudgetAllocated, BudgetDisclosed
from shared.contracts.approval import BudgetReduced
from shared.contracts.balances import Balance
from shared.contracts.spending import PurchaseRecorded, PurchaseRefunded
from shared.core.events import Envelope

__all__ = ["Line", "Statement", "render", "statement"]


@dataclass(frozen=True)
class Line:
    """One row of the statement: a day, what happened, how much (pence, signed) and, when
    the worker chose to show it, what it was for."""

    day: date
    what: str
    pence: int
    purpose: str | None = None


@dataclass(frozen=True)
class Statement:
    """What the page shows."""

    balance: Balance
    given: tuple[Line, ...]
    spent: tuple[Line, ...]
    last_shared: date | None
    with_purposes: bool = False


def _words(category: str) -> str:
    return category.replace("_", " ").capitalize()


def statement(
    events: Iterable[Envelope], balance: Balance, purposes: Mapping[UUID, str] | None = None
) -> Statement:
    """The statement of the period ``balance`` is for, from the family's events in order;
    with ``purposes`` (by request), each purchase and refund says what it was for."""
    shown = purposes or {}
    given: list[Line] = []
    spent: list[Line] = []
    shared: date | None = None
    for envelope in events:
        event = decode(envelope)
        if isinstance(event, BudgetDisclosed):
            shared = max(shared or event.disclosed_on, event.disclosed_on)
        period = getattr(event, "period_start", None)
        if period != balance.period_start:
            continue
        day = envelope.occurred_at.date()
        match event:
            case BudgetAllocated():
                given.append(Line(day, "Budget given", event.amount_pence))
            case BudgetAdjusted():
                what = "Budget added" if event.delta_pence >= 0 else "Budget taken back"
                given.append(Line(day, what, event.delta_pence))
            case BudgetReduced():
                given.append(Line(day, "Budget reduced", -event.amount_pence))
            case PurchaseRecorded():
                what = _words(event.category)
                purpose = shown.get(event.request_id)
                spent.append(Line(event.purchased_on, what, event.amount_pence, purpose))
            case PurchaseRefunded():
                what = f"Refund: {_words(event.category)}"
                spent.append(Line(day, what, -event.amount_pence, shown.get(event.request_id)))
    spent.sort(key=lambda line: line.day)
    return Statement(balance, tuple(given), tuple(spent), shared, purposes is not None)


def _money(pence: int) -> str:
    sign = "minus " if pence < 0 else ""
    return f"{sign}£{abs(pence) // 100:,}.{abs(pence) % 100:02d}"


def _day(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def _purpose(line: Line) -> str:
    if line.purpose is None:
        return ""
    return f"<span class='for'>For: {escape(line.purpose)}</span>"


def _table(caption: str, lines: Sequence[Line], empty: str) -> str:
    if not lines:
        return f"<p class='empty'>{escape(empty)}</p>"
    rows = "".join(
        f"<tr><td>{escape(_day(line.day))}</td><td>{escape(line.what)}{_purpose(line)}</td>"
        f"<td class='money'>{escape(_money(line.pence))}</td></tr>"
        for line in lines
    )
    return (
        f"<table><caption>{escape(caption)}</caption><thead><tr><th scope='col'>Date</th>"
        "<th scope='col'>What</th><th scope='col' class='money'>Amount</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


_STYLE = """
body{font:18px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1b1b1b;background:#fff}
main{max-width:40rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{font-size:1.25rem;margin:1.4rem 0 .4rem}
.meta{color:#444;margin:0 0 1rem}
.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(8.5rem,1fr));gap:.6rem;
margin:0;padding:0;list-style:none}
.summary li{border:2px solid #2a6f97;border-radius:8px;padding:.6rem .8rem}
.summary .left{background:#e8f1f6}
.summary span{display:block;font-size:1rem;color:#333}
.summary strong{display:block;font-size:1.45rem}
table{border-collapse:collapse;width:100%}
caption{text-align:left;position:absolute;left:-9999px}
th,td{padding:.45rem .3rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.money{text-align:right;white-space:nowrap}
.empty{color:#444}
.for{display:block;font-size:1rem;color:#333;overflow-wrap:anywhere}
footer{color:#444;font-size:1rem;border-top:1px solid #ddd;margin-top:1.5rem;padding-top:.8rem}
@media print{body{font-size:12pt}main{max-width:none}.summary .left{background:none}}
"""


_WRITTEN = {
    False: "This statement shows what was spent and when, never notes written about your family.",
    True: "Your worker chose to show what each thing was for, as they wrote it down. It shows "
    "no other notes written about your family.",
}


def render(pilot_name: str, family_id: str, shown: Statement, printed_at: datetime) -> str:
    """The whole page, self-contained: no scripts, no requests for anything else."""
    balance = shown.balance
    summary = (
        f"<li><span>Given to you</span><strong>{_money(balance.allocated_pence)}</strong></li>"
        f"<li><span>Spent</span><strong>{_money(balance.spent_pence)}</strong></li>"
        f"<li><span>Set aside for agreed things</span>"
        f"<strong>{_money(balance.committed_pence)}</strong></li>"
        f"<li class='left'><span>Left to spend</span>"
        f"<strong>{_money(balance.available_pence)}</strong></li>"
    )
    shared = (
        f"Your worker last went through your budget with you on {_day(shown.last_shared)}."
        if shown.last_shared
        else ""
    )
    title = escape(f"Your family's budget: {pilot_name}")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{title}</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>{title}</h1>"
        f"<p class='meta'>Family reference {escape(family_id)}. This budget runs from "
        f"{escape(_day(balance.period_start))} to {escape(_day(balance.period_end))}.</p>"
        f"<ul class='summary' aria-label='Your budget at a glance'>{summary}</ul>"
        "<h2>What you have been given</h2>"
        + _table("Money given", shown.given, "Nothing has been given yet in this budget.")
        + "<h2>What has been spent</h2>"
        + _table("Money spent", shown.spent, "Nothing has been spent yet in this budget.")
        + "<footer><p>The money is for you and your family, to spend with your worker on "
        "what helps. Ask your worker about anything here, or about what else it could be "
        f"used for. {escape(shared)}</p><p>Printed {escape(_day(printed_at.date()))}. "
        f"{_WRITTEN[shown.with_purposes]}</p></footer>"
        "</main></body></html>"
    )
