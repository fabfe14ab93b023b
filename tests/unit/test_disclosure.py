"""Disclosure control tried as a reader with a calculator would try it.

Random pilots of families in two arms and several teams, spending in categories and months,
told their budget or not, with outcomes. From everything the uptake endpoint and the
dashboard publish to a viewer (an auditor, or a manager with a team of their own), the
reader works out all they can: a total less the parts shown, a share times its count,
repeated until nothing more follows. Whatever rests on 1 to 4 families (a count of them,
or their money) must stay unknown to them, unless it is the manager's own team's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reporting.dashboard import chart_cells, charts, shown
from services.reporting.disclosure import publish
from services.reporting.uptake import Figures, by_team, compute, gather
from shared.core.events import Envelope
from tests.unit.test_uptake import event, publishing

CATEGORIES = ("practical", "therapeutic", "other")
MONTHS = ("2026-02-10", "2026-03-10", "2026-04-10")
TEAMS = ("t1", "t2", "t3", "t4")
ADDITIVE = (
    "families_enrolled",
    "families_with_request",
    "families_with_spend",
    "requests",
    "approved",
    "rejected",
    "allocated_pence",
    "spent_pence",
)


@dataclass(frozen=True)
class Family:
    """One family of a generated pilot."""

    name: str
    arm: str
    team: str
    spends: tuple[tuple[str, str, int], ...]  # category, day, pence
    told: bool
    outcome: str | None


families = st.lists(
    st.builds(
        Family,
        name=st.just(""),
        arm=st.sampled_from(("treatment", "treatment", "control")),
        team=st.sampled_from(TEAMS),
        spends=st.lists(
            st.tuples(
                st.sampled_from(CATEGORIES),
                st.sampled_from(MONTHS),
                st.integers(100, 50_000),
            ),
            max_size=2,
        ).map(tuple),
        told=st.booleans(),
        outcome=st.sampled_from((None, None, "reunified", "remained_at_home")),
    ),
    min_size=1,
    max_size=40,
)


def events_of(pilot: list[Family]) -> list[Envelope]:
    """The pilot's history, as the services would record it."""
    found = []
    for n, family in enumerate(pilot):
        name = f"f{n}"
        found.append(event("family.enrolled", name, arm=family.arm, team=family.team))
        if family.arm == "treatment":
            found.append(event("family.budget_allocated", name, 2, amount_pence=100_000))
        for m, (category, day, pence) in enumerate(family.spends):
            request = f"{name}-r{m}"
            found += [
                event("spend_request.requested", name, request_id=request, family_involved=True),
                event("decision.approved", name, request_id=request),
                event(
                    "purchase.recorded",
                    name,
                    request_id=request,
                    purchase_id=f"{request}-p",
                    amount_pence=pence,
                    category=category,
                    purchased_on=day,
                ),
            ]
        if family.told:
            found.append(event("family.budget_disclosed", name, 3))
        if family.outcome:
            found.append(event("family.outcome_recorded", name, 4, outcome=family.outcome))
    return found


def truths(pilot: list[Family]) -> dict[tuple[str, ...], tuple[frozenset[int], float]]:
    """What the reader must not learn when it rests on 1 to 4 families: per scope (the
    pilot, each arm, each team), each count of families and each sum of money, with the
    families it rests on; and the pilot's spend per month."""
    found: dict[tuple[str, ...], tuple[frozenset[int], float]] = {}
    scopes: dict[str, list[int]] = defaultdict(list)
    for n, family in enumerate(pilot):
        for scope in ("all", family.arm, f"team:{family.team}"):
            scopes[scope].append(n)

    def spent(n: int, category: str | None = None, day: str | None = None) -> int:
        return sum(p for c, d, p in pilot[n].spends if category in {None, c} and day in {None, d})

    for scope, members in scopes.items():
        spenders = frozenset(n for n in members if pilot[n].spends)
        told = frozenset(n for n in members if pilot[n].told)
        found[scope, "families_enrolled"] = (frozenset(members), len(members))
        found[scope, "families_with_spend"] = (spenders, len(spenders))
        found[scope, "told"] = (told, len(told))
        found[scope, "spent_pence"] = (spenders, sum(spent(n) for n in spenders))
        for category in CATEGORIES:
            who = frozenset(n for n in members if spent(n, category))
            found[scope, "category", category] = (who, sum(spent(n, category) for n in who))
        for outcome in ("reunified", "remained_at_home"):
            who = frozenset(n for n in members if pilot[n].outcome == outcome)
            found[scope, "outcome", outcome] = (who, len(who))
    for day in MONTHS:
        who = frozenset(n for n in range(len(pilot)) if spent(n, day=day))
        found["month", day[:7]] = (who, sum(spent(n, day=day) for n in who))
    return found


