"""The dashboard in a real headless Chromium: it loads cleanly, shows the figures, draws.

Debian's ``chromium`` and ``chromium-driver`` are driven by Selenium. The page wants a
bearer token like every endpoint; the browser sends it through the DevTools protocol, as
an authenticating proxy would in front of a council's deployment. Screenshots of a laptop
and a phone view are kept in ``.local/artefacts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from shared.core.settings import Settings
from tests.e2e.browser import ARTEFACTS, chromium
from tests.e2e.system import System, auth, running_system
from tests.support import wait_for

# family, amount requested, category, amount bought (None: approved, nothing bought yet)
SPENDING = [
    ("fam-1", 3_000, "practical", 1_500),
    ("fam-2", 20_000, "therapeutic", 20_000),
    ("fam-3", 8_000, "relationship", 8_000),
    ("fam-4", 5_000, "practical", None),
]


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        yield system


async def seed(system: System) -> None:
    """Six families, four requests, three purchases: 3 families with spend, shown as <5."""
    for number in range(1, 7):
        await system.enrol(f"fam-{number}", allocate=100_000)
    for family, amount, category, bought in SPENDING:
        request_id = (await system.request(family, amount, category=category))["request_id"]
        await system.settled(request_id, "approved")
        if bought is not None:
            response = await system.spending.post(
                f"/pilots/wigan/spend-requests/{request_id}/purchases",
                json={"amount_pence": bought, "purchased_on": "2026-03-02", "method": "card"},
                headers=system.worker(),
            )
            assert response.status == 201, await response.text()


SIZES = {"laptop": (1366, 900), "phone": (390, 844)}
# Each row of the figures table: the uptake endpoint's field, and how it is written.
ROWS = {
    "Families enrolled": ("families_enrolled", "count"),
    "Families with a request": ("families_with_request", "count"),
    "Families with spend": ("families_with_spend", "count"),
    "Uptake rate": ("uptake_rate", "share"),
    "Requests": ("requests", "count"),
    "Approved": ("approved", "count"),
    "Rejected": ("rejected", "count"),
    "Allocated": ("allocated_pence", "money"),
    "Spent (purchases minus refunds)": ("spent_pence", "money"),
    "Spend against forecast": ("spend_vs_forecast", "share"),
    "Median transaction": ("median_transaction_pence", "money"),
    "Transactions under £20": ("share_transactions_under_2000_pence", "share"),
    "Median hours to decision": ("median_hours_to_decision", "hours"),
    "Requests with the family involved": ("share_requests_family_involved", "share"),
    "Families told their budget": ("share_families_told_budget", "share"),
}


def _shown(value: Any, kind: str) -> str:
    """A figure as the page should write it."""
    if value is None:
        return "\u2013"
    if isinstance(value, str):
        return value
    return {
        "count": lambda: f"{value:,}",
        "share": lambda: f"{value * 100:.1f}%",
        "money": lambda: f"£{value // 100:,}.{value % 100:02d}",
        "hours": lambda: f"{value:.1f}",
    }[kind]()


# Chart text outside its chart's viewBox (cut off), and sections that scroll sideways.
_CLIPPED_TEXT = """
return [...document.querySelectorAll('svg')].flatMap(svg => {
  const box = svg.viewBox.baseVal;
  return [...svg.querySelectorAll('text')].filter(text => {
    const b = text.getBBox();
    return b.x < -0.5 || b.x + b.width > box.width + 0.5;
  }).map(text => text.textContent);
})"""
_SCROLLING_SECTIONS = """
return [...document.querySelectorAll('section')]
  .filter(s => s.scrollWidth > s.clientWidth + 1)
  .map(s => s.querySelector('h2').textContent)"""


def _table(driver: Any, table: str) -> dict[str, list[str]]:
    return {
        row.find_element(By.TAG_NAME, "th").text: [
            cell.text for cell in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    }


def browse(url: str, token: str) -> dict[str, Any]:
    """Open the page as a laptop and as a phone; what the page showed, and its console."""
    with chromium(token) as driver:
        seen: dict[str, Any] = {}
        for name, (width, height) in SIZES.items():
            driver.set_window_size(width, height)
            driver.get(url)
            seen[name] = {
                "overflow": driver.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                ),
                "clipped_text": driver.execute_script(_CLIPPED_TEXT),
                "scrolling_sections": driver.execute_script(_SCROLLING_SECTIONS),
            }
            driver.save_screenshot(str(ARTEFACTS / f"dashboard-{name}.png"))
        seen |= {
            "title": driver.title,
            "figures": _table(driver, "figures"),
            "teams": _table(driver, "teams"),
            "charts": {
                svg.get_attribute("aria-label"): {
                    label.text: value.text
                    for label, value in zip(
                        svg.find_elements(By.CSS_SELECTOR, "text.label"),
                        svg.find_elements(By.CSS_SELECTOR, "text.value"),
                        strict=True,
                    )
                }
                for svg in driver.find_elements(By.TAG_NAME, "svg")
            },
            "drawn_bars": driver.execute_script(
                "return [...document.querySelectorAll('svg rect')]"
                ".filter(r => r.getBoundingClientRect().width > 0).length"
            ),
            "console": driver.get_log("browser"),  # type: ignore[no-untyped-call]
        }
        return seen


async def test_dashboard_in_a_browser_shows_the_pilot_and_draws_its_charts(
    system: System, token: Callable[..., str]
) -> None:
    assert system.reporting is not None
    await seed(system)
    admin = system.admin()

    async def spent() -> bool:
        assert system.reporting is not None
        response = await system.reporting.get("/pilots/wigan/uptake", headers=admin)
        return bool((await response.json())["all"]["spent_pence"] == 29_500)

    await wait_for(spent, timeout=30)
    unauthenticated = await system.reporting.get("/pilots/wigan/dashboard")
    assert unauthenticated.status == 401
    url = str(system.reporting.make_url("/pilots/wigan/dashboard"))
    seen = await asyncio.to_thread(browse, url, token("auditor", "wigan", sub="aud-1"))

    assert seen["console"] == []
    assert seen["title"] == "Wigan: devolved budgets"
    figures = seen["figures"]
    published = await system.reporting.get(
        "/pilots/wigan/uptake?suppress_small_cells=true", headers=admin
    )
    uptake = (await published.json())["all"]
    for label, (field, kind) in ROWS.items():  # the page says what the endpoint says
        assert figures[label] == [_shown(uptake[field], kind)], label
    assert figures["Families enrolled"] == ["6"]
    assert figures["Families with a request"] == ["<5"]
    assert figures["Families with spend"] == ["<5"]
    # Fewer than five families requested and spent: all that rests on them is left out,
    # money and the charts of it too (before, £295.00 and each category's spend showed).
    for hidden in (
        "Uptake rate",
        "Requests",
        "Approved",
        "Spent (purchases minus refunds)",
        "Median transaction",
        "Transactions under £20",
    ):
        assert figures[hidden] == ["\u2013"], hidden
    charts = seen["charts"]
    assert "Spend by category" not in charts
    assert "Purchases by size" not in charts
    assert "Requests by time to first decision" not in charts
    assert charts["Families with spend so far, at the end of each month, to the nearest five"] == {
        "Mar 2026": "<5"
    }
    assert "Spend per month" not in charts  # it rests on fewer than five families too
    assert charts["Families by the share of their budget used"] == {
        "none of it": "<5",
        "under a quarter": "<5",
        "a quarter to a half": "0",
        "a half to three quarters": "0",
        "three quarters or more": "0",
        "all of it": "0",
    }
    assert seen["drawn_bars"] == 0  # suppressed counts are not drawn to scale either
    assert seen["teams"]["Families enrolled"] == ["6"]
    for name in SIZES:
        assert seen[name]["overflow"] <= 0, name  # no sideways scrolling of the page
        assert seen[name]["clipped_text"] == [], name
        assert seen[name]["scrolling_sections"] == [], name
        assert (ARTEFACTS / f"dashboard-{name}.png").stat().st_size > 10_000


async def test_both_arms_and_every_team_fit_a_phone_and_a_laptop(
    settings: Settings, token: Callable[..., str]
) -> None:
    """A randomised pilot in two teams: the figures of the pilot and each arm, the outcomes
    and the teams show side by side without the page or any card scrolling sideways (before,
    the phone's table was 552 px wide and hid the arms), and they are the endpoint's."""
    async with running_system(settings, token, reporting=True) as system:
        await system.configure(
            allocation={"mode": "randomised", "treatment_ratio": 0.5, "method": "permuted_blocks"},
            family_cap_pence=1_000_000,
        )
        arms = {}
        for number in range(14):
            family, team = f"fam-{number}", f"t-{1 + number % 2}"
            response = await system.allocation.post(
                "/pilots/wigan/families",
                json={
                    "family_id": family,
                    "team": team,
                    "worker": "sw-1",
                    "enrolled_on": "2026-01-05",
                },
                headers=system.admin(),
            )
            assert response.status == 201, await response.text()
            arms[family] = (await response.json())["arm"], team
        for family, (arm, team) in arms.items():
            if arm == "treatment":
                version = await system.allocate(family, 402_010)
                request = await system.request(family, 40_000, version=version, team=team)
                await system.settled(request["request_id"], "approved")
            outcome = await system.allocation.post(
                f"/pilots/wigan/families/{family}/outcomes",
                json={"outcome": "remained_at_home", "occurred_on": "2026-06-01"},
                headers=system.admin(),
            )
            assert outcome.status == 201
        assert system.reporting is not None
        admin = system.admin()

        async def counted() -> dict[str, Any] | None:
            assert system.reporting is not None
            answer = await system.reporting.get("/pilots/wigan/uptake", headers=admin)
            body = dict(await answer.json())
            return (
                body
                if body["all"]["approved"]
                == list(arms.values()).count(("treatment", "t-1"))
                + list(arms.values()).count(("treatment", "t-2"))
                else None
            )

        await wait_for(counted, timeout=30)
        manager = token("manager", "wigan", sub="m-1", team="t-1")
        published = await system.reporting.get(  # as the manager sees them: the page's
            "/pilots/wigan/uptake?suppress_small_cells=true", headers=auth(manager)
        )
        uptake = await published.json()
        url = str(system.reporting.make_url("/pilots/wigan/dashboard"))
        seen = await asyncio.to_thread(browse, url, manager)
    scopes = [uptake["all"], *uptake["arms"].values()]  # as the page orders its columns
    for label, (field, kind) in ROWS.items():
        assert seen["figures"][label] == [_shown(s[field], kind) for s in scopes], label
    assert set(seen["teams"]["Families enrolled"]) == {"7"}
    for name in SIZES:
        assert seen[name]["overflow"] <= 0, name
        assert seen[name]["clipped_text"] == [], name
        assert seen[name]["scrolling_sections"] == [], name
