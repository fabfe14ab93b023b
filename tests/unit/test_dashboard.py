"""The dashboard's charts from hand-made facts, and the page's small cells."""

from __future__ import annotations

from datetime import UTC, datetime

from services.reporting.dashboard import Bar, charts, render
from services.reporting.uptake import compute, gather, suppress
from shared.core.events import Envelope
from tests.unit.test_uptake import event, history


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
    assert [bar.label for bar in months] == [
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-06",
        "2026-07",
        "2026-08",
        "2026-09",
        "2026-10",
        "2026-11",
        "2026-12",
        "2027-01",
    ]
    assert [bar.value for bar in months] == [0] * 8 + [1, 1, 1]
    assert months[-1] == Bar("2027-01", 1, "<5")


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
    figures = suppress(compute(facts, 100_000))
    page = render("p", "<Wigan & co>", datetime(2026, 3, 9, tzinfo=UTC), figures, charts(facts))
    assert "&lt;Wigan &amp; co&gt;" in page
    assert "<Wigan" not in page
    assert "<td>&lt;5</td>" in page
    assert "Treatment arm" in page
    assert "Control arm" in page
