"""A pilot's dashboard: its uptake figures, per arm and per team, and six charts, as one
self-contained HTML page.

Rendered on the server as HTML and inline SVG: no script, nothing fetched from elsewhere
(the response's Content-Security-Policy forbids it), so it prints, works offline and reads
the same on a phone and a laptop. Counts of families follow publication rules: 1 to 4 are
shown as "<5", in the tables and in the charts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape

from services.reporting.disclosure import Cell, Key, Published, Relation
from services.reporting.uptake import (
    SMALL_CELL,
    Facts,
    Figures,
    hours_to_decision_by_family,
    small_cell,
    spent_by_category,
)

__all__ = ["Bar", "Charts", "chart_cells", "charts", "render", "shown"]

# Upper bounds in pence (exclusive) and labels of the transaction size bands.
_SIZE_BANDS = (
    (2_000, "under £20"),
    (5_000, "£20 to £50"),
    (10_000, "£50 to £100"),
    (25_000, "£100 to £250"),
    (50_000, "£250 to £500"),
    (100_000, "£500 to £1,000"),
    (None, "£1,000 or more"),
)
# Upper bounds in hours (exclusive) and labels of the time-to-decision bands.
_HOUR_BANDS = (
    (1, "under an hour"),
    (4, "1 to 4 hours"),
    (24, "4 to 24 hours"),
    (72, "1 to 3 days"),
    (168, "3 to 7 days"),
    (None, "a week or more"),
)
# Upper bounds (exclusive) of the share of its budget a family has used, and their labels.
_USED_BANDS = (
    (1e-9, "none of it"),
    (0.25, "under a quarter"),
    (0.5, "a quarter to a half"),
    (0.75, "a half to three quarters"),
    (1.0, "three quarters or more"),
    (None, "all of it"),
)


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its length, what is written beside it, and the families it rests
    on (for disclosure control: a hidden bar is drawn empty, its value not written)."""

    label: str
    value: int
    shown: str
    families: int = 0
    hidden: bool = False


@dataclass(frozen=True)
class Charts:
    """The dashboard's charts, as bars."""

    spend_by_category: tuple[Bar, ...]
    transaction_sizes: tuple[Bar, ...]
    families_with_spend: tuple[Bar, ...]  # by month, cumulative
    spend_by_month: tuple[Bar, ...]  # purchases less refunds in each month
    budget_used: tuple[Bar, ...]  # families with a budget, by the share of it they used
    time_to_decision: tuple[Bar, ...]


def charts(facts: Facts) -> Charts:
    """The charts of a pilot, from its facts (pure), each bar with the families it rests on;
    :func:`chart_cells` and :func:`shown` apply disclosure control to them."""
    funded = [(f, family) for f, family in facts.families.items() if family.allocated > 0]
    categories: dict[str, set[str]] = defaultdict(set)
    for family, _, category, _ in facts.purchases:
        categories[category].add(family)
    decided = hours_to_decision_by_family(facts)
    return Charts(
        spend_by_category=tuple(
            Bar(category, pence, _money(pence), len(categories[category]))
            for category, pence in spent_by_category(facts, facts.families.keys()).items()
        ),
        transaction_sizes=_banded(
            [(family, amount) for family, amount, _, _ in facts.purchases], _SIZE_BANDS
        ),
        families_with_spend=_families_with_spend(facts),
        spend_by_month=_spend_by_month(facts),
        budget_used=_banded(
            [(f, max(0, family.net_spend) / family.allocated) for f, family in funded],
            _USED_BANDS,
            families=True,
        ),
        time_to_decision=_banded(list(decided), _HOUR_BANDS),
    )


def _banded(
    values: Sequence[tuple[str, float]],
    bands: Sequence[tuple[float | None, str]],
    *,
    families: bool = False,
) -> tuple[Bar, ...]:
    """How many values (each a family's) fall in each band, and of how many families;
    counts of families as published ("<5")."""
    counts: Counter[str] = Counter()
    who: dict[str, set[str]] = defaultdict(set)
    for family, value in values:
        label = next(label for bound, label in bands if bound is None or value < bound)
        counts[label] += 1
        who[label].add(family)
    return tuple(
        Bar(
            label,
            counts[label],
            str(small_cell(counts[label]) if families else counts[label]),
            len(who[label]),
        )
        for _, label in bands
    )


