"""PostgreSQL connections: DSNs from settings, pools whose JSON columns speak Python."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import quote, urlencode

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import BaseModel

from shared.core.background import BackgroundTask
from shared.core.settings import Settings

__all__ = [
    "TRANSIENT_SQLSTATE_CLASSES",
    "Connection",
    "DatabaseWatch",
    "connect",
    "dsn",
    "is_transient",
    "model_of",
    "open_pool",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

# What handlers receive: a pooled connection's proxy or a connection of its own.
if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Connection = asyncpg.Connection | PoolConnectionProxy

# SQLSTATE classes worth retrying: connection, rollback (serialization, deadlock),
# insufficient resources, object not in prerequisite state (a database not accepting
# connections for maintenance, a lock not available), operator intervention (shutdown).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57"})


def dsn(settings: Settings, database: str) -> str:
    """A libpq URL for one database of the configured server."""
    password = settings.pg_password.get_secret_value()
    auth = quote(settings.pg_user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    url = f"postgresql://{auth}@{settings.pg_host}:{settings.pg_port}/{quote(database, safe='')}"
    if settings.pg_ca_file is None:
        return url
    return f"{url}?{urlencode({'sslmode': 'verify-full', 'sslrootcert': settings.pg_ca_file})}"


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def connect(database_dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection with the ledger's codecs (for LISTEN and session-level locks)."""
    conn = await asyncpg.connect(database_dsn)
    await _init_connection(conn)
    return conn


ACQUIRE_TIMEOUT_SECONDS = 5.0
"""How long anything waits for a pooled connection before giving up (a transient error:
503 ``unavailable`` to a caller, a retry to a consumer): a pool that is used up, by load or
by a bug, slows the service down but never stops it for good."""


class _Pool(asyncpg.Pool):
    """A pool whose every acquire has a timeout, unless the caller gives its own."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:  # noqa: ANN401 - asyncpg's context
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


@asynccontextmanager
async def open_pool(
    database_dsn: str,
    *,
    min_size: int,
    max_size: int,
    schema: str | None = None,
    role: str | None = None,
    acquire_timeout: float = ACQUIRE_TIMEOUT_SECONDS,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool for the lifetime of the ``async with`` block; ``schema`` replaces the search path,
    and each connection acts as ``role`` (``SET ROLE``) when one is given. Every acquire gives
    up after ``acquire_timeout`` seconds (a TimeoutError, transient)."""

    async def init(conn: asyncpg.Connection[asyncpg.Record]) -> None:
        await _init_connection(conn)
        if role is not None:
            await conn.execute(f"SET ROLE {quote_ident(role)}")

    pool = _Pool(
        database_dsn,
        acquire_timeout=acquire_timeout,
        reset=keep_session,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        init=init,
        server_settings={"search_path": schema} if schema else None,
    )
    async with pool:
        yield pool


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a pool does to a connection given back, besides what asyncpg always does (roll
    back a transaction left open, drop its listeners): nothing. By default asyncpg sends
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, a
    round trip each time a command, a consumer's batch or a relay's poll gives its
    connection back (about a third of a one-statement use's CPU, client and server). Nothing
    here leaves that state on a pooled connection: cursors live only in transactions,
    listeners and session locks are taken on connections of their own (:func:`connect`),
    the migrations' lock is released in a ``finally``, and the only session settings are
    the role and search path every connection of the pool is opened with."""


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


async def act_as_database_owner(conn: Connection) -> str:
    """Make the session act as the role that owns its database, and name it. What a task
    creates then belongs to the service's own role, whoever the operator connected as (a
    superuser, say): a table the service cannot read would fail every request."""
    owner: str = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    if owner != await conn.fetchval("SELECT current_user"):
        await conn.execute(f"SET ROLE {quote_ident(owner)}")
    return owner


def is_transient(error: BaseException) -> bool:
    """Whether a database error may pass by itself (lost connection, deadlock, shutdown)."""
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    # InternalClientError: a pooled connection whose server process was terminated in the
    # middle of an operation is left "in another operation" (seen under load in an outage).
    return isinstance(
        error, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
    )


def model_of(model: type[ModelT], row: asyncpg.Record, **values: object) -> ModelT:
    """A row read into a model by the model's field names (``values`` for the others)."""
    return model.model_validate(
        {name: values[name] if name in values else row[name] for name in model.model_fields}
    )


class DatabaseWatch(BackgroundTask):
    """Whether the database answers, asked every ``every`` seconds on a connection of its
    own: what ``/readyz`` says of the database. A probe reads the last answer instead of
    asking through the pool, where it waited behind the commands (three large statements
    recorded at once held it past the probe's 2 s, and a busy service is not an unready
    one); a database that goes away is seen within ``every`` + ``timeout`` seconds."""

    def __init__(self, database_dsn: str, every: float = 1.0, timeout: float = 5.0) -> None:
        super().__init__("database-watch")
        self._dsn = database_dsn
        self._every = every
        self._timeout = timeout
        self.answering = True  # it has just been migrated: it answered

    async def check(self) -> bool:
        """The last answer, for ``/readyz``."""
        return self.answering

    async def _run(self) -> None:
        conn: Connection | None = None
        try:
            while not self._stopping:
                try:
                    async with asyncio.timeout(self._timeout):
                        if conn is None or conn.is_closed():
                            conn = await connect(self._dsn)
                        self.answering = bool(await conn.fetchval("SELECT 1"))
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    self.answering = False
                    if conn is not None:
                        conn.terminate()  # half-open after a timeout: a new one next time
                        conn = None
                await self._pause(self._every)
        finally:
            if conn is not None:
                await asyncio.shield(conn.close())
