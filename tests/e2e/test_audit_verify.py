"""``ledger audit verify``: ok on an untouched ledger; names an altered, removed or moved event."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from uuid import UUID

import pytest

from services.allocation.app import create_app
from shared.cli import migrate
from shared.settings import Settings
from tests.e2e.system import Client, auth
from tests.support import connect_service_db, read_topic, serve

LEDGER = str(Path(sys.executable).parent / "ledger")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    await migrate(settings, ["spending", "approval"])  # their (empty) stores are verified too
    async with serve(settings, "allocation", create_app) as client:
        yield client


async def run_verify(settings: Settings) -> tuple[int, str]:
    """The CLI as an auditor runs it, against this test's databases and topics."""
    env = {
        **os.environ,
        "LEDGER_PG_PORT": str(settings.pg_port),
        "LEDGER_PG_USER": settings.pg_user,
        "LEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEDGER_DATABASE_PREFIX": settings.database_prefix,
        "LEDGER_TOPIC_PREFIX": settings.topic_prefix,
    }
    process = await asyncio.create_subprocess_exec(
        LEDGER,
        "audit",
        "verify",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_verify_names_the_first_broken_link(
    client: Client, settings: Settings, token: Callable[..., str]
) -> None:
    """Untouched: ok. Altered amount, removed event, swapped events: exit 1, the event named."""
    admin = auth(token("admin", "wigan"))
    await client.put(
        "/pilots/wigan",
        json={
            "name": "Wigan",
            "period_months": 12,
            "family_cap_pence": 400_000,
            "categories": ["other"],
        },
        headers=admin,
    )
    for family in ("fam-a", "fam-b", "fam-c"):
        await client.post(
            "/pilots/wigan/families",
            json={"family_id": family, "team": "t", "worker": "w", "enrolled_on": "2026-01-05"},
            headers=admin,
        )
        for amount in (1_000, 2_000, 3_000):
            response = await client.post(
                f"/pilots/wigan/families/{family}/allocations",
                json={"amount_pence": amount},
                headers=admin,
            )
            assert response.status == 201
    await read_topic(settings, "ledger.allocation", expect=1 + 3 * 4)
    code, output = await run_verify(settings)
    assert code == 0, output
    assert "ok:" in output

    async with connect_service_db(settings, "allocation") as conn:
        # Tampering needs the database's owner to switch off the guard on events.
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_immutable")
        rows = {
            (row["stream_id"], row["stream_version"]): row
            for row in await conn.fetch(
                "SELECT position, stream_id, stream_version, event_id, envelope FROM events"
            )
        }

        async def expect_broken(event_id: UUID, words: str) -> None:
            code, output = await run_verify(settings)
            assert code == 1, output
            broken = [line for line in output.splitlines() if line.startswith("broken:")]
            assert any(str(event_id) in line and words in line for line in broken), output

        altered = rows[("family:wigan:fam-a", 3)]
        await conn.execute(
            "UPDATE events SET envelope = jsonb_set(envelope, '{data,amount_pence}', '99999') "
            "WHERE position = $1",
            altered["position"],
        )
        await expect_broken(altered["event_id"], "altered")
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            altered["position"],
            altered["envelope"],
        )
        assert (await run_verify(settings))[0] == 0

        removed = rows[("family:wigan:fam-b", 2)]
        await conn.execute("DELETE FROM events WHERE position = $1", removed["position"])
        await expect_broken(rows[("family:wigan:fam-b", 3)]["event_id"], "removed")
        last = rows[("family:wigan:fam-b", 4)]
        await conn.execute("DELETE FROM events WHERE position = $1", last["position"])
        await expect_broken(last["event_id"], "gone from the store")

        first, second = rows[("family:wigan:fam-c", 2)], rows[("family:wigan:fam-c", 3)]
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            first["position"],
            second["envelope"],
        )
        await conn.execute(
            "UPDATE events SET envelope = $2 WHERE position = $1",
            second["position"],
            first["envelope"],
        )
        await expect_broken(second["event_id"], "moved")
