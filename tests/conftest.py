"""Fixtures of record: a real PostgreSQL cluster and a real Apache Kafka broker.

Both are started once per test session on free ports under ``.local/test-*`` (so the suite
runs beside a ``make up`` stack), and every test gets its own databases and topic prefix.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

# Imported now rather than on first use (see tests/unit/test_suite_imports.py): pytest
# rewrites Hypothesis's modules as they are imported, and one first imported mid-test is
# parsed while that test's garbage may be collected. A finalizer there (asyncio's "exception
# was never retrieved", formatting a traceback) parses code too, and CPython 3.11 keeps one
# AST-builder depth counter for both: "SystemError: AST constructor recursion depth
# mismatch" failed a test of projections in CI once.
import hypothesis.internal.conjecture.optimiser  # noqa: F401
import pytest
from pydantic import SecretStr

from deploy.stack import (
    KAFKA_SUPERUSER,
    LOCAL,
    Kafka,
    Postgres,
    ensure_kafka_jars,
    free_port,
    unique_name,
)
from shared.core.custody import new_kek
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.auth import Role, mint_token
from shared.web.registry import ledger_topics
from tests.support import own_broker

JWT_SECRET = "test-secret-long-enough-for-any-hmac-algorithm-0123456789abcdefghijklmnop"
KEY_ENCRYPTION_KEYS = new_kek("test-kek-1")


class Infrastructure:
    """The session's PostgreSQL and Kafka."""

    def __init__(self, postgres: Postgres, kafka: Kafka) -> None:
        self.postgres = postgres
        self.kafka = kafka

    def settings(self, **overrides: object) -> Settings:
        """Settings pointing at this infrastructure, with a fresh database and topic prefix."""
        name = unique_name()
        values: dict[str, object] = {
            "environment": "test",
            "pg_port": self.postgres.port,
            "pg_user": self.postgres.user,
            "kafka_bootstrap": self.kafka.bootstrap,
            # The superuser: each test's topics carry its own prefix, which no service's
            # ACLs name (tests/e2e/test_kafka_access.py grants and checks those).
            "kafka_username": KAFKA_SUPERUSER,
            "kafka_password": SecretStr(self.kafka.password),
            "database_prefix": f"t{name}_",
            "topic_prefix": f"t{name}.",
            "topic_partitions": 3,
            "jwt_secret": SecretStr(JWT_SECRET),
            "key_encryption_keys": SecretStr(KEY_ENCRYPTION_KEYS),
            "log_format": "console",
            "pg_pool_min": 1,
            "pg_pool_max": 8,
            "relay_poll_seconds": 0.2,
            # The suite's webhook receivers listen on loopback, which only an operator allows.
            "webhook_allowed_networks": "127.0.0.0/8",
            "shutdown_grace_seconds": 6.0,
            **overrides,
        }
        return Settings.model_validate(values)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infrastructure]:
    """Start PostgreSQL and Kafka for the session; stop and delete them afterwards."""
    home = LOCAL / f"test-{unique_name()}"
    ensure_kafka_jars()
    postgres = Postgres(home / "postgres", free_port(), durable=False)
    kafka = Kafka(
        home / "kafka",
        free_port(),
        free_port(),
        password=secrets.token_urlsafe(24),
        heap="768m",
        partitions=3,
    )
    postgres.start()
    try:
        kafka.start()
        try:
            yield Infrastructure(postgres, kafka)
        finally:
            kafka.stop(grace=0)  # its data is deleted next: a clean shutdown buys nothing
    finally:
        postgres.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def settings(infra: Infrastructure) -> Settings:
    """Settings for one test: its own databases (created and migrated) and topics."""
    settings = infra.settings()
    await ensure_topics(settings, ledger_topics())
    return settings


@pytest.fixture
def token() -> Callable[..., str]:
    """Mint a token: ``token("admin", "pilot-a", sub=…, team=…)``."""

    def mint(role: Role, pilot: str, *, sub: str = "user-1", team: str | None = None) -> str:
        return mint_token(
            JWT_SECRET, sub=sub, role=role, pilot=pilot, team=team, now=datetime.now(UTC)
        )

    return mint


@pytest.fixture
def own_kafka() -> Iterator[Kafka]:
    """A broker of this test's own: killing it harms no other test of the session."""
    with own_broker(LOCAL / f"test-kafka-{unique_name()}", heap="384m") as kafka:
        yield kafka
