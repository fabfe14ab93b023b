"""schemathesis (stateless and stateful phases) over all four services, as they are served:
every answer is documented, of the documented type, shape and headers, and none is a 5xx
other than the documented 503.

Each service is tested with a token of a role that may call most of its operations; the
authorization matrix covers the other roles. The seed is fixed, so a failure replays.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from shared.core.kafka import ensure_topics
from shared.web.registry import ledger_topics
from tests.conftest import Infrastructure
from tests.e2e.processes import service_processes
from tests.e2e.system import WIGAN, auth

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
ARTEFACTS = ROOT / ".local" / "artefacts"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)
# The role each service is tried as: the one that may call most of its operations.
ROLES = {
    "allocation": ("admin", None),
    "spending": ("case_system", None),
    "approval": ("manager", "t-1"),
    "reporting": ("admin", None),
}


async def test_schemathesis_finds_nothing(
    infra: Infrastructure, tmp_path: Path, token: Callable[..., str]
) -> None:
    settings = infra.settings()
    await ensure_topics(settings, ledger_topics())
    summaries = {}
    async with service_processes(settings, tmp_path) as processes:
        admin = auth(token("admin", "wigan"))
        async with aiohttp.ClientSession() as http:
            answer = await http.put(
                f"{processes.url('allocation')}/pilots/wigan", json=WIGAN, headers=admin
            )
            assert answer.status == 201, await answer.text()
        for service, (role, team) in ROLES.items():
            headers = auth(token(role, "wigan", sub="st-1", team=team))
            process = await asyncio.create_subprocess_exec(
                str(SCHEMATHESIS),
                "--config-file",
                str(ROOT / "tests" / "e2e" / "schemathesis.toml"),
                "run",
                f"{processes.url(service)}/openapi.json",
                "--header",
                f"Authorization: {headers['Authorization']}",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--seed",
                "20261201",
                "--no-color",
                env={
                    **os.environ,
                    "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
                    "PYTHONPATH": str(ROOT),
                },
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output = (await process.communicate())[0].decode()
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            (ARTEFACTS / f"schemathesis-{service}.txt").write_text(output)
            assert process.returncode == 0, output[-6000:]
            counts = re.search(r"(\d+) generated, (\d+) passed", output)
            assert counts is not None, output[-2000:]
            summaries[service] = counts.group(0)
    print(summaries)  # noqa: T201 - the counts the note reports
