"""Disclosure control for what reporting publishes: no figure rests on 1 to 4 families, and
none that is hidden can be worked back by arithmetic from those shown (pure).

A published figure is a *cell*: its value, and the families it rests on (those it counts,
or whose money it sums). Rules:

- **Primary.** A cell resting on 1 to 4 families is hidden; a count of so few reads "<5".
  A share (families told their budget, the uptake rate) is hidden too when the families it
  leaves out of its scope are 1 to 4: the share and the scope's count give both. When a
  scope's families enrolled are so few, every figure of the scope is hidden.
- **Secondary.** Cells that add up (the pilot and its arms, the pilot and its teams, spend
  and its categories, spend and its months, the bands of a chart and their total) form a
  relation; a relation with one hidden cell would give it away as the total less the rest,
  so the next smallest cell of it (by families, never one already known) is hidden too,
  until no relation has a lone hidden cell. Only as much is hidden as that needs: one
  small team hides one other team's figure, not every team's.
- **Derived.** A figure computed from another (a rate from its count, spend against
  forecast from spend) is hidden with it.
- **Known.** What the viewer may already see family by family (a manager's own team) is
  shown as it is, and counts as known to the arithmetic: a manager of a team where 8 of 8
  families spend sees the team's figures, and nothing hidden follows from them.

:func:`publish` applies the rules to everything the uptake endpoint and the dashboard show
at once, so that the two cannot be combined against each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.reporting.uptake import SMALL_CELL, Facts, Figures

__all__ = ["Cell", "Key", "Published", "Relation", "hidden_cells", "publish"]

Key = tuple[str, ...]  # (scope, figure), (scope, kind, name), or a chart's


@dataclass(frozen=True)
class Cell:
    """A published figure, as the rules see it."""

    families: int  # the families it rests on
    complement: int = 0  # for a share: the families of its scope it leaves out
    known: bool = False  # the viewer may see it already: shown, and known to the arithmetic


@dataclass(frozen=True)
class Relation:
    """Cells that add up: the total is the sum of the parts."""

    total: Key
    parts: tuple[Key, ...]


def _small(families: int) -> bool:
    return 0 < families < SMALL_CELL


def hidden_cells(
    cells: Mapping[Key, Cell],
    relations: Sequence[Relation],
    derived: Mapping[Key, Sequence[Key]] | None = None,
) -> set[Key]:
    """The cells to hide: the primary ones, then, until nothing changes, what is derived
    from a hidden one, and the next smallest cell of each relation with a lone hidden one."""
    derived = derived or {}
    hidden = {
        key
        for key, cell in cells.items()
        if not cell.known and (_small(cell.families) or _small(cell.complement))
    }
    changed = True
    while changed:
        changed = False
        for key, sources in derived.items():
            if key not in hidden and not cells[key].known and any(s in hidden for s in sources):
                hidden.add(key)
                changed = True
        for relation in relations:
            members = (relation.total, *relation.parts)
            if sum(member in hidden for member in members) != 1:
                continue
            candidates = [m for m in members if m not in hidden and not cells[m].known]
            if not candidates:
                continue  # every other cell the viewer knows: nothing is given away to them
            # The smallest that hides something: a cell of no family is the last resort.
            pick = min(
                candidates,
                key=lambda m: (cells[m].families == 0, cells[m].families, m != relation.total),
            )
            hidden.add(pick)
            changed = True
    return hidden


# The figures that add up across scopes (the pilot is the sum of its arms, of its teams).
_ADDITIVE = (
    "families_enrolled",
    "families_with_request",
    "families_with_spend",
    "requests",
    "approved",
    "rejected",
    "allocated_pence",
    "spent_pence",
)
_COUNTS = frozenset({"families_enrolled", "families_with_request", "families_with_spend"})
# A figure computed from others, and those others: it is hidden with any of them.
_DERIVED = {
    "uptake_rate": ("families_with_spend", "families_enrolled"),
    "spend_vs_forecast": ("spent_pence",),
    "share_families_told_budget": ("families_enrolled",),
}


@dataclass(frozen=True)
class _Basis:
    """The families each figure of a scope rests on."""

    enrolled: int
    with_request: int
    with_spend: int
    with_purchase: int
    with_approval: int
    with_rejection: int
    funded: int
    told: int
    involved: int  # families with a request made with the family involved
    by_category: Mapping[str, int]
    by_outcome: Mapping[str, int]


def _basis(facts: Facts, members: set[str]) -> _Basis:
    families = [facts.families[f] for f in members]
    verdicts = {(f, v) for f, v in facts.verdicts if f in members}
    requests = [(f, involved) for f, involved, _ in facts.requests.values() if f in members]
    by_category: dict[str, set[str]] = defaultdict(set)
    for family, _, category, _ in facts.purchases:
        if family in members:
            by_category[category].add(family)
    by_outcome: dict[str, set[str]] = defaultdict(set)
    for family, outcome in facts.outcomes:
        if family in members:
            by_outcome[outcome].add(family)
    return _Basis(
        enrolled=len(families),
        with_request=sum(family.requested for family in families),
        with_spend=sum(family.net_spend > 0 for family in families),
        with_purchase=len({f for f, _, _, _ in facts.purchases if f in members}),
        with_approval=sum(v == "approved" for _, v in verdicts),
        with_rejection=sum(v == "rejected" for _, v in verdicts),
        funded=sum(family.allocated > 0 for family in families),
        told=sum(family.told for family in families),
        involved=len({f for f, involved in requests if involved}),
        by_category={c: len(f) for c, f in by_category.items()},
        by_outcome={o: len(f) for o, f in by_outcome.items()},
    )


def _cells_of(scope: str, basis: _Basis, *, known: bool) -> dict[Key, Cell]:
    """The cells of one scope's figures, keyed (scope, figure) and (scope, kind, name)."""
    n = basis.enrolled

    def cell(families: int, complement: int = 0) -> Cell:
        # A scope of 1 to 4 families: each of its figures rests on them all.
        return Cell(n if _small(n) else families, complement, known)

    cells: dict[Key, Cell] = {
        (scope, "families_enrolled"): cell(n),
        (scope, "families_with_request"): cell(basis.with_request),
        (scope, "families_with_spend"): cell(basis.with_spend),
        (scope, "uptake_rate"): cell(basis.with_spend, n - basis.with_spend),
        (scope, "requests"): cell(basis.with_request),
        (scope, "approved"): cell(basis.with_approval),
        (scope, "rejected"): cell(basis.with_rejection),
        (scope, "allocated_pence"): cell(basis.funded),
        (scope, "spent_pence"): cell(basis.with_spend),
        (scope, "spend_vs_forecast"): cell(basis.with_spend),
        (scope, "median_transaction_pence"): cell(basis.with_purchase),
        (scope, "share_transactions_under_2000_pence"): cell(basis.with_purchase),
        (scope, "median_hours_to_decision"): cell(basis.with_request),
        (scope, "share_requests_family_involved"): cell(
            basis.involved, basis.with_request - basis.involved
        ),
        (scope, "share_families_told_budget"): cell(basis.told, n - basis.told),
    }
    cells.update({(scope, "category", c): cell(f) for c, f in basis.by_category.items()})
    cells.update({(scope, "outcome", o): cell(f) for o, f in basis.by_outcome.items()})
    return cells


