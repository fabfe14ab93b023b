"""The services of this installation, found through the ``ledger.services`` entry points.

A service declares itself once, in its own package, as a :class:`ServiceDefinition` (its
name, default port, the topic it publishes, its migrations, its app factory and any CLI
commands of its own), and names that object in ``pyproject.toml``::

    [project.entry-points."ledger.services"]
    allocation = "services.allocation.app:SERVICE"

The CLI, the local stack and the tests list services only through :func:`services`, so a
new service is a new folder plus one line of packaging: nothing in ``shared`` changes.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from shared.core.db import Connection, connect, dsn
from shared.core.events import Envelope
from shared.core.kafka import DEADLETTER_TOPIC
from shared.core.schema import Migration, apply_migrations, ensure_database, migrations_of
from shared.core.settings import Settings
from shared.core.topics import TopicContract, TopicOwner
from shared.web.http import Route
from shared.web.service import (
    Setup,
    build_service_app,
    relay_transactional_id,
    source_of,
    utcnow,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ENTRY_POINT_GROUP",
    "KAFKA_ADMIN",
    "AddCommands",
    "Effects",
    "KafkaGrant",
    "ServiceDefinition",
    "core_migrations",
    "kafka_grants",
    "ledger_topics",
    "migrate",
    "service",
    "services",
    "topic_owners",
]

ENTRY_POINT_GROUP = "ledger.services"

# argparse has no public name for the object add_subparsers() returns.
AddCommands = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]  # noqa: SLF001
"""Adds a service's own ``ledger`` subcommands; each sets ``run(args, settings) -> int``."""

Effects = Callable[[Connection, Envelope], Awaitable[None]]
"""What a service's own event writes besides the store (:attr:`ServiceDefinition.effects`)."""


def core_migrations() -> tuple[Migration, ...]:
    """The event store's tables, in every service's database.

    Recorded under the name ``shared/…`` they were first applied with, so databases made
    before the core had a package of its own are not migrated twice.
    """
    return migrations_of("shared.core", label="shared")


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything the ledger needs to know of a service to migrate, serve and audit it.

    ``setup`` builds the service's application object into the app (under its own key)
    from the :class:`~shared.web.service.ServiceCore`, and names the consumers it runs.
    """

    name: str
    default_port: int
    description: str  # the OpenAPI document's
    routes: Callable[[], Sequence[Route]]
    setup: Setup
    migrations: str  # the package whose ``migrations/`` folder holds the service's SQL
    # The topic the service publishes (its outbox relay's): the types and streams on it.
    publishes: TopicContract | None = None
    # The topics its consumers read: the broker lets its principal read these and no others.
    reads: tuple[str, ...] = ()
    add_commands: AddCommands | None = None
    # Its own checks under ``ledger audit`` (allocation adds ``randomisation``).
    add_audits: AddCommands | None = None
    # The requests the service sends out (OpenAPI 3.1 ``webhooks``), by name.
    webhooks: Mapping[str, Any] = field(default_factory=dict)
    # What one of its own events writes besides the store, in the transaction that records
    # it: done again for each event ``ledger recover`` puts back from the service's topic
    # into a restored store. Every service that publishes has one.
    effects: Effects | None = None

    @property
    def topic(self) -> str | None:
        """The topic the service publishes, if any."""
        return None if self.publishes is None else self.publishes.topic

    def all_migrations(self) -> tuple[Migration, ...]:
        """The core's migrations, then the service's own."""
        return core_migrations() + migrations_of(self.migrations)

    def create_app(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], UUID] = uuid4,
    ) -> web.Application:
        """The service's aiohttp application; nothing opens until it starts."""
        return build_service_app(
            self, settings, clock=clock, ids=ids, owners=topic_owners(settings)
        )


def services() -> tuple[ServiceDefinition, ...]:
    """Every installed service, by default port (the order they were built in)."""
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        definition = entry.load()
        if not isinstance(definition, ServiceDefinition):
            raise TypeError(f"entry point {entry.name} is not a ServiceDefinition")
        if definition.name != entry.name:
            raise ValueError(f"entry point {entry.name} names service {definition.name}")
        found.append(definition)
    names = [definition.name for definition in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two installed services share a name: {sorted(names)}")
    return tuple(sorted(found, key=lambda definition: (definition.default_port, definition.name)))


def service(name: str) -> ServiceDefinition:
    """One installed service, or LookupError."""
    for definition in services():
        if definition.name == name:
            return definition
    raise LookupError(f"no service named {name} is installed")


def topic_owners(settings: Settings) -> dict[str, TopicOwner]:
    """Each ledger topic (as named in these settings), the one source that writes it (the
    event store of the service that publishes it, ``ledger/<service>``) and its contract."""
    return {
        settings.topic(d.publishes.topic): TopicOwner(source_of(d.name), d.publishes)
        for d in services()
        if d.publishes is not None
    }


def ledger_topics() -> tuple[str, ...]:
    """Every topic the installed services publish, and the dead-letter topic (unprefixed)."""
    return (*(d.topic for d in services() if d.topic is not None), DEADLETTER_TOPIC)


# The ledger's command-line tools (topics, audit, rebuild) connect as this principal.
KAFKA_ADMIN = "admin"


@dataclass(frozen=True)
class KafkaGrant:
    """Operations one principal may perform on some of the broker's resources (an ACL of
    Kafka's standard authorizer for each pair). ``prefixed``: the names are prefixes."""

    principal: str
    operations: tuple[str, ...]
    topics: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()
    prefixed: bool = False


def kafka_grants(settings: Settings) -> tuple[KafkaGrant, ...]:
    """Everything the broker allows, as names in these settings; what is not here is refused.

    Each service writes its own topic (through its relay's transaction) and the dead-letter
    topic, and reads the topics it consumes in groups named after it. The tools create and
    read the ledger's topics and write nothing to them.
    """
    deadletter = settings.topic(DEADLETTER_TOPIC)
    grants = []
    for definition in services():
        writes = (settings.topic(definition.topic),) if definition.topic else ()
        grants.append(
            KafkaGrant(
                definition.name,
                ("Write", "Describe"),
                topics=(*writes, deadletter),
                transactional_ids=(relay_transactional_id(settings, definition.name),)
                if writes
                else (),
            )
        )
        if definition.reads:
            read = ("Read", "Describe")
            grants.append(
                KafkaGrant(
                    definition.name, read, topics=tuple(map(settings.topic, definition.reads))
                )
            )
            grants.append(
                KafkaGrant(
                    definition.name,
                    read,
                    groups=(settings.topic(f"{definition.name}."),),
                    prefixed=True,
                )
            )
    admin = ("Create", "Describe", "Read")
    grants.append(
        KafkaGrant(KAFKA_ADMIN, admin, topics=(settings.topic("ledger."),), prefixed=True)
    )
    return tuple(grants)


async def migrate(settings: Settings, names: Sequence[str]) -> None:
    """Create each named service's database where missing and apply its migrations."""
    admin = dsn(settings, "postgres")
    for name in names:
        definition = service(name)
        database = settings.database_of(name)
        await ensure_database(admin, database)
        conn = await connect(dsn(settings, database))
        try:
            await apply_migrations(conn, definition.all_migrations())
        finally:
            await conn.close()
