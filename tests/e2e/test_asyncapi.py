"""Each service's /asyncapi.json: valid AsyncAPI 3.0 by the AsyncAPI CLI, and true of what
is on the topics: every record published in a short pilot matches its message's payload
schema, and names a message the document has."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from deploy.stack import ROOT
from shared.core.settings import Settings
from tests.e2e.system import Client, System, running_system
from tests.support import read_topic

ASYNCAPI_CLI = Path(
    os.environ.get("LEDGER_ASYNCAPI_CLI", ROOT / ".local/tools/asyncapi/node_modules/.bin/asyncapi")
)


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        yield system


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/asyncapi.json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_each_services_asyncapi_document_is_valid_and_true_of_the_topics(
    system: System, settings: Settings, tmp_path: Path
) -> None:
    _require_cli()
    assert system.reporting is not None
    clients = {
        "allocation": system.allocation,
        "spending": system.spending,
        "approval": system.approval,
        "reporting": system.reporting,
    }
    documents = {name: await _document(client) for name, client in clients.items()}
    metrics = tmp_path / "asyncapi-metrics.json"  # no anonymous metrics sent from the tests
    metrics.write_text(json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true"}))
    for name, document in documents.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        process = await asyncio.create_subprocess_exec(
            str(ASYNCAPI_CLI),
            "validate",
            str(path),
            env={**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(metrics)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await process.communicate())[0].decode()
        assert process.returncode == 0, output
        assert "0 errors" in output, output
    for document in documents.values():  # a reader learns from it how to connect
        [server] = document["servers"].values()
        assert server["host"] == settings.kafka_bootstrap
        assert server["protocol"] == "kafka"  # the suite's broker is on loopback, no TLS
        [scheme] = document["components"]["securitySchemes"].values()
        assert scheme["type"] == "scramSha512"
    assert set(documents["spending"]["operations"]) == {
        "send_ledger_spending",
        "receive_ledger_allocation",
        "receive_ledger_approval",
    }

    version = await system.enrol("fam-1", allocate=100_000)
    request = await system.request("fam-1", 2_500, version=version)
    await system.settled(request["request_id"], "approved")
    document = documents["reporting"]  # it receives every topic
    messages = document["components"]["messages"]
    by_type = {message["name"]: message for message in messages.values()}
    checked = 0
    for topic in ("ledger.allocation", "ledger.spending", "ledger.approval"):
        channel = document["channels"][topic.replace(".", "_")]
        for record in await read_topic(settings, topic):
            message = by_type[record.value["type"]]
            assert {"$ref": f"#/components/messages/{_name(message)}"} in channel[
                "messages"
            ].values()
            schema = {**message["payload"], "components": document["components"]}
            jsonschema_rs.validate(schema, record.value)
            checked += 1
    assert checked >= 5


def _require_cli() -> None:
    if not ASYNCAPI_CLI.exists():
        pytest.fail(f"{ASYNCAPI_CLI} is missing: `make test` installs it from deploy/asyncapi")


def _name(message: dict[str, Any]) -> str:
    return str(message["name"]).replace(".", "_")
