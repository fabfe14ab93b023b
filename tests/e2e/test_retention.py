"""Retention on a schedule: a pilot's policy erases an exited family's free text when its
time comes (the allocation service's own clock, moved by the test), once, as an event in the
family's history and a count in metrics; ``ledger retention run`` does the same on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.allocation.app import create_app as allocation_app
from services.reporting.app import create_app as reporting_app
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.registry import ledger_topics
from tests.conftest import Infrastructure
from tests.e2e.system import WIGAN, Client, auth
from tests.support import connect_service_db, run_ledger, serve, wait_for

POLICY = {"retention": {"free_text_months_after_exit": 1}}


async def enrol_and_exit(
    allocation: Client, headers: dict[str, str], family: str, enrolled: datetime, exited: datetime
) -> None:
    answers = [
        await allocation.post(
            "/pilots/wigan/families",
            json={
                "family_id": family,
                "team": "t-1",
                "worker": "sw-1",
                "enrolled_on": enrolled.date().isoformat(),
            },
            headers=headers,
        ),
        await allocation.post(
            f"/pilots/wigan/families/{family}/outcomes",  # free text is sealed in notes too
            json={"outcome": "case_closed", "occurred_on": exited.date().isoformat()},
            headers=headers,
        ),
        await allocation.post(
            f"/pilots/wigan/families/{family}/exit",
            json={"reason": "moved to another council", "exited_on": exited.date().isoformat()},
            headers=headers,
        ),
    ]
    for answer in answers:
        assert answer.status in {200, 201}, await answer.text()  # an exit answers 200


async def erasures(settings: Settings, family: str) -> list[dict[str, Any]]:
    async with connect_service_db(settings, "allocation") as conn:
        rows = await conn.fetch(
            "SELECT envelope->'data' AS data FROM events "
            "WHERE family_id = $1 AND type = 'family.personal_data_erased'",
            family,
        )
    return [dict(json.loads(row["data"])) for row in rows]


async def test_the_policy_erases_once_when_the_services_clock_reaches_it(
    infra: Infrastructure, token: Callable[..., str]
) -> None:
    settings = infra.settings(retention_interval_seconds=0.2)
    await ensure_topics(settings, ledger_topics())
    shift = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + shift

    today = clock()
    admin = auth(token("admin", "wigan", sub="admin-1"))
    async with serve(
        settings, "allocation", lambda s: allocation_app(s, clock=clock)
    ) as allocation:
        configured = await allocation.put("/pilots/wigan", json={**WIGAN, **POLICY}, headers=admin)
        assert configured.status == 201, await configured.text()
        await enrol_and_exit(
            allocation, admin, "fam-1", today - timedelta(days=20), today - timedelta(days=10)
        )
        await asyncio.sleep(1)  # sweeps run: nothing is due yet
        assert await erasures(settings, "fam-1") == []

        shift = timedelta(days=25)  # a month after the exit has passed
        await wait_for(lambda: erasures(settings, "fam-1"), timeout=15)
        await asyncio.sleep(1)  # later sweeps find it done
        [erased] = await erasures(settings, "fam-1")
        assert erased["basis"] == "retention_expired"
        assert erased["erased_on"] == clock().date().isoformat()
        metrics = await (await allocation.get("/metrics")).text()
        assert "ledger_retention_erasures_total 1.0" in metrics


async def test_ledger_retention_run_lists_then_erases_and_the_history_shows_it(
    infra: Infrastructure, token: Callable[..., str]
) -> None:
    settings = infra.settings()  # the service sweeps hourly: the command is what acts here
    await ensure_topics(settings, ledger_topics())
    today = datetime.now(UTC)
    admin = auth(token("admin", "wigan", sub="admin-1"))
    async with (
        serve(settings, "allocation", allocation_app) as allocation,
        serve(settings, "reporting", reporting_app) as reporting,
    ):
        config = {**WIGAN, **POLICY, "backdating_days": 366}
        configured = await allocation.put("/pilots/wigan", json=config, headers=admin)
        assert configured.status == 201, await configured.text()
        await enrol_and_exit(
            allocation, admin, "fam-old", today - timedelta(days=120), today - timedelta(days=100)
        )
        await enrol_and_exit(
            allocation, admin, "fam-recent", today - timedelta(days=30), today - timedelta(days=5)
        )

        code, output = await run_ledger(settings, "retention", "run", "--dry-run")
        assert code == 0
        assert "wigan fam-old:" in output
        assert "fam-recent" not in output
        assert output.strip().endswith("1 family due")
        assert await erasures(settings, "fam-old") == []  # a dry run changes nothing

        code, output = await run_ledger(settings, "retention", "run")
        assert (code, output.strip().endswith("1 family erased")) == (0, True)
        code, output = await run_ledger(settings, "retention", "run")
        assert (code, output.strip()) == (0, "0 families erased")  # idempotent
        assert len(await erasures(settings, "fam-old")) == 1

        async def in_history() -> list[dict[str, Any]]:
            answer = await reporting.get("/pilots/wigan/families/fam-old/history", headers=admin)
            if answer.status != 200:
                return []
            events = (await answer.json())["events"]
            return [e for e in events if e["type"] == "family.personal_data_erased"]

        [shown] = await wait_for(in_history, timeout=30)
        assert shown["data"]["basis"] == "retention_expired"
        assert shown["actor"]["sub"] == "ledger/retention"
        notes = await allocation.get("/pilots/wigan/families/fam-old/notes", headers=admin)
        assert "moved to another council" not in await notes.text()
