"""The CLI says what to fix: PostgreSQL or Kafka out of reach, or refusing who it logs in
as, is one line naming which, where, as whom and what to set, with exit 69, never a
traceback; ``ledger token`` is answered without loading a single service."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from pydantic import SecretStr

from deploy.stack import free_port
from shared.core.settings import Settings
from tests.support import LEDGER, settings_env

UNREACHABLE = 69


async def _fails(settings: Settings, *args: str) -> str:
    """What the command says on stderr, having exited 69 with nothing else to say."""
    process = await asyncio.create_subprocess_exec(
        LEDGER,
        *args,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    said = errors.decode()
    assert process.returncode == UNREACHABLE, said
    assert "Traceback" not in said
    assert said.count("\n") == 1, said  # one line
    return said


async def test_each_way_of_not_getting_through_is_one_line_saying_what_to_set(
    settings: Settings,
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    said = await _fails(settings.model_copy(update={"kafka_bootstrap": closed}), "audit", "verify")
    assert said.startswith(f"ledger: cannot reach Kafka at {closed}")
    assert "LEDGER_KAFKA_BOOTSTRAP" in said

    wrong = settings.model_copy(update={"kafka_password": SecretStr("not-the-password")})
    said = await _fails(wrong, "audit", "verify")
    assert f"Kafka at {settings.kafka_bootstrap}" in said
    assert f"as {settings.kafka_username}" in said
    assert "LEDGER_KAFKA_PASSWORD" in said

    port = free_port()
    away = settings.model_copy(update={"pg_port": port})
    said = await _fails(away, "deadletters", "list", "--service", "allocation")
    assert said.startswith(f"ledger: cannot reach PostgreSQL at 127.0.0.1:{port}")

    refused = settings.model_copy(update={"pg_user": "nobody-at-all"})
    said = await _fails(refused, "deadletters", "list", "--service", "allocation")
    assert said.startswith("ledger: cannot log in to PostgreSQL")
    assert "as nobody-at-all" in said
    assert "LEDGER_PG_PASSWORD" in said


def test_ledger_token_loads_no_service() -> None:
    """It imported every service: more than a second to start, for a token."""
    probe = (
        "import sys; from shared.cli.entry import main; "
        "assert main(['token', '--role', 'admin', '--pilot', 'p', '--sub', 's']) == 0; "
        "loaded = sorted(m for m in sys.modules if m.startswith(('services', 'aiokafka'))); "
        "print(loaded, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={**settings_env(Settings(jwt_secret=SecretStr("s" * 40)))},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # a token
    assert result.stderr.strip() == "[]"