@dataclass(frozen=True)
class Published:
    """What may be shown: figures per arm (``all`` first), per team, and the charts' cells
    hidden (by :mod:`.dashboard`'s keys)."""

    arms: dict[str, Figures]
    teams: dict[str, Figures]
    hidden: frozenset[Key] = field(default_factory=frozenset)
    small: frozenset[Key] = field(default_factory=frozenset)  # hidden for 1 to 4 families


def publish(
    facts: Facts,
    figures: Mapping[str, Figures],
    teams: Mapping[str, Figures],
    *,
    charts: Mapping[Key, Cell] | None = None,
    chart_relations: Sequence[Relation] = (),
    known_team: str | None = None,
) -> Published:
    """The figures (per arm, from :func:`~.uptake.compute`; per team, from
    :func:`~.uptake.by_team`) and chart cells as they may be published, to a viewer who may
    see ``known_team``'s families already."""
    arm_scopes = [scope for scope in figures if scope != "all"]
    team_scopes = [scope for scope in teams if scope != "all"]
    members = _members(facts)
    # The viewer's own families, and each scope they see all of already.
    own = members.get(f"team:{known_team}", set()) if known_team is not None else set()
    cells: dict[Key, Cell] = {}
    for scope in ("all", *arm_scopes, *(f"team:{team}" for team in team_scopes)):
        known = bool(own) and members[scope] <= own
        cells |= _cells_of(scope, _basis(facts, members[scope]), known=known)
    cells |= dict(charts or {})
    groups = [arm_scopes, [f"team:{team}" for team in team_scopes]]
    relations = list(chart_relations)
    for group in groups:
        if group:
            relations += _across(cells, group)
    for scope in ("all", *arm_scopes, *(f"team:{t}" for t in team_scopes)):
        parts = tuple(key for key in cells if key[:2] == (scope, "category"))
        _ensure_zero(cells, parts)
        relations.append(Relation((scope, "spent_pence"), parts))
    derived: dict[Key, tuple[Key, ...]] = {
        (scope, name): tuple((scope, source) for source in sources)
        for scope in ("all", *arm_scopes, *(f"team:{t}" for t in team_scopes))
        for name, sources in _DERIVED.items()
    }
    hidden = hidden_cells(cells, relations, derived)
    small = frozenset(key for key in hidden if _small(cells[key].families) and not cells[key].known)
    return Published(
        arms={scope: _hide(scope, f, hidden, small) for scope, f in figures.items()},
        teams={
            team: _hide("all" if team == "all" else f"team:{team}", f, hidden, small)
            for team, f in teams.items()
        },
        hidden=frozenset(hidden),
        small=small,
    )


