"""Every record on the ledger's topics, read by the official CloudEvents SDK (2.x, its JSON
format and Kafka binding) and by Kafka's own console consumer: what a client nobody here
wrote sees."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from deploy.stack import Kafka
from shared.contracts import allocation, approval, spending
from shared.core.events import canonical_json
from shared.core.settings import Settings
from tests.support import read_topic

TOPICS = (allocation.TOPIC, spending.TOPIC, approval.TOPIC)
ARTEFACTS = Path(".local/artefacts")


async def every_record_is_a_cloudevent(settings: Settings, run: str) -> Counter[tuple[str, str]]:
    """Each record in structured mode, read by the SDK to the same event; (topic, type)
    counted, and kept in .local/artefacts/cloudevents-<run>.json."""
    seen: Counter[tuple[str, str]] = Counter()
    for topic in TOPICS:
        for record in await read_topic(settings, topic):
            assert record.headers.get("content-type") == "application/cloudevents+json", record
            message = KafkaMessage(
                headers={name: value.encode() for name, value in record.headers.items()},
                key=record.key.encode(),
                value=canonical_json(record.value),  # the bytes the relay published
            )
            event = from_kafka(message, JSONFormat())
            assert event.get_id() == record.value["id"]
            assert event.get_type() == record.value["type"]
            assert event.get_data() == record.value["data"]
            assert event.get_extension("streamid") == record.envelope.stream_id
            seen[(topic, event.get_type())] += 1
    _keep(seen, run)
    return seen


def _keep(seen: Counter[tuple[str, str]], run: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    counts = {f"{topic} {kind}": n for (topic, kind), n in sorted(seen.items())}
    (ARTEFACTS / f"cloudevents-{run}.json").write_text(json.dumps(counts, indent=1))


async def console_consumer_headers(kafka: Kafka, settings: Settings, topic: str) -> str:
    """What Kafka's own console consumer prints for a topic's records, headers included."""
    config = kafka.home / "console-consumer.properties"
    config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{settings.kafka_username}" '
        f'password="{settings.kafka_password.get_secret_value()}";\n'
    )
    process = await asyncio.create_subprocess_exec(
        str(kafka.tools() / "kafka-console-consumer.sh"),
        "--bootstrap-server",
        kafka.bootstrap,
        "--consumer.config",
        str(config),
        "--topic",
        settings.topic(topic),
        "--from-beginning",
        "--isolation-level",
        "read_committed",
        "--property",
        "print.headers=true",
        "--timeout-ms",
        "5000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    return output.decode()
