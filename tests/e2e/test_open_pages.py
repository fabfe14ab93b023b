"""``ledger open``: the dashboard and a statement in a real browser on the local stack,
with no hand-made header. The page it writes posts a local token to reporting's sign-in,
which keeps it in an HttpOnly, SameSite=Strict cookie that only the pilot's pages take."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.wait import WebDriverWait

from services.reporting.signin import FORM, SIGN_IN_PATH
from shared.core.settings import Settings
from shared.web.http import PAGE_COOKIE
from tests.e2e.browser import chromium
from tests.e2e.system import System, running_system
from tests.support import run_ledger


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        await system.enrol("fam-1", allocate=100_000)
        yield system


async def _opener(system: System, settings: Settings, *args: str) -> Path:
    """The page ``ledger open`` writes, for reporting where it runs in this test."""
    port = system.reports.server.port
    assert port is not None
    code, output = await run_ledger(
        settings.with_port("reporting", port), "open", *args, "--pilot", "wigan", "--print"
    )
    assert code == 0, output
    return Path(output.strip())


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, page
    return html.unescape(found.group(1))


def _browse(opener: Path, page: str) -> dict[str, Any]:
    """Open the page ``ledger open`` wrote, as a person would: no header of ours."""
    with chromium(None) as driver:
        driver.get(opener.as_uri())
        WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith(page))
        return {"url": driver.current_url, "title": driver.title, "text": driver.page_source}


async def test_ledger_open_shows_the_dashboard_and_a_statement_in_a_browser(
    system: System, settings: Settings
) -> None:
    opener = await _opener(system, settings, "dashboard")
    assert oct(opener.stat().st_mode & 0o777) == "0o600"  # it holds a token
    seen = await asyncio.to_thread(_browse, opener, "/pilots/wigan/dashboard")
    assert seen["url"].endswith("/pilots/wigan/dashboard"), seen["url"]
    assert "Wigan" in seen["title"], seen["title"]

    opener = await _opener(system, settings, "statement", "--family", "fam-1")
    seen = await asyncio.to_thread(_browse, opener, "/families/fam-1/statement")
    assert seen["url"].endswith("/pilots/wigan/families/fam-1/statement"), seen["url"]
    assert "£1,000.00" in seen["text"]


async def test_the_cookie_opens_pages_only_of_its_pilot_and_no_api_call(
    system: System, settings: Settings, token: Callable[..., str]
) -> None:
    page = (await _opener(system, settings, "dashboard")).read_text()
    form = {"token": _field(page, "token"), "next": _field(page, "next")}
    headers = {"Content-Type": FORM}
    signed_in = await system.reports.post(SIGN_IN_PATH, data=form, headers=headers)
    assert signed_in.status == 200, await signed_in.text()
    cookie = signed_in.cookies[PAGE_COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/pilots/wigan/"
    jar = {PAGE_COOKIE: cookie.value}
    dashboard = await system.reports.get("/pilots/wigan/dashboard", cookies=jar)
    assert dashboard.status == 200
    uptake = await system.reports.get("/pilots/wigan/uptake", cookies=jar)
    assert uptake.status == 401  # an API call takes a bearer header, never the cookie

    refusals = {
        "https://elsewhere.example/": 422,  # never sent on to another site
        "/pilots/wigan/uptake": 422,  # nor to anything but a page
    }
    for target, status in refusals.items():
        answer = await system.reports.post(
            SIGN_IN_PATH, data={**form, "next": target}, headers=headers
        )
        assert answer.status == status, (target, await answer.text())
    leeds = token("admin", "leeds", sub="a-1")
    answer = await system.reports.post(
        SIGN_IN_PATH, data={"token": leeds, "next": "/pilots/wigan/dashboard"}, headers=headers
    )
    assert answer.status == 403
    forged = await system.reports.post(
        SIGN_IN_PATH, data={**form, "token": form["token"][:-2] + "xx"}, headers=headers
    )
    assert forged.status == 401
