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
from tests.e2e.system import System, running_system
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


def browse(url: str, token: str) -> dict[str, Any]:
    """Open the page as a laptop and as a phone; what the page showed, and its console."""
    with chromium(token) as driver:
        driver.set_window_size(1280, 1600)
        driver.get(url)
        seen: dict[str, Any] = {
            "title": driver.title,
            "figures": {
                row.find_element(By.TAG_NAME, "th").text: [
                    cell.text for cell in row.find_elements(By.TAG_NAME, "td")
                ]
                for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr")
            },
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
        }
        driver.save_screenshot(str(ARTEFACTS / "dashboard-laptop.png"))
        driver.set_window_size(390, 844)
        driver.get(url)
        seen["phone_overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        driver.save_screenshot(str(ARTEFACTS / "dashboard-phone.png"))
        seen["console"] = driver.get_log("browser")  # type: ignore[no-untyped-call]
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
    assert charts["Families with spend at the end of each month"] == {"2026-03": "<5"}
    assert seen["drawn_bars"] == 0  # the suppressed month is not drawn to scale either
    assert seen["phone_overflow"] <= 0
    assert (ARTEFACTS / "dashboard-laptop.png").stat().st_size > 10_000
