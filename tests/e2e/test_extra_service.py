"""A fifth service plugs in through the same entry points as the four, with no edit to shared.

The service is written here into a temporary folder, with a distribution's metadata that
declares it in the ``ledger.services`` group, exactly as ``pyproject.toml`` declares the
others. The real ``ledger`` command then creates its topic, migrates its database, serves it,
and its consumer reads allocation's topic.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from deploy.stack import free_port
from shared.contracts import allocation
from shared.core.events import canonical_json
from shared.core.kafka import connection
from shared.core.settings import Settings
from tests.integration.fixtures import envelopes_for
from tests.support import LEDGER, connect_service_db, settings_env, wait_for

SERVICE_MODULE = '''
"""A tiny fifth service: it counts the allocation events it has seen."""

from shared.contracts import allocation
from shared.core.events import EventRegistry
from shared.core.topics import TopicContract
from shared.web.http import Route, json_response

from shared.web.registry import ServiceDefinition
from shared.web.service import CORE, ConsumerSpec


async def seen(conn, envelope):
    await conn.execute("INSERT INTO seen VALUES ($1) ON CONFLICT DO NOTHING", envelope.id)


async def count(request):
    async with request.app[CORE].pool.acquire() as conn:
        return json_response({"seen": await conn.fetchval("SELECT count(*) FROM seen")})


SERVICE = ServiceDefinition(
    name="extra",
    default_port=8099,
    description="A fifth service.",
    routes=lambda: [
        Route(
            "GET",
            "/pilots/{pilot_id}/seen",
            count,
            "Seen",
            frozenset({"auditor"}),
            operation_id="countSeen",
        )
    ],
    setup=lambda app, core: (ConsumerSpec("extra.seen", (allocation.TOPIC,), seen),),
    migrations="extra_service",
    publishes=TopicContract("ledger.extra", EventRegistry(()), frozenset({"extra"})),
    reads=(allocation.TOPIC,),
)
'''


def install_extra_service(folder: Path) -> None:
    """The service's package and the metadata that registers it, as pip would install them."""
    package = folder / "extra_service"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text(SERVICE_MODULE)
    (package / "migrations" / "001_extra.sql").write_text(
        "CREATE TABLE seen (event_id uuid PRIMARY KEY);\n"
    )
    metadata = folder / "extra_service-0.1.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-service\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [ledger.services]
            extra = extra_service:SERVICE
            """
        )
    )


async def ledger(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        LEDGER, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_fifth_service_registers_migrates_serves_and_consumes(
    settings: Settings, tmp_path: Path, token: Callable[..., str]
) -> None:
    """Its topic is created, its database gets the core's tables and its own, it answers
    /readyz and its own route (listed in its OpenAPI document), and it consumes."""
    install_extra_service(tmp_path)
    port = free_port()
    env = {
        **settings_env(settings),
        "PYTHONPATH": str(tmp_path),
        "LEDGER_EXTRA_PORT": str(port),
    }
    assert settings.topic("ledger.extra") in await ledger(env, "topics")
    await ledger(env, "migrate", "--service", "extra")
    async with connect_service_db(settings, "extra") as conn:
        tables = {row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables")}
    assert {"seen", "events", "outbox", "consumer_offsets"} <= tables

    [event] = envelopes_for("p", "f", [1], source="ledger/allocation")  # the topic's owner
    producer = AIOKafkaProducer(**connection(settings.kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(allocation.TOPIC),
            value=canonical_json(event.to_json_dict()),
            key=event.partition_key(),
        )
    finally:
        await producer.stop()

    process = await asyncio.create_subprocess_exec(
        LEDGER, "serve", "extra", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        auditor = token("auditor", "p")
        async with aiohttp.ClientSession() as http:

            async def seen() -> bool:
                try:
                    async with http.get(
                        f"{base}/pilots/p/seen", headers={"Authorization": f"Bearer {auditor}"}
                    ) as response:
                        return response.status == 200 and (await response.json())["seen"] == 1
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(seen, timeout=30)
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{base}/openapi.json") as response:
                document = json.loads(await response.text())
        assert "/pilots/{pilot_id}/seen" in document["paths"]
        assert document["info"]["title"].endswith("extra")
    finally:
        process.terminate()
        assert await process.wait() == 0