def _spend_by_month(facts: Facts) -> tuple[Bar, ...]:
    """Purchases (by the day bought) less refunds (by the day recorded), month by month."""
    net: Counter[tuple[int, int]] = Counter()
    who: dict[tuple[int, int], set[str]] = defaultdict(set)
    for family, amount, _, day in facts.purchases:
        net[_month(day)] += amount
        who[_month(day)].add(family)
    for family, amount, _, day in facts.refunds:
        net[_month(day)] -= amount
        who[_month(day)].add(family)
    if not net:
        return ()
    months = list(_months(min(net), max(net)))
    return tuple(
        Bar(_month_name(month), net[month], _money(net[month]), len(who[month])) for month in months
    )


# The charts whose bars add up to a total a reader may know (the pilot's spend, its
# purchases, its families with a budget, its decided requests), and the total's key.
_CHART_TOTALS = {
    "spend_by_month": ("all", "spent_pence"),
    "transaction_sizes": ("chart", "transaction_sizes"),
    "budget_used": ("chart", "budget_used"),
    "time_to_decision": ("chart", "time_to_decision"),
}


def chart_cells(chart: Charts) -> tuple[dict[Key, Cell], list[Relation]]:
    """The charts' bars as cells for :func:`~.disclosure.publish`, with the relations they
    are in (the spend by category is the pilot's figures' own)."""
    cells: dict[Key, Cell] = {}
    relations = []
    for name, total in _CHART_TOTALS.items():
        bars: tuple[Bar, ...] = getattr(chart, name)
        keys = tuple(("chart", name, bar.label) for bar in bars)
        cells |= {key: Cell(bar.families) for key, bar in zip(keys, bars, strict=True)}
        if total[0] == "chart":
            cells[total] = Cell(0, known=True)  # taken as known to the reader
        relations.append(Relation(total, keys))
    return cells, relations


def shown(chart: Charts, published: Published) -> Charts:
    """The charts as they may be published: a hidden bar is drawn empty, its value "<5"
    (a count of 1 to 4 families) or left out."""

    def bars(name: str, keys: Callable[[Bar], Key]) -> tuple[Bar, ...]:
        return tuple(_hidden_bar(bar, keys(bar), published) for bar in getattr(chart, name))

    return Charts(
        spend_by_category=bars("spend_by_category", lambda bar: ("all", "category", bar.label)),
        transaction_sizes=bars("transaction_sizes", _chart_key("transaction_sizes")),
        families_with_spend=chart.families_with_spend,
        spend_by_month=bars("spend_by_month", _chart_key("spend_by_month")),
        budget_used=bars("budget_used", _chart_key("budget_used")),
        time_to_decision=bars("time_to_decision", _chart_key("time_to_decision")),
    )


def _chart_key(name: str) -> Callable[[Bar], Key]:
    return lambda bar: ("chart", name, bar.label)


def _hidden_bar(bar: Bar, key: Key, published: Published) -> Bar:
    if key not in published.hidden:
        return bar
    shown_as = "<5" if key in published.small and bar.shown == "<5" else _MISSING
    return Bar(bar.label, 0, shown_as, bar.families, hidden=True)