def read(published: dict[str, Figures], month_bars: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """Every number shown, by the keys of :func:`truths`."""
    known: dict[tuple[str, ...], float] = {}
    for scope, figures in published.items():
        known |= _numbers(scope, figures)
    for month, value in month_bars.items():
        known["month", month] = value
    return known


def _numbers(scope: str, figures: Figures) -> dict[tuple[str, ...], float]:
    """A scope's numbers shown; a category or outcome not listed is one of nobody: 0."""
    known: dict[tuple[str, ...], float] = {}
    for name in (*ADDITIVE, "uptake_rate", "share_families_told_budget"):
        value = getattr(figures, name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            known[scope, name] = value
    categories = figures.spent_by_category_pence
    if categories is not None:
        known |= {(scope, "category", c): categories.get(c, 0) or 0 for c in CATEGORIES}
        for category, pence in categories.items():
            if pence is None:
                del known[scope, "category", category]
    for outcome in ("reunified", "remained_at_home"):
        count = figures.outcomes.get(outcome, 0)
        if isinstance(count, int):
            known[scope, "outcome", outcome] = count
    return known


Relations = list[tuple[tuple[str, ...], list[tuple[str, ...]]]]


def relations_of(scopes: list[str]) -> Relations:
    """What adds up, as any reader knows: the pilot and its arms, the pilot and its teams,
    spend and its categories, the pilot's spend and its months."""
    arms = [s for s in scopes if s in {"treatment", "control"}]
    teams = [s for s in scopes if s.startswith("team:")]
    suffixes: list[tuple[str, ...]] = [(name,) for name in ADDITIVE]
    suffixes += [("category", c) for c in CATEGORIES]
    suffixes += [("outcome", o) for o in ("reunified", "remained_at_home")]
    relations: Relations = [
        (("all", *suffix), [(s, *suffix) for s in group])
        for suffix in suffixes
        for group in (arms, teams)
        if group
    ]
    relations += [
        ((scope, "spent_pence"), [(scope, "category", c) for c in CATEGORIES]) for scope in scopes
    ]
    relations.append((("all", "spent_pence"), [("month", day[:7]) for day in MONTHS]))
    return relations


def work_out(
    known: dict[tuple[str, ...], float], scopes: list[str]
) -> dict[tuple[str, ...], float]:
    """All a reader can work out: totals less parts, shares times counts, until nothing
    more follows."""
    relations = relations_of(scopes)
    known = dict(known)
    changed = True
    while changed:
        changed = _shares_times_counts(known, scopes)
        for total, parts in relations:
            unknown = [m for m in (total, *parts) if m not in known]
            if len(unknown) != 1:
                continue
            [missing] = unknown
            if missing == total:
                known[missing] = sum(known[p] for p in parts)
            else:
                known[missing] = known[total] - sum(known[p] for p in parts if p != missing)
            changed = True
    return known


def _shares_times_counts(known: dict[tuple[str, ...], float], scopes: list[str]) -> bool:
    """A share and the count it is of give the count it counts; whether any was new."""
    changed = False
    for scope in scopes:
        enrolled = known.get((scope, "families_enrolled"))
        for share, count in (
            ("uptake_rate", "families_with_spend"),
            ("share_families_told_budget", "told"),
        ):
            rate = known.get((scope, share))
            if enrolled is not None and rate is not None and (scope, count) not in known:
                known[scope, count] = round(rate * enrolled)
                changed = True
    return changed


@settings(max_examples=150, deadline=None)
@given(families, st.sampled_from((None, *TEAMS)))
def test_no_arithmetic_recovers_what_rests_on_fewer_than_five_families(
    pilot: list[Family], manager_of: str | None
) -> None:
    """Totals less parts (arms, teams, categories, months), shares times counts: nothing
    resting on 1 to 4 families is learnt, but a manager's own team."""
    facts = gather(events_of(pilot))
    chart = charts(facts)
    cells, relations = chart_cells(chart)
    published = publish(
        facts,
        compute(facts, 100_000),
        by_team(facts, 100_000),
        charts=cells,
        chart_relations=relations,
        known_team=manager_of,
    )
    months = {
        bar.label: bar.value for bar in shown(chart, published).spend_by_month if not bar.hidden
    }
    by_month = {f"{label[4:]}-{_MONTH[label[:3]]}": value for label, value in months.items()}
    scopes = [*published.arms, *(f"team:{t}" for t in published.teams if t != "all")]
    everything = {**published.arms, **{f"team:{t}": f for t, f in published.teams.items()}}
    learnt = work_out(read(everything, by_month), scopes)
    own = {n for n, family in enumerate(pilot) if family.team == manager_of}
    for key, (behind, value) in truths(pilot).items():
        if 0 < len(behind) < 5 and not behind <= own:  # a manager's own families: theirs
            assert key not in learnt or learnt[key] != value, (key, sorted(behind), value)


_MONTH = {"Feb": "02", "Mar": "03", "Apr": "04"}


def test_a_manager_sees_their_own_team_and_one_small_team_hides_one_other() -> None:
    """A team where 8 of 8 families spend is shown whole to its manager (every team read as
    dashes when one was small), and a team of 3 hides its figures and one other team's, not
    every team's."""

    def team(name: str, size: int, pence: int, *, told: bool = False) -> list[Family]:
        spends = (("other", MONTHS[1], pence),)
        return [Family("", "treatment", name, spends, told=told, outcome=None)] * size

    pilot = [*team("t1", 8, 1_000, told=True), *team("t2", 6, 2_000)]
    pilot += [*team("t3", 7, 3_000), *team("t4", 3, 4_000)]
    facts = gather(events_of(pilot))
    teams = publishing(facts, 100_000, known_team="t1").teams
    mine = teams["t1"]
    assert (mine.families_enrolled, mine.families_with_spend, mine.uptake_rate) == (8, 8, 1.0)
    assert mine.spent_pence == 8_000
    assert teams["t4"].spent_pence is None  # three families
    hidden = [t for t in ("t2", "t3") if teams[t].spent_pence is None]
    assert hidden == ["t2"]  # the next smallest, alone
    assert teams["all"].spent_pence == 8 * 1_000 + 6 * 2_000 + 7 * 3_000 + 3 * 4_000
    auditor = publishing(facts, 100_000).teams
    assert auditor["t1"].families_enrolled == 8  # not small: shown to everyone
