"""The README's first request, run as written against the four services as processes.

The shell blocks are read out of README.md, so the two cannot drift apart. Only what ties
them to one machine changes: the ports `make up` would use become this test's, and the
environment `source .local/env` would give is given.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

from deploy.stack import ROOT
from shared.core.settings import Settings
from shared.web.registry import services
from tests.e2e.processes import service_processes
from tests.support import settings_env

DEFAULT_PORTS = {definition.name: definition.default_port for definition in services()}


def first_request() -> str:
    """The shell of the README's *A first request*, without `make up` and `source`."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A first request", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the first request is two shell blocks"
    lines = "".join(blocks).splitlines()
    return "\n".join(
        line for line in lines if not line.startswith(("make up", "source .local/env"))
    )


async def test_the_first_request_runs_as_written(settings: Settings, tmp_path: Path) -> None:
    """Pilot, family, allocation, a request above the auto tier that the manager finds
    pending and approves, a purchase against it, its close and the family's balance, on the
    ports in the environment: every step answers as the README says."""
    async with service_processes(settings, tmp_path) as services:
        # As `source .local/env` leaves them: each service's port in its variable.
        env = _as_after_source(services.settings)
        for name in DEFAULT_PORTS:
            env[f"LEDGER_{name.upper()}_PORT"] = services.url(name).rsplit(":", 1)[1]
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            first_request(),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    answers = _documents(out.decode())
    pilot, family, allocation, pending, approved, purchase, request, closed, balance = answers
    assert (pilot["version"], family["arm"], allocation["amount_pence"]) == (
        1,
        "treatment",
        400_000,
    )
    assert [item["amount_pence"] for item in pending["requests"]] == [60_000]
    assert (approved["status"], approved["approved_pence"]) == ("approved", 60_000)
    assert purchase["amount_pence"] == 58_500
    assert (request["status"], request["spent_pence"]) == ("partially_spent", 58_500)
    assert closed["status"] == "closed"
    assert {key: balance[key] for key in ("allocated_pence", "committed_pence", "spent_pence")} == {
        "allocated_pence": 400_000,
        "committed_pence": 0,
        "spent_pence": 58_500,
    }
    assert balance["available_pence"] == 341_500


def _as_after_source(settings: Settings) -> dict[str, str]:
    """The environment ``source .local/env`` gives: the settings and the ``ledger`` command."""
    env = settings_env(settings)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON answers curl printed one after another, with nothing between them."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return found