def _months(first: tuple[int, int], last: tuple[int, int]) -> Iterator[tuple[int, int]]:
    month = first
    while month <= last:
        yield month
        month = (month[0] + month[1] // 12, month[1] % 12 + 1)


def _month_name(month: tuple[int, int]) -> str:
    return date(month[0], month[1], 1).strftime("%b %Y")


def _families_with_spend(facts: Facts) -> tuple[Bar, ...]:
    """At the end of each month, how many families' purchases minus refunds were above
    zero, to the nearest five (1 to 4 read "<5"): exact running totals would give away, month
    on month, the few families who began spending."""
    changes = sorted(
        [(day, family, amount) for family, amount, _, day in facts.purchases]
        + [(day, family, -amount) for family, amount, _, day in facts.refunds]
    )
    if not changes:
        return ()
    net: Counter[str] = Counter()
    bars: list[Bar] = []
    month = _month(changes[0][0])
    position = 0
    while position < len(changes):
        while position < len(changes) and _month(changes[position][0]) == month:
            _, family, amount = changes[position]
            net[family] += amount
            position += 1
        with_spend = sum(pence > 0 for pence in net.values())
        rounded = 5 * round(with_spend / 5) if with_spend >= SMALL_CELL else with_spend
        bars.append(Bar(_month_name(month), rounded, str(small_cell(rounded)), with_spend))
        month = (month[0] + month[1] // 12, month[1] % 12 + 1)
    return tuple(bars)


def _month(day: date) -> tuple[int, int]:
    return day.year, day.month


_MISSING = "\u2013"  # an en dash: nothing to show yet, or hidden for a small cell


def _money(pence: int | None) -> str:
    if pence is None:
        return _MISSING
    sign = "-" if pence < 0 else ""
    return f"{sign}£{abs(pence) // 100:,}.{abs(pence) % 100:02d}"


def _share(value: float | None) -> str:
    return _MISSING if value is None else f"{value * 100:.1f}%"


def _hours(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.1f}"


def _number(value: int | str | None) -> str:
    if value is None:
        return _MISSING
    return f"{value:,}" if isinstance(value, int) else value


_ROWS: tuple[tuple[str, Callable[[Figures], str]], ...] = (
    ("Families enrolled", lambda f: _number(f.families_enrolled)),
    ("Families with a request", lambda f: _number(f.families_with_request)),
    ("Families with spend", lambda f: _number(f.families_with_spend)),
    ("Uptake rate", lambda f: _share(f.uptake_rate)),
    ("Requests", lambda f: _number(f.requests)),
    ("Approved", lambda f: _number(f.approved)),
    ("Rejected", lambda f: _number(f.rejected)),
    ("Allocated", lambda f: _money(f.allocated_pence)),
    ("Spent (purchases minus refunds)", lambda f: _money(f.spent_pence)),
    ("Spend against forecast", lambda f: _share(f.spend_vs_forecast)),
    ("Median transaction", lambda f: _money(f.median_transaction_pence)),
    ("Transactions under £20", lambda f: _share(f.share_transactions_under_2000_pence)),
    ("Median hours to decision", lambda f: _hours(f.median_hours_to_decision)),
    ("Requests with the family involved", lambda f: _share(f.share_requests_family_involved)),
    ("Families told their budget", lambda f: _share(f.share_families_told_budget)),
)

# The per-team table: the figures a manager compares teams by.
_TEAM_ROWS = tuple(
    (label, show)
    for label, show in _ROWS
    if label
    in {
        "Families enrolled",
        "Families with spend",
        "Uptake rate",
        "Spent (purchases minus refunds)",
        "Median hours to decision",
        "Families told their budget",
    }
)


def _rows(
    figures: dict[str, Figures], shown: Sequence[tuple[str, Callable[[Figures], str]]]
) -> str:
    return "".join(
        f"<tr><th scope='row'>{escape(label)}</th>"
        + "".join(f"<td>{escape(show(f))}</td>" for f in figures.values())
        + "</tr>"
        for label, show in shown
    )


_STYLE = """
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#f6f6f4}
header,main{max-width:72rem;margin:0 auto;padding:1rem}
header{border-bottom:4px solid #2a6f97}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.15rem;margin:0 0 .6rem}
.meta{color:#555;margin:0}
.grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(24rem,100%),1fr));
align-items:start}
.wide{grid-column:1/-1}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1rem;overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{padding:.35rem .5rem;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal}
thead th{border-bottom:2px solid #bbb}
svg{width:100%;height:auto;display:block}
.bar{fill:#2a6f97}.negative{fill:#b5473a}.label,.value{font-size:13px;fill:#1b1b1b}
.empty{color:#555;font-style:italic}
footer{max-width:72rem;margin:0 auto;padding:1rem;color:#555;font-size:.9rem}
@media (max-width:40rem){header,main{padding:.6rem}section{padding:.6rem}
.grid{grid-template-columns:minmax(0,1fr)}
th,td{padding:.3rem .2rem;font-size:13px}thead th{white-space:normal}}
"""


# The page as one template, read top to bottom as it renders; its parts are built above.
def render(
    pilot_id: str,
    name: str,
    as_of: datetime,
    figures: dict[str, Figures],
    teams: dict[str, Figures],
    chart: Charts,
) -> str:
    """The whole page. ``figures`` (per arm) and ``teams`` come suppressed (small cells
    already "<5")."""
    scopes = list(figures)
    head = "".join(f"<th scope='col'>{escape(_scope(scope))}</th>" for scope in scopes)
    rows = _rows(figures, _ROWS)
    team_names = [team for team in teams if team != "all"]
    team_head = "".join(f"<th scope='col'>{escape(team)}</th>" for team in team_names)
    team_rows = _rows({team: teams[team] for team in team_names}, _TEAM_ROWS)
    outcomes = sorted({outcome for f in figures.values() for outcome in f.outcomes})
    outcome_rows = "".join(
        f"<tr><th scope='row'>{escape(outcome.replace('_', ' '))}</th>"
        + "".join(
            f"<td>{escape(_number(figures[scope].outcomes.get(outcome, 0)))}</td>"
            for scope in scopes
        )
        + "</tr>"
        for outcome in outcomes
    )
    # The charts describe the whole pilot: drawn only where its figures are shown.
    spend_shown = figures["all"].spent_pence is not None
    sections = [
        _section(
            "Figures",
            f"<table id='figures'><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody>"
            "</table>",
            wide=True,
        ),
        _section(
            "Outcomes",
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{outcome_rows}</tbody></table>"
            if outcomes
            else "<p class='empty'>No outcomes recorded yet.</p>",
            wide=True,
        ),
        _section(
            "By team",
            f"<table id='teams'><thead><tr><th></th>{team_head}</tr></thead>"
            f"<tbody>{team_rows}</tbody></table>",
            wide=True,
        ),
        _section(
            "Spend by category",
            _bar_chart("Spend by category", chart.spend_by_category, shown=spend_shown),
        ),
        _section(
            "Transaction sizes (purchases)",
            _bar_chart("Purchases by size", chart.transaction_sizes, shown=spend_shown),
        ),
        _section(
            "Spend per month",
            _bar_chart("Spend per month", chart.spend_by_month, shown=spend_shown),
        ),
        _section(
            "Families with spend so far (a running total)",
            _bar_chart(
                "Families with spend so far, at the end of each month, to the nearest five",
                chart.families_with_spend,
            ),
        ),
        _section(
            "How much of its budget each family has used",
            _bar_chart("Families by the share of their budget used", chart.budget_used),
        ),
        _section(
            "Time from request to decision",
            _bar_chart(
                "Requests by time to first decision",
                chart.time_to_decision,
                shown=figures["all"].requests is not None,
            ),
        ),
    ]
    title = escape(f"{name}: devolved budgets")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{title}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{title}</h1><p class='meta'>Pilot {escape(pilot_id)} · figures as of "
        f"{escape(as_of.strftime('%d %B %Y %H:%M UTC'))}</p></header>"
        f"<main class='grid'>{''.join(sections)}</main>"
        "<footer>Counts of 1 to 4 families are shown as &lt;5, and every figure, bar and "
        "share that rests on so few families is left out (&#8211;), with the next smallest "
        "figure wherever the hidden one could be worked back from the others, as published "
        "statistics require; a manager's own team is shown as it is. A family with spend has "
        "purchases minus refunds above zero; medians and sizes count purchases, not "
        "refunds.</footer>"
        "</body></html>"
    )


def _scope(scope: str) -> str:
    return "All families" if scope == "all" else f"{scope.capitalize()} arm"


def _section(heading: str, body: str, *, wide: bool = False) -> str:
    kind = " class='wide'" if wide else ""
    return f"<section{kind}><h2>{escape(heading)}</h2>{body}</section>"


def _bar_chart(title: str, bars: Sequence[Bar], *, shown: bool = True) -> str:
    """Horizontal bars, one per row, labelled on the left, their value on the right."""
    if not shown:
        return "<p class='empty'>Not shown: it rests on fewer than five families.</p>"
    if not bars:
        return "<p class='empty'>Nothing recorded yet.</p>"
    # Room for the longest label and the longest value at 13 px (about 7.5 px a character),
    # so that neither is cut off however long the bars grow.
    row, bar_width = 26, 200
    label_width = 8 + round(7.5 * max(len(bar.label) for bar in bars))
    width = label_width + bar_width + 6 + round(7.5 * max(len(bar.shown) for bar in bars)) + 4
    longest = max(abs(bar.value) for bar in bars) or 1
    height = row * len(bars) + 8
    shapes = []
    for index, bar in enumerate(bars):
        y = 4 + index * row
        # A hidden bar, or a count of "<5", is not drawn to scale: its length would tell.
        hidden = bar.hidden or bar.shown == "<5"
        length = 0 if hidden else round(bar_width * abs(bar.value) / longest)
        kind = "negative" if bar.value < 0 else "bar"
        shapes.append(
            f"<text class='label' x='0' y='{y + 18}'>{escape(bar.label)}</text>"
            f"<rect class='{kind}' x='{label_width}' y='{y + 4}' width='{length}' height='18'/>"
            f"<text class='value' x='{label_width + length + 6}' y='{y + 18}'>"
            f"{escape(bar.shown)}</text>"
        )
    return (
        f"<svg viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"
        f"<title>{escape(title)}</title>{''.join(shapes)}</svg>"
    )
