"""The dashboard's charts from hand-made facts, and the page's small cells."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from services.reporting.dashboard import Bar, charts, render
from services.reporting.uptake import by_team, compute, gather
from shared.core.events import Envelope
from tests.unit.test_uptake import event, history, publishing


def purchase(family: str, pence: int, day: str) -> Envelope:
    return event(
        "purchase.recorded", family, amount_pence=pence, category="practical", purchased_on=day
    )


def test_families_with_spend_by_month_counts_net_spend_at_each_month_end() -> None:
    """Given purchases over months and a full refund, when charted, months without purchases
    still appear and a refunded family stops counting."""
    facts = gather(
        [
            event("family.enrolled", "a", arm="treatment"),
            event("family.enrolled", "b", arm="treatment"),
            purchase("a", 1_000, "2026-11-03"),
            purchase("b", 2_000, "2026-11-20"),
            event("purchase.refunded", "b", amount_pence=2_000, category="practical"),
            purchase("a", 500, "2027-01-09"),
        ]
    )
    months = charts(facts).families_with_spend
    # The refund's date of record is START (2026-03-02), before every purchase here.
    # Months are named as people say them (before, "2026-03").
    assert [bar.label for bar in months] == [
        "Mar 2026",
        "Apr 2026",
        "May 2026",
        "Jun 2026",
        "Jul 2026",
        "Aug 2026",
        "Sep 2026",
        "Oct 2026",
        "Nov 2026",
        "Dec 2026",
        "Jan 2027",
    ]
    assert [bar.value for bar in months] == [0] * 8 + [1, 1, 1]
    assert months[-1] == Bar("Jan 2027", 1, "<5", families=1)
    # Spend per month is not cumulative: each month's purchases less its refunds.
    spend = {bar.label: bar.value for bar in charts(facts).spend_by_month}
    assert (spend["Mar 2026"], spend["Nov 2026"], spend["Dec 2026"], spend["Jan 2027"]) == (
        -2_000,
        3_000,
        0,
        500,
    )


def test_sizes_and_decision_times_fall_in_their_bands() -> None:
    """Given the uptake history, the size bands count purchases (not refunds) and the decision
    bands count each decided request once."""
    chart = charts(gather(history()))
    sizes = {bar.label: bar.value for bar in chart.transaction_sizes}
    assert sizes["under £20"] == 2
    assert sizes["£250 to £500"] == 1
    assert sum(sizes.values()) == 3
    hours = {bar.label: bar.value for bar in chart.time_to_decision}
    assert (hours["under an hour"], hours["1 to 4 hours"]) == (1, 2)
    assert sum(hours.values()) == 3
    assert {bar.label: bar.shown for bar in chart.spend_by_category} == {
        "practical": "£295.00",
        "relationship": "£34.99",
    }


def test_the_page_shows_small_cells_as_fewer_than_five_and_escapes_names() -> None:
    facts = gather(history())
    published = publishing(facts, 100_000)
    page = render(
        "p",
        "<Wigan & co>",
        datetime(2026, 3, 9, tzinfo=UTC),
        published.arms,
        published.teams,
        charts(facts),
    )
    assert "&lt;Wigan &amp; co&gt;" in page
    assert "<Wigan" not in page
    assert "<td>&lt;5</td>" in page
    assert "Treatment arm" in page
    assert "Control arm" in page


def test_budget_used_bands_families_with_a_budget_by_the_share_they_spent() -> None:
    """Given families with budgets spent none, a little, half and all of, each is counted in
    its band, as published (1 to 4 families read "<5"), and families without one are not."""
    allocated = [
        event("family.budget_allocated", family, amount_pence=10_000, allocation_id=family)
        for family in ("none", "some", "half", "all")
    ]
    facts = gather(
        [
            *(event("family.enrolled", f, arm="treatment") for f in ("none", "some", "half")),
            event("family.enrolled", "all", arm="treatment"),
            event("family.enrolled", "control", arm="control"),
            *allocated,
            purchase("some", 1_000, "2026-03-05"),
            purchase("half", 5_000, "2026-03-05"),
            purchase("all", 10_000, "2026-03-05"),
        ]
    )
    used = {bar.label: (bar.value, bar.shown) for bar in charts(facts).budget_used}
    assert used["none of it"] == (1, "<5")
    assert used["under a quarter"] == (1, "<5")
    assert used["a half to three quarters"] == (1, "<5")
    assert used["all of it"] == (1, "<5")
    assert sum(value for value, _ in used.values()) == 4  # not the control family


def test_every_chart_leaves_room_for_its_longest_value() -> None:
    """The largest bar's value is written inside the chart (before, "£4,020.1" was cut off)."""
    facts = gather(
        [
            event("family.enrolled", "a", arm="treatment"),
            purchase("a", 402_010, "2026-03-05"),
        ]
    )
    page = render(
        "p",
        "P",
        datetime(2026, 3, 9, tzinfo=UTC),
        compute(facts, None),
        by_team(facts, None),
        charts(facts),
    )
    checked = 0
    for width, svg in re.findall(r"<svg viewBox='0 0 (\d+) \d+'(.*?)</svg>", page, re.DOTALL):
        for x, text in re.findall(r"<text class='value' x='(\d+)'[^>]*>([^<]*)</text>", svg):
            # 13 px text is about 7.5 px a character wide.
            assert int(x) + 7.5 * len(text) <= int(width), (text, x, width)
            checked += 1
    assert checked >= 3