def _members(facts: Facts) -> dict[str, set[str]]:
    """Each scope's families: the pilot, each arm, each team."""
    found: dict[str, set[str]] = defaultdict(set)
    for family_id, family in facts.families.items():
        found["all"].add(family_id)
        found[family.arm].add(family_id)
        found[f"team:{family.team}"].add(family_id)
    return found


def _across(cells: dict[Key, Cell], group: Sequence[str]) -> list[Relation]:
    """The pilot's figure is the sum of the group's (its arms, or its teams)."""
    relations = [
        Relation(("all", name), tuple((scope, name) for scope in group)) for name in _ADDITIVE
    ]
    for kind in ("category", "outcome"):
        names = {key[2] for key in cells if key[1:2] == (kind,)}
        for name in sorted(names):
            parts = tuple((scope, kind, name) for scope in group)
            _ensure_zero(cells, (("all", kind, name), *parts))
            relations.append(Relation(("all", kind, name), parts))
    return relations


def _ensure_zero(cells: dict[Key, Cell], keys: Iterable[Key]) -> None:
    """A cell a scope has no family for still counts (as 0): the reader knows it is 0. In a
    scope of 1 to 4 families even that 0 says something of them: it rests on them all."""
    for key in keys:
        enrolled = cells.get((key[0], "families_enrolled"))
        size = enrolled.families if enrolled is not None and _small(enrolled.families) else 0
        known = enrolled.known if enrolled is not None else False
        cells.setdefault(key, Cell(size, known=known))


def _hide(scope: str, figures: Figures, hidden: set[Key], small: frozenset[Key]) -> Figures:
    update: dict[str, Any] = {}
    for name in Figures.model_fields:
        if (scope, name) in hidden:
            update[name] = "<5" if name in _COUNTS and (scope, name) in small else None
    # A hidden category or outcome is listed as hidden, even one of no family: left out, it
    # would read as 0.
    if figures.spent_by_category_pence is not None:
        spent = dict(figures.spent_by_category_pence)
        spent |= {key[2]: None for key in hidden if key[:2] == (scope, "category")}
        update["spent_by_category_pence"] = dict(sorted(spent.items()))
    outcomes: dict[str, int | str | None] = dict(figures.outcomes)
    outcomes |= {key[2]: None for key in hidden if key[:2] == (scope, "outcome")}
    update["outcomes"] = {
        o: ("<5" if (scope, "outcome", o) in small else None)
        if (scope, "outcome", o) in hidden
        else count
        for o, count in sorted(outcomes.items())
    }
    return figures.model_copy(update=update)
