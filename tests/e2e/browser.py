"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, by Selenium) that
sends a bearer token with every request, as a council's authenticating proxy would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["ARTEFACTS", "chromium"]

ARTEFACTS = Path(".local/artefacts")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(token: str | None) -> Iterator[webdriver.Chrome]:
    """A browser whose every request carries ``Authorization: Bearer <token>`` (with a
    token; without, a browser as a person has one)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        if token is not None:
            driver.execute_cdp_cmd("Network.enable", {})
            headers = {"Authorization": f"Bearer {token}"}
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        yield driver
    finally:
        driver.quit()
