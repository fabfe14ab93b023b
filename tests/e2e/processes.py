"""The four services as separate ``ledger serve`` processes, as ``make up`` runs them.

For what only a real process shows: signals, exit codes, and the JSON log lines each
service writes (kept in one file per service).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from deploy.stack import free_port, serve_command
from shared.cli import migrate
from shared.settings import SERVICE_NAMES, Settings
from tests.support import LEDGER, settings_env, wait_for

__all__ = ["ServiceProcesses", "service_processes"]


class ServiceProcesses:
    """Start, signal and read the logs of each service's process."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        ports = {f"{name}_port": free_port() for name in SERVICE_NAMES}
        self.settings = settings.model_copy(update={**ports, "log_format": "json"})
        self._logs = logs
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.settings, f'{service}_port')}"

    def log_path(self, service: str) -> Path:
        return self._logs / f"{service}.log"

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        """Every JSON line the service has logged (a line that is not JSON fails the test)."""
        text = self.log_path(service).read_text() if self.log_path(service).exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    async def start(self, service: str) -> None:
        """Start the service and wait until ``/readyz`` says it is ready."""
        with self.log_path(service).open("ab") as log:
            self._processes[service] = await asyncio.create_subprocess_exec(
                LEDGER,
                *serve_command(service),
                env=settings_env(self.settings),
                stdout=log,
                stderr=log,
            )

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{self.url(service)}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=60, interval=0.2)

    async def terminate(self, service: str) -> tuple[int, float]:
        """SIGTERM the service; its exit code and how long it took to exit."""
        process = self._processes.pop(service)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
        return code, time.monotonic() - started

    async def stop_all(self) -> None:
        for service in list(self._processes):
            process = self._processes.pop(service)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def service_processes(settings: Settings, logs: Path) -> AsyncIterator[ServiceProcesses]:
    """All four services running as processes; stopped on the way out."""
    await migrate(settings, list(SERVICE_NAMES))
    processes = ServiceProcesses(settings, logs)
    try:
        await asyncio.gather(*(processes.start(name) for name in SERVICE_NAMES))
        yield processes
    finally:
        await processes.stop_all()
