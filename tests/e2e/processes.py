"""The four services as separate ``ledger serve`` processes, as ``make up`` runs them.

For what only a real process shows: signals, exit codes, scaled replicas, and the JSON log
lines each process writes (kept in one file per instance). An instance is a service's
first process, named for the service, or a further replica, ``reporting-2`` and so on.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from deploy.stack import free_port, serve_command
from shared.core.settings import Settings
from shared.web.registry import migrate
from tests.support import LEDGER, SERVICE_NAMES, settings_env, wait_for

__all__ = ["ServiceProcesses", "sample", "service_processes"]


class ServiceProcesses:
    """Start, signal and read the logs of each service's processes."""

    def __init__(
        self, settings: Settings, logs: Path, environment: dict[str, str] | None = None
    ) -> None:
        self._ports: dict[str, int] = {name: free_port() for name in SERVICE_NAMES}
        self.settings = settings.model_copy(update={"ports": self._ports, "log_format": "json"})
        self._logs = logs
        self._environment = environment or {}  # every instance's, started now or later
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._hosts: dict[str, str] = {}  # where an instance listens, when not on loopback

    def url(self, instance: str) -> str:
        return f"http://{self._hosts.get(instance, '127.0.0.1')}:{self._ports[instance]}"

    def log_path(self, instance: str) -> Path:
        return self._logs / f"{instance}.log"

    def log_lines(self, instance: str) -> list[dict[str, Any]]:
        """Every JSON line the instance has logged (a line that is not JSON fails the test).

        Read while the process runs, the last line may be half written: only lines ended
        by a newline count.
        """
        path = self.log_path(instance)
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    async def metrics(self, instance: str) -> str:
        """What the instance serves on ``/metrics``."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url(instance)}/metrics") as response,
        ):
            return await response.text()

    async def start(
        self,
        service: str,
        replica: int = 1,
        environment: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> str:
        """Start an instance of the service, wait until ``/readyz`` says it is ready, and
        return its name. A replica shares the service's settings but for its port;
        ``environment`` is added to the process's and to every instance's (a fake clock's,
        or LEDGER_HOST for an address other than loopback), and ``wrapper`` runs it
        (``ip netns exec NAME``)."""
        instance = service if replica == 1 else f"{service}-{replica}"
        port = self._ports.setdefault(instance, free_port())
        settings = self.settings.with_port(service, port)
        environment = self._environment | (environment or {})
        if "LEDGER_HOST" in environment:
            self._hosts[instance] = environment["LEDGER_HOST"]
        with self.log_path(instance).open("ab") as log:
            self._processes[instance] = await asyncio.create_subprocess_exec(
                *wrapper,
                LEDGER,
                *serve_command(service),
                env=settings_env(settings) | environment,
                stdout=log,
                stderr=log,
            )

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{self.url(instance)}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=60, interval=0.2)
        return instance

    async def terminate(self, instance: str) -> tuple[int, float]:
        """SIGTERM the instance; its exit code and how long it took to exit."""
        process = self._processes.pop(instance)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
        return code, time.monotonic() - started

    async def kill(self, instance: str) -> None:
        """SIGKILL the instance: no drain, no goodbye, as a crash or the OOM killer ends it."""
        process = self._processes.pop(instance)
        process.kill()
        await process.wait()

    def pid(self, instance: str) -> int:
        return self._processes[instance].pid

    async def stop_all(self) -> None:
        for instance in list(self._processes):
            process = self._processes.pop(instance)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def service_processes(
    settings: Settings, logs: Path, environment: dict[str, str] | None = None
) -> AsyncIterator[ServiceProcesses]:
    """All four services running as processes (``environment`` added to each's); stopped
    on the way out."""
    await migrate(settings, list(SERVICE_NAMES))
    processes = ServiceProcesses(settings, logs, environment)
    try:
        await asyncio.gather(*(processes.start(name) for name in SERVICE_NAMES))
        yield processes
    finally:
        await processes.stop_all()


def sample(exposition: str, name: str, *labels: str) -> float | None:
    """The sum of a metric's samples whose labels contain every given fragment."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith((name + "{", name + " "))
        if all(label in line for label in labels)
    ]
    return sum(values) if values else None
