"""The trial dataset: every column recomputed from what the test posted, the package accepted
by ``frictionless validate``, pseudonyms that only the pilot's secret links to families."""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.reporting.trial import pseudonym
from shared.core.custody import custody_of
from shared.core.personal import Sealer
from shared.core.settings import Settings
from tests.e2e.system import Client, System, auth, running_system
from tests.support import connect_service_db, wait_for

FRICTIONLESS = str(Path(sys.executable).parent / "frictionless")
OUTCOMES = ("entered_care", "child_protection_plan", "reunified", "remained_at_home", "case_closed")
CATEGORIES = ("practical", "therapeutic", "relationship", "other")


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure(
            allocation={
                "mode": "randomised",
                "treatment_ratio": 0.5,
                "method": "permuted_blocks",  # four families a stratum hold both arms
                "strata": ["older", "younger"],
            }
        )
        yield system


def expected_row(family: str) -> dict[str, Any]:
    return {
        "arm": "",
        "stratum": "",
        "enrolled_on": "",
        "exited_on": "",
        "allocated_pence": 0,
        "spent_pence": 0,
        "requests": 0,
        "approvals": 0,
        "rejections": 0,
        "told_budget": False,
        **{f"spent_{c}_pence": 0 for c in CATEGORIES},
        **{f"outcome_{o}_on": "" for o in OUTCOMES},
        "family": family,
    }


