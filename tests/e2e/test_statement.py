"""A family's budget statement in a real headless Chromium, on a laptop and a phone: the
figures the balance gives, what was spent on what (the sealed purpose only when the worker
chooses), readable text, no sideways scrolling, nothing cached; the worker's disclosure then
counts."""

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

SIZES = {"laptop": (1366, 900), "phone": (390, 844)}


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        yield system


def browse(url: str, token: str, artefact: str = "statement") -> dict[str, dict[str, Any]]:
    """What the page showed at each size, and how it laid out (screenshots kept)."""
    seen = {}
    with chromium(token) as driver:
        for name, (width, height) in SIZES.items():
            driver.set_window_size(width, height)
            driver.get(url)
            seen[name] = {
                "summary": {
                    item.find_element(By.TAG_NAME, "span").text: item.find_element(
                        By.TAG_NAME, "strong"
                    ).text
                    for item in driver.find_elements(By.CSS_SELECTOR, ".summary li")
                },
                "rows": [
                    [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                    for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr")
                ],
                "text": driver.find_element(By.TAG_NAME, "body").text,
                "overflow": driver.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                ),
                # The smallest text size anywhere on the page, in CSS pixels.
                "smallest_font": driver.execute_script(
                    "return Math.min(...[...document.querySelectorAll('body *')]"
                    ".filter(e => e.innerText && e.innerText.trim())"
                    ".map(e => parseFloat(getComputedStyle(e).fontSize)))"
                ),
                "clipped": driver.execute_script(
                    "return [...document.querySelectorAll('td, strong, span, p, h1, h2')]"
                    ".filter(e => e.scrollWidth > e.clientWidth + 1).length"
                ),
                "console": driver.get_log("browser"),  # type: ignore[no-untyped-call]
            }
            driver.save_screenshot(str(ARTEFACTS / f"{artefact}-{name}.png"))
    return seen


async def test_a_family_reads_its_statement_on_a_phone_and_on_a_laptop(
    system: System, token: Callable[..., str]
) -> None:
    version = await system.enrol("fam-1", allocate=50_000)
    top_up = await system.allocation.post(
        "/pilots/wigan/families/fam-1/adjustments",
        json={"delta_pence": 5_000, "reason": "school trip"},
        headers=system.admin(),
    )
    assert top_up.status == 201
    bought = (await system.request("fam-1", 12_000, version=version, category="therapeutic"))[
        "request_id"
    ]
    await system.settled(bought, "approved")
    purchase = await system.spending.post(
        f"/pilots/wigan/spend-requests/{bought}/purchases",
        json={"amount_pence": 11_500, "purchased_on": "2026-03-05", "method": "card"},
        headers=system.worker(),
    )
    assert purchase.status == 201
    held = (await system.request("fam-1", 4_000, version=version))["request_id"]
    await system.settled(held, "approved")

    async def balance() -> dict[str, Any] | None:
        response = await system.reports.get(
            "/pilots/wigan/families/fam-1/balance", headers=system.admin()
        )
        body = dict(await response.json())
        # 500 of the first hold stays set aside until its request is closed.
        done = body["spent_pence"] == 11_500 and body["committed_pence"] == 4_500
        return body if done else None

    figures = await wait_for(balance, timeout=30)
    url = "/pilots/wigan/families/fam-1/statement"
    answer = await system.reports.get(url, headers=system.worker())
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = await answer.text()
    assert "school uniform" not in page  # the sealed purpose: not unless the worker chooses
    assert "sealed:" not in page
    assert "<script" not in page

    worker = token("social_worker", "wigan", sub="sw-1", team="t-1")
    seen = await asyncio.to_thread(browse, str(system.reports.make_url(url)), worker)
    for name, shown in seen.items():
        assert shown["console"] == [], name
        assert shown["overflow"] <= 0, name  # no sideways scrolling
        assert shown["clipped"] == 0, name
        assert shown["smallest_font"] >= 16, name  # readable without zooming
        assert shown["summary"] == {
            "Given to you": _pounds(figures["allocated_pence"]),
            "Spent": _pounds(figures["spent_pence"]),
            "Set aside for agreed things": _pounds(figures["committed_pence"]),
            "Left to spend": _pounds(figures["available_pence"]),
        }, name
        assert ["Budget given", "£500.00"] in [row[1:] for row in shown["rows"]]
        assert ["Budget added", "£50.00"] in [row[1:] for row in shown["rows"]]
        assert ["5 March 2026", "Therapeutic", "£115.00"] in shown["rows"]
        assert "went through your budget" not in shown["text"]
        assert (ARTEFACTS / f"statement-{name}.png").stat().st_size > 5_000

    # The worker chooses to show what each thing was for: spending opens it, in their name.
    with_purposes = f"{url}?include_purposes=true"
    answer = await system.reports.get(with_purposes, headers=system.worker())
    assert answer.status == 200, await answer.text()
    assert answer.headers["Cache-Control"] == "no-store"
    assert (await answer.text()).count("For: school uniform and shoes") == 1  # one purchase
    seen = await asyncio.to_thread(
        browse, str(system.reports.make_url(with_purposes)), worker, "statement-purposes"
    )
    for name, shown in seen.items():
        assert shown["overflow"] <= 0, name
        assert shown["clipped"] == 0, name
        assert shown["smallest_font"] >= 16, name
        row = ["5 March 2026", "Therapeutic\nFor: school uniform and shoes", "£115.00"]
        assert row in shown["rows"], (name, shown["rows"])
        assert "Your worker chose to show what each thing was for" in shown["text"], name
    for caller, status in ((system.worker(team="t-9"), 404), (system.finance(), 403)):
        refused = await system.reports.get(with_purposes, headers=caller)
        assert refused.status == status
        assert "school uniform" not in await refused.text()

    # The worker goes through it with the family and records so: a disclosure.
    told = await system.allocation.post(
        "/pilots/wigan/families/fam-1/disclosures",
        json={"disclosed_on": "2026-03-06", "method": "in_person"},
        headers=system.worker(),
    )
    assert told.status == 201

    async def shared() -> bool:
        again = await system.reports.get(url, headers=system.worker())
        return "went through your budget with you on 6 March 2026" in await again.text()

    await wait_for(shared, timeout=30)
    uptake = await system.reports.get("/pilots/wigan/uptake", headers=system.admin())
    assert (await uptake.json())["all"]["share_families_told_budget"] == 1.0

    other_team = await system.reports.get(url, headers=system.worker(team="t-9"))
    assert other_team.status == 404  # as a family that does not exist
    finance = await system.reports.get(url, headers=system.finance())
    assert finance.status == 403


def _pounds(pence: int) -> str:
    return f"£{pence // 100:,}.{pence % 100:02d}"
