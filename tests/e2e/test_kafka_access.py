"""Kafka's trust boundary: every client authenticates (SASL/SCRAM), and each principal may
do only what ``shared.web.registry.kafka_grants`` allows: a service writes its own topic and
the dead-letter topic, reads what it consumes in groups named after it; the tools create
and read topics and write none.

The grants are given by running deploy/kafka/access.sh (what compose runs) with Kafka's own
tools against the session's broker, under this module's topic prefix.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from pydantic import SecretStr

from deploy.stack import ledger_access_script, password_variable
from shared.core.kafka import DEADLETTER_TOPIC, connection, ensure_topics, new_producer
from shared.core.settings import KafkaAccess, Settings
from shared.web.registry import KAFKA_ADMIN, ledger_topics, services
from shared.web.service import relay_transactional_id
from tests.conftest import Infrastructure
from tests.e2e.system import running_system
from tests.support import SERVICE_NAMES, run_ledger, wait_for

LEDGER_TOPICS = ledger_topics()
WRITERS = {definition.topic: definition.name for definition in services() if definition.topic}


@dataclass(frozen=True)
class Granted:
    """Settings of the superuser under a prefix the access script granted, and the passwords."""

    settings: Settings
    passwords: dict[str, str]

    def access(self, principal: str, password: str | None = None) -> KafkaAccess:
        return KafkaAccess(
            self.settings.kafka_bootstrap, principal, password or self.passwords[principal]
        )

    def as_principal(self, principal: str) -> Settings:
        password = SecretStr(self.passwords[principal])
        update = {"kafka_username": principal, "kafka_password": password}
        return self.settings.model_copy(update=update)


@pytest.fixture(scope="module")
def granted(infra: Infrastructure) -> Granted:
    settings = infra.settings()
    passwords = {name: secrets.token_urlsafe(16) for name in (KAFKA_ADMIN, *SERVICE_NAMES)}
    variables = {password_variable(name): value for name, value in passwords.items()}
    infra.kafka.run_access_script(
        ledger_access_script(), {**variables, "LEDGER_TOPIC_PREFIX": settings.topic_prefix}
    )
    return Granted(settings, passwords)


async def _started(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(client.start(), 20)
    except BaseException:
        await client.stop()
        raise


async def can_write(kafka: KafkaAccess, topic: str, transactional_id: str | None = None) -> bool:
    """Whether a record sent to the topic is accepted. With a transactional id it is sent in
    a transaction that is then aborted, so that no ledger topic keeps a probe (the audit at
    the end of this module reads every one)."""
    producer = new_producer(kafka, "probe", transactional_id)
    try:
        await asyncio.wait_for(producer.start(), 20)
        if transactional_id is None:
            await producer.send_and_wait(topic, b"{}", key=b"probe")
        else:
            await producer.begin_transaction()
            try:
                await (await producer.send(topic, b"{}", key=b"probe"))
            finally:
                await producer.abort_transaction()
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
        return False  # the second: a principal that may write nowhere gets no producer id
    finally:
        await producer.stop()
    return True


async def can_read(kafka: KafkaAccess, topic: str) -> bool:
    """Whether a fetch of the topic's first partition is allowed (outside any group)."""
    consumer = AIOKafkaConsumer(**connection(kafka), group_id=None, auto_offset_reset="earliest")
    await _started(consumer)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.getmany(timeout_ms=1_000)
        await consumer.getmany(timeout_ms=1_000)  # a refusal may come with the second fetch
    except TopicAuthorizationFailedError:
        return False
    finally:
        await consumer.stop()
    return True


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
    granted: Granted,
) -> None:
    for kafka in (
        KafkaAccess(granted.settings.kafka_bootstrap),  # PLAINTEXT, no SASL at all
        granted.access("spending", "not-its-password"),
        granted.access("nobody", "any"),
    ):
        producer = AIOKafkaProducer(**connection(kafka), request_timeout_ms=3_000)
        with pytest.raises((KafkaConnectionError, KafkaError)):
            await _started(producer)


async def test_each_service_writes_its_own_topic_and_the_dead_letters_only(
    granted: Granted,
) -> None:
    """The hole: anyone could publish a family.budget_allocated every service applies."""
    await ensure_topics(granted.settings, LEDGER_TOPICS)
    for principal in (*SERVICE_NAMES, KAFKA_ADMIN):
        for topic in LEDGER_TOPICS:
            own = WRITERS.get(topic) == principal
            allowed = own or (topic == DEADLETTER_TOPIC and principal != KAFKA_ADMIN)
            # Its own topic as its relay writes it; a refusal leaves nothing behind anyway.
            relay = relay_transactional_id(granted.settings, principal) if own else None
            name = granted.settings.topic(topic)
            assert await can_write(granted.access(principal), name, relay) == allowed, (
                principal,
                topic,
            )


async def test_each_service_reads_only_what_it_consumes(granted: Granted) -> None:
    await ensure_topics(granted.settings, LEDGER_TOPICS)
    reads = {definition.name: set(definition.reads) for definition in services()}
    for principal in (*SERVICE_NAMES, KAFKA_ADMIN):
        for topic in LEDGER_TOPICS:
            allowed = principal == KAFKA_ADMIN or topic in reads[principal]
            name = granted.settings.topic(topic)
            assert await can_read(granted.access(principal), name) == allowed, (principal, topic)


async def test_a_service_may_not_use_another_services_group_or_transactional_id(
    granted: Granted,
) -> None:
    """Joining approval's group would take its partitions; its transactional id would fence
    off its relay."""
    await ensure_topics(granted.settings, LEDGER_TOPICS)
    spending = granted.access("spending")
    consumer = AIOKafkaConsumer(
        granted.settings.topic("ledger.allocation"),
        **connection(spending),
        group_id=granted.settings.topic("approval.allocation"),
    )
    with pytest.raises(GroupAuthorizationFailedError):
        await _started(consumer)  # joining the group is refused
    producer = new_producer(spending, "thief", relay_transactional_id(granted.settings, "approval"))
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await _started(producer)
    own = relay_transactional_id(granted.settings, "spending")
    assert await can_write(spending, granted.settings.topic("ledger.spending"), own)


async def test_the_system_runs_with_each_service_as_its_own_principal(
    granted: Granted, token: Callable[..., str]
) -> None:
    """The grants are enough: a request flows through every service and into reporting, and
    the tools' principal creates the topics and verifies the whole ledger."""
    admin = granted.as_principal(KAFKA_ADMIN)
    await ensure_topics(admin, LEDGER_TOPICS)
    system_settings = granted.settings.model_copy(update={"kafka_username": None})
    async with running_system(
        system_settings, token, reporting=True, kafka_passwords=granted.passwords
    ) as system:
        await system.configure()
        version = await system.enrol("fam-1", allocate=100_000)
        request_id = (await system.request("fam-1", 2_500, version=version))["request_id"]
        await system.settled(request_id, "approved")
        assert system.reporting is not None
        reporting = system.reporting

        async def reported() -> bool:
            path = "/pilots/wigan/families/fam-1/balance"
            response = await reporting.get(path, headers=system.admin())
            return response.status == 200 and (await response.json())["committed_pence"] == 2_500

        await wait_for(reported, timeout=20)
    code, output = await run_ledger(admin, "audit", "verify", "--pilot", "wigan")
    assert code == 0, output
