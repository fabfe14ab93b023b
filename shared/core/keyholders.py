"""Which key-encryption keys each running instance holds, so that an erasure can be known
complete.

An erasure reaches the copies nobody can recall (WAL, archives, backups) only once every KEK
from before it is destroyed: gone from the secret, and from the memory of every running
process. Each instance of a service records the ids of the KEKs it holds in its own
database (``key_holders``), and says so again every few seconds; ``ledger keys status``
reads them, and counts an instance not heard from for :data:`LIVE_SECONDS` as gone. With
the KEKs in a file (``LEDGER_KEY_ENCRYPTION_KEYS_FILE``), an instance reads the file again
when it changes, within seconds, and records what it holds then: a KEK added or retired
needs no restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import structlog

from shared.core.background import BackgroundTask
from shared.core.custody import KeyCustody, KeyCustodyError
from shared.core.db import Connection, is_transient
from shared.core.metrics import Metrics

__all__ = ["LIVE_SECONDS", "Holder", "KeyWatch", "holders"]

LIVE_SECONDS = 30.0  # an instance not heard from for this long is gone
_RELOAD_SECONDS = 2.0  # how often the KEK file is looked at
_HEARTBEAT_SECONDS = 10.0

# The database's clock, at both ends: a holder's age never depends on two machines' clocks.
_HOLD = """
INSERT INTO key_holders (instance, kek_ids) VALUES ($1, $2)
ON CONFLICT (instance) DO UPDATE SET kek_ids = excluded.kek_ids, seen_at = now()
"""
_GONE = "DELETE FROM key_holders WHERE instance = $1"
_HOLDERS = """
SELECT instance, kek_ids, started_at, seen_at FROM key_holders
WHERE seen_at > now() - make_interval(secs => $1) ORDER BY started_at
"""


@dataclass(frozen=True)
class Holder:
    """A running instance and the KEKs it holds, the current first."""

    instance: UUID
    kek_ids: tuple[str, ...]
    started_at: datetime
    seen_at: datetime


async def holders(conn: Connection) -> list[Holder]:
    """The instances of this database's service heard from lately."""
    rows = await conn.fetch(_HOLDERS, LIVE_SECONDS)
    return [
        Holder(row["instance"], tuple(row["kek_ids"]), row["started_at"], row["seen_at"])
        for row in rows
    ]


class KeyWatch(BackgroundTask):
    """Reads the KEKs' file again when it changes, and records what this instance holds."""

    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], custody: KeyCustody, metrics: Metrics
    ) -> None:
        super().__init__("key-watch")
        self._pool = pool
        self._custody = custody
        self._metrics = metrics
        self._instance = uuid4()
        self._log = structlog.get_logger().bind(component="keys")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        recorded = await self._record()
        try:
            while not self._stopping:
                await self._pause(_RELOAD_SECONDS)
                changed = self._reload()
                if changed or not recorded or loop.time() - recorded > _HEARTBEAT_SECONDS:
                    recorded = await self._record()
        finally:
            await self._forget()

    def _reload(self) -> bool:
        try:
            changed = self._custody.reload()
        except KeyCustodyError as error:
            self._log.warning("key_encryption_keys_unreadable", error=error.detail)
            return False
        if changed:
            self._log.info("key_encryption_keys_reloaded", kek_ids=list(self._custody.held))
        return changed

    async def _record(self) -> float:
        """Say what this instance holds now; when it was said (0 if it could not be)."""
        self._metrics.keks_held.set(len(self._custody.held))
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(_HOLD, self._instance, list(self._custody.held))
        except Exception as error:
            if not is_transient(error):
                raise
            return 0.0  # the database is away: said again on the next round
        return asyncio.get_running_loop().time()

    async def _forget(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(_GONE, self._instance)
        except Exception as error:  # noqa: BLE001 - stopping: an instance unheard-of soon counts as gone
            self._log.info("key_holder_not_forgotten", error=repr(error))
