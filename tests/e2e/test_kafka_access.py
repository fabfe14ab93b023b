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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
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

from deploy.stack import access_script, ledger_access_script, password_variable
from shared.contracts.allocation import BudgetAllocated
from shared.core.events import DomainEvent
from shared.core.kafka import DEADLETTER_TOPIC, connection, ensure_topics, new_producer
from shared.core.settings import KafkaAccess, Settings
from shared.core.topics import TopicContract
from shared.web.registry import KAFKA_ADMIN, ledger_topics, services
from shared.web.service import relay_transactional_id, source_of
from tests.conftest import Infrastructure
from tests.e2e.system import running_system
from tests.support import (
    SERVICE_NAMES,
    connect_service_db,
    forged_record,
    quiet,
    run_ledger,
    wait_for,
)

LEDGER_TOPICS = ledger_topics()
WRITERS = {definition.topic: definition.name for definition in services() if definition.topic}
PILOT = "forgery"  # the forgery test's own pilot


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


def _forged(owner: str, event: DomainEvent, stream_id: str) -> tuple[bytes, bytes]:
    """A record as ``owner``'s store would seal it: its source, a true hash, version 1."""
    return forged_record(source_of(owner), event, stream_id, PILOT, "fam-1")


def _bare(event_type: str) -> DomainEvent:
    """An event of that type with no data: a forgery rejected only for what it is (one that
    got as far as a handler would fail there instead, and be parked as a failure)."""
    if event_type == BudgetAllocated.event_type:  # money: what a forger would really send
        return BudgetAllocated(
            allocation_id=uuid.uuid4(),
            amount_pence=5_000_000,
            period_start=date(2026, 1, 5),
            period_end=date(2027, 1, 4),
            note=None,
            pilot_version=1,
            period_allocated_pence=5_100_000,
        )
    forged: type[DomainEvent] = type("Forged", (DomainEvent,), {"event_type": event_type})
    return forged()


def _forgeries(forger: TopicContract, others: list[TopicContract]) -> list[tuple[bytes, bytes]]:
    """Every type the others carry, on the forger's own kind of stream; and one of the
    forger's own types on another's kind of stream."""
    owner = WRITERS[forger.topic]
    own_stream = f"{min(forger.streams)}:{PILOT}:{uuid.uuid4()}"
    records = [
        _forged(owner, _bare(name), own_stream) for other in others for name in sorted(other.types)
    ]
    their_stream = f"{min(others[0].streams)}:{PILOT}:{uuid.uuid4()}"
    return [*records, _forged(owner, _bare(min(forger.types)), their_stream)]