async def post(client: Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = await client.post(path, json=body, headers=headers)
    assert response.status in {200, 201, 202}, await response.text()
    return await response.json()


async def test_every_column_is_what_was_posted_and_frictionless_accepts_it(
    system: System, settings: Settings, tmp_path: Path
) -> None:
    expected = await _record_pilot(system)
    auditor = auth(system.token("auditor", "wigan"))

    async def complete() -> bytes | None:
        response = await system.reports.get("/pilots/wigan/trial-dataset", headers=auditor)
        assert response.status == 200, await response.text()
        assert response.content_type == "application/zip"
        body = await response.read()
        table = _table(body)
        done = sum(int(r["spent_pence"]) for r in table) == 3_200 and any(
            r["exited_on"] for r in table
        )
        return body if done else None

    body = await wait_for(complete, timeout=30)
    folder = tmp_path / "package"
    zipfile.ZipFile(io.BytesIO(body)).extractall(folder)
    process = await asyncio.create_subprocess_exec(
        FRICTIONLESS,
        "validate",
        "datapackage.json",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    report, _ = await process.communicate()
    assert process.returncode == 0, report.decode()

    secret = await _secret(settings)
    rows = {row["participant_id"]: row for row in _table(body)}
    assert len(rows) == len(expected)  # every enrolled family, in its arm (intention to treat)
    decisions = await _hours_to_decision(system)
    for family, want in expected.items():
        row = rows[pseudonym(secret, family)]
        assert family not in row["participant_id"]
        for column in (
            "arm",
            "stratum",
            "enrolled_on",
            "exited_on",
            *(f"outcome_{o}_on" for o in OUTCOMES),
        ):
            assert row[column] == want[column], (family, column)
        for column in (
            "allocated_pence",
            "spent_pence",
            "requests",
            "approvals",
            "rejections",
            *(f"spent_{c}_pence" for c in CATEGORIES),
        ):
            assert int(row[column]) == want[column], (family, column)
        assert row["told_budget"] == ("true" if want["told_budget"] else "false")
        hours = decisions.get(family)
        if hours:
            assert float(row["median_hours_to_decision"]) == pytest.approx(
                statistics.median(hours), abs=1e-4
            )
        else:
            assert row["median_hours_to_decision"] == ""
    again = await system.reports.get("/pilots/wigan/trial-dataset", headers=auditor)
    assert set(_table(await again.read())[0]) == set(next(iter(rows.values())))
    assert {r["participant_id"] for r in _table(await again.read())} == set(rows)  # stable

    refused = await system.reports.get("/pilots/wigan/trial-dataset", headers=system.manager())
    assert refused.status == 403


async def _record_pilot(system: System) -> dict[str, dict[str, Any]]:
    """Eight families in two strata, money, requests, purchases, a disclosure, outcomes and an
    exit: what each family's row must say."""
    expected: dict[str, dict[str, Any]] = {}
    for number in range(8):
        family = f"t{number}"
        row = expected[family] = expected_row(family)
        row["stratum"] = "older" if number % 2 else "younger"
        row["enrolled_on"] = f"2026-01-0{number + 1}"
        enrolled = await post(
            system.allocation,
            "/pilots/wigan/families",
            {
                "family_id": family,
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": row["enrolled_on"],
                "stratum": row["stratum"],
            },
            system.worker(),
        )
        row["arm"] = enrolled["arm"]
    treated = [f for f, row in expected.items() if row["arm"] == "treatment"]
    assert 2 <= len(treated) < len(expected)  # both arms, in both strata's blocks

    first, second = treated[0], treated[1]
    for family in treated:
        version = await system.allocate(family, 10_000)
        expected[family]["allocated_pence"] += 10_000
        expected[family]["version"] = version
    for family, amount, category, buy in (
        (first, 1_500, "practical", 1_200),
        (first, 2_000, "therapeutic", 2_000),
        (second, 3_000, "relationship", None),
        (second, 20_000, "practical", None),  # more than is left: rejected
    ):
        request = await system.request(
            family, amount, version=expected[family]["version"], category=category
        )
        expected[family]["requests"] += 1
        status = await system.settled(request["request_id"], "approved", "rejected")
        verdict = "approvals" if status["status"] == "approved" else "rejections"
        expected[family][verdict] += 1
        if buy is not None:
            await post(
                system.spending,
                f"/pilots/wigan/spend-requests/{request['request_id']}/purchases",
                {"amount_pence": buy, "purchased_on": "2026-03-05", "method": "card"},
                system.worker(),
            )
            expected[family]["spent_pence"] += buy
            expected[family][f"spent_{category}_pence"] += buy
    assert (expected[second]["approvals"], expected[second]["rejections"]) == (1, 1)
    await post(
        system.allocation,
        f"/pilots/wigan/families/{first}/disclosures",
        {"disclosed_on": "2026-02-01", "method": "letter"},
        system.worker(),
    )
    expected[first]["told_budget"] = True
    control = next(f for f, row in expected.items() if row["arm"] == "control")
    for family, outcome, day in (
        (first, "remained_at_home", "2026-06-01"),
        (control, "entered_care", "2026-05-01"),
        (control, "entered_care", "2026-07-01"),
    ):  # the first counts
        await post(
            system.allocation,
            f"/pilots/wigan/families/{family}/outcomes",
            {"outcome": outcome, "occurred_on": day},
            system.worker(),
        )
        expected[family][f"outcome_{outcome}_on"] = expected[family][f"outcome_{outcome}_on"] or day
    await post(
        system.allocation,
        f"/pilots/wigan/families/{control}/exit",
        {"reason": "moved away", "exited_on": "2026-08-01"},
        system.worker(),
    )
    expected[control]["exited_on"] = "2026-08-01"

    return expected


def _table(body: bytes) -> list[dict[str, str]]:
    with zipfile.ZipFile(io.BytesIO(body)) as package:
        text = package.read("trial-dataset.csv").decode()
    return list(csv.DictReader(io.StringIO(text)))


async def _secret(settings: Settings) -> bytes:
    """The pilot's secret, opened as reporting opens it: it is stored only sealed."""
    async with connect_service_db(settings, "reporting") as conn:
        sealed = await conn.fetchval("SELECT secret FROM trial_secrets WHERE pilot_id = 'wigan'")
        assert sealed.startswith("sealed:v1:")
        opened = await Sealer(custody_of(settings)).open(conn, "trial:wigan", sealed)
    assert opened is not None
    return bytes.fromhex(opened)


async def _hours_to_decision(system: System) -> dict[str, list[float]]:
    """Each family's hours from request to decision, from its recorded history: from when
    approval recorded the request to its decision, on approval's clock."""
    found: dict[str, list[float]] = {}
    for number in range(8):
        family = f"t{number}"
        response = await system.reports.get(
            f"/pilots/wigan/families/{family}/history", headers=system.admin()
        )
        events = (await response.json())["events"]
        requested = {
            e["data"]["request_id"]: datetime.fromisoformat(e["occurred_at"])
            for e in events
            if e["type"] == "spend_request.requested"
        }
        for e in events:
            if e["type"] in {"decision.approved", "decision.rejected"}:
                decided = datetime.fromisoformat(e["data"]["decided_at"])
                start = datetime.fromisoformat(e["data"]["received_at"])
                assert start >= requested[e["data"]["request_id"]] - timedelta(seconds=1)
                found.setdefault(family, []).append((decided - start).total_seconds() / 3600)
    return found
