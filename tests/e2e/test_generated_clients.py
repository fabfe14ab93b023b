"""Clients generated from the services' own /openapi.json, as an integrator would make
them, run the whole flow (tests/clients/): with openapi-python-client, and with
openapi-generator's python client. Each generator runs in its own environment
(``make test`` makes both: deploy/openapi-clients/, the Makefile), on the documents the
running services serve, and may skip only the operations the README gives a by-hand
snippet for: a batch's NDJSON and a statement's CSV or OFX body."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.stack import LOCAL
from shared.core.settings import Settings
from tests.e2e.system import System, running_system

# Absolute: the generator runs its formatter (ruff, beside it) from the folder it writes.
CLIENT_PYTHON = Path(
    os.environ.get("LEDGER_CLIENT_PYTHON", LOCAL / "tools/clients/bin/python")
).absolute()
OPENAPI_GENERATOR = Path(
    os.environ.get("LEDGER_OPENAPI_GENERATOR", LOCAL / "tools/openapi-generator-cli-7.25.0.jar")
).absolute()
ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("allocation", "spending", "approval", "reporting")
# What generators cannot send, and the README shows by hand (*Generated clients*).
BY_HAND = {"POST /pilots/{pilot_id}/batches", "POST /pilots/{pilot_id}/statements"}
# openapi-python-client reads binary bodies as application/octet-stream only: its own
# setting says a zip is one (README).
PYTHON_CLIENT_CONFIG = "content_type_overrides:\n  application/zip: application/octet-stream\n"


@pytest.fixture
async def system(settings: Settings, token: Callable[..., str]) -> AsyncIterator[System]:
    async with running_system(settings, token, reporting=True) as system:
        yield system


async def _documents(system: System, into: Path) -> dict[str, Path]:
    """Each service's /openapi.json, as served, in ``into``."""
    clients = {
        "allocation": system.allocation,
        "spending": system.spending,
        "approval": system.approval,
        "reporting": system.reports,
    }
    found = {}
    for service, client in clients.items():
        response = await client.get("/openapi.json")
        assert response.status == 200
        found[service] = into / f"{service}.json"
        found[service].write_text(json.dumps(await response.json()))
    return found


async def _run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    """Run ``command`` without holding up the services (they answer in this loop)."""
    process = await asyncio.create_subprocess_exec(
        *map(str, command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 0, text[-4000:]
    return text


def _flow_env(system: System, token: Callable[..., str], generated: Path) -> dict[str, str]:
    urls = {
        "allocation": system.allocation,
        "spending": system.spending,
        "approval": system.approval,
        "reporting": system.reports,
    }
    tokens = {
        "admin": token("admin", "gen", sub="admin-1"),
        "social_worker": token("social_worker", "gen", sub="sw-1", team="t-1"),
        "manager": token("manager", "gen", sub="m-1", team="t-1"),
        "finance": token("finance", "gen", sub="fin-1"),
    }
    return {
        "LEDGER_CLIENT_URLS": json.dumps(
            {name: str(client.make_url("")).rstrip("/") for name, client in urls.items()}
        ),
        "LEDGER_CLIENT_TOKENS": json.dumps(tokens),
        "PYTHONPATH": f"{generated}{os.pathsep}{ROOT}",
    }


def _outcome(output: str) -> dict[str, Any]:
    """The flow's summary (its last line), checked the same for both clients."""
    summary: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert summary["status"] == "closed"
    balance = summary["balance"]
    assert (balance["allocated_pence"], balance["spent_pence"]) == (200_000, 58_500)
    assert (balance["committed_pence"], balance["available_pence"]) == (0, 141_500)
    assert summary["history"][:2] == ["family.enrolled", "family.budget_allocated"]
    assert "purchase.recorded" in summary["history"]
    figures = summary["uptake"]["all"]
    assert (figures["families_enrolled"], figures["requests"]) == (1, 1)
    assert figures["spent_pence"] == 58_500
    assert summary["transactions"][0].startswith("date,recorded_at,kind")
    assert len(summary["transactions"]) == 2  # the header and the purchase
    assert "datapackage.json" in summary["trial_dataset"]
    return summary


def _skipped(output: str) -> set[str]:
    """The operations a generator said it left out."""
    return {
        f"{method} {path}"
        for method, path in re.findall(r"WARNING parsing (\w+) (\S+) within", output)
    }


async def test_openapi_python_client_runs_the_whole_flow(
    system: System, token: Callable[..., str], tmp_path: Path
) -> None:
    documents = await _documents(system, tmp_path)
    generated = tmp_path / "generated"
    generated.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(PYTHON_CLIENT_CONFIG)
    generator = CLIENT_PYTHON.parent / "openapi-python-client"
    skipped: set[str] = set()
    for service, document in documents.items():
        output = await _run(
            generator, "generate", "--path", document, "--meta", "none", "--config", config,
            "--output-path", generated / f"{service}_client",
            env={"PATH": f"{CLIENT_PYTHON.parent}{os.pathsep}{os.environ['PATH']}"},
        )  # fmt: skip
        skipped |= _skipped(output)
    assert skipped <= BY_HAND, skipped
    flow = "tests.clients.openapi_python_client_flow"
    output = await _run(CLIENT_PYTHON, "-m", flow, env=_flow_env(system, token, generated))
    _outcome(output)


async def test_openapi_generator_runs_the_whole_flow(
    system: System, token: Callable[..., str], tmp_path: Path
) -> None:
    documents = await _documents(system, tmp_path)
    generated = tmp_path / "generated"
    for service, document in documents.items():
        output = await _run(
            "java", "-jar", OPENAPI_GENERATOR, "generate", "--generator-name", "python",
            "--input-spec", document, "--output", generated / service,
            "--package-name", f"{service}_og",
            "--global-property", "apiTests=false,modelTests=false,apiDocs=false,modelDocs=false",
        )  # fmt: skip
        assert "ERROR" not in output, output
    paths = os.pathsep.join(str(generated / service) for service in SERVICES)
    env = _flow_env(system, token, generated)
    env["PYTHONPATH"] = f"{paths}{os.pathsep}{ROOT}"
    output = await _run(CLIENT_PYTHON, "-m", "tests.clients.openapi_generator_flow", env=env)
    statement = _outcome(output)["statement"]
    assert (statement["format"], statement["lines"], statement["matched"]) == ("csv", 1, 1)