async def _publish(granted: Granted, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Publish the records on the topic with its owner's credentials."""
    producer = new_producer(granted.access(WRITERS[topic]), "forger")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(granted.settings.topic(topic), value=value, key=key)
    finally:
        await producer.stop()


async def test_no_service_can_forge_another_services_facts(
    granted: Granted, token: Callable[..., str]
) -> None:
    """Each service's own credentials publish, on its own topic, every type the other
    services own (and one of its own types on another's kind of stream): every consumer
    rejects each before applying anything, and no balance moves. It used to apply them: a
    £50,000 family.budget_allocated on spending's topic funded a family."""
    admin = granted.as_principal(KAFKA_ADMIN)
    await ensure_topics(admin, LEDGER_TOPICS)
    settings = granted.settings.model_copy(update={"kafka_username": None})
    contracts = [d.publishes for d in services() if d.publishes is not None]
    async with running_system(
        settings, token, reporting=True, kafka_passwords=granted.passwords
    ) as system:
        system.pilot = PILOT  # the module's other tests share its databases
        await system.configure()
        version = await system.enrol("fam-1", allocate=100_000)
        request_id = (await system.request("fam-1", 2_500, version=version))["request_id"]
        await system.settled(request_id, "approved")
        await wait_for(lambda: quiet(settings), timeout=30)  # every service holds the hold
        before = await _balances(settings)
        forged = {}
        for contract in contracts:
            records = _forgeries(contract, [c for c in contracts if c != contract])
            await _publish(granted, contract.topic, records)
            forged[contract.topic] = len(records)
        for topic, count in forged.items():
            await _all_rejected(settings, settings.topic(topic), count)
        assert await _balances(settings) == before
        big = await system.request("fam-1", 2_000_000, version=version)
        assert (await system.settled(big["request_id"], "rejected"))["approved_pence"] == 0


async def _balances(settings: Settings) -> list[list[tuple[int, ...]]]:
    """What allocation, approval and reporting hold of fam-1's money."""
    found = []
    for service in ("allocation", "approval", "reporting"):
        async with connect_service_db(settings, service) as conn:
            rows = await conn.fetch(
                "SELECT allocated_pence, held_pence, spent_pence FROM balances "
                "WHERE pilot_id = $1 AND family_id = 'fam-1' ORDER BY period_start",
                PILOT,
            )
        found.append([tuple(row) for row in rows])
    return found


async def _all_rejected(settings: Settings, topic: str, count: int) -> None:
    """Each consumer of every service that reads the topic has parked ``count`` records of
    it, every one rejected (not failed, not applied)."""
    readers = [d.name for d in services() if topic in map(settings.topic, d.reads)]
    assert readers
    for service in readers:
        async with connect_service_db(settings, service) as conn:

            async def parked(conn: asyncpg.Connection = conn) -> bool:
                rows = await conn.fetch(_PARKED_BY_CONSUMER, topic)
                return bool(rows) and all(row["parked"] >= count for row in rows)

            await wait_for(parked, timeout=30)
            rows = await conn.fetch(
                "SELECT consumer, error FROM consumer_parked WHERE topic = $1", topic
            )
        assert all(row["error"].startswith("rejected: ") for row in rows), [
            (service, row["consumer"], row["error"]) for row in rows
        ]


# Per consumer that has read the topic: how many of its records it parked.
_PARKED_BY_CONSUMER = """
SELECT o.consumer, (SELECT count(*) FROM consumer_parked p
                    WHERE p.consumer = o.consumer AND p.topic = o.topic) AS parked
FROM consumer_offsets o WHERE o.topic = $1 GROUP BY o.consumer, o.topic
"""


async def test_kafka_passwords_are_never_on_a_command_line(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """The access script gives a principal its password through a file, and the broker's
    storage is formatted with the superuser's from a file java reads its arguments from:
    a wrapper around Kafka's tools records every command line it is given, and no password
    is on any (each used to be, readable by any user of the machine in ``ps``); the
    principal then logs in with its password."""
    real = infra.kafka.tools()
    wrappers, seen = tmp_path / "bin", tmp_path / "command-lines"
    wrappers.mkdir()
    for tool in ("kafka-configs.sh", "kafka-acls.sh"):
        wrapper = wrappers / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >>{seen}\nexec {real / tool} "$@"\n')
        wrapper.chmod(0o755)
    name, password = f"probe{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    result = await asyncio.to_thread(
        infra.kafka.run_script,
        access_script([name], []),
        {password_variable(name): password},
        wrappers,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = seen.read_text()
    assert f"--entity-name {name}" in lines
    assert password not in lines
    assert infra.kafka.password not in lines
    producer = AIOKafkaProducer(**connection(KafkaAccess(infra.kafka.bootstrap, name, password)))
    await _started(producer)  # authenticated with the password it was given
    await producer.stop()
    command, arguments = infra.kafka.format_command("cluster-id", tmp_path / "server.properties")
    assert infra.kafka.password not in " ".join(command)
    assert infra.kafka.password in arguments.read_text()
    assert arguments.stat().st_mode & 0o077 == 0
    arguments.unlink()


async def test_running_the_access_script_again_keeps_every_password(infra: Infrastructure) -> None:
    """compose's kafka-access job runs at every `up` and `run`: it must not reset a password
    the services are using. A user keeps the password it has; an operator who means to change
    them all says so (KAFKA_RESET_PASSWORDS=yes)."""
    name = f"probe{secrets.token_hex(4)}"
    first, second = secrets.token_urlsafe(16), secrets.token_urlsafe(16)

    def run(password: str, **variables: str) -> str:
        script = access_script([name], [])
        result = infra.kafka.run_script(script, {password_variable(name): password, **variables})
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    async def logs_in(password: str) -> bool:
        kafka = KafkaAccess(infra.kafka.bootstrap, name, password)
        producer = AIOKafkaProducer(**connection(kafka), request_timeout_ms=3_000)
        try:
            await _started(producer)
        except (KafkaConnectionError, KafkaError):
            return False
        await producer.stop()
        return True

    await asyncio.to_thread(run, first)
    assert "kept" in await asyncio.to_thread(run, second)
    assert (await logs_in(first), await logs_in(second)) == (True, False)
    await asyncio.to_thread(run, second, KAFKA_RESET_PASSWORDS="yes")
    assert (await logs_in(first), await logs_in(second)) == (False, True)
