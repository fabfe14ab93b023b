"""A service's AsyncAPI 3.0 document: the topics it sends to and receives from, every event's
CloudEvent (wire format 2) with its ``data`` schema from the contract models the services
use, the Kafka key and the record headers. Served at ``/asyncapi.json``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.contracts import REGISTRIES
from shared.core.events import FORMAT_ATTRIBUTE

__all__ = ["asyncapi_document"]

_REF = "#/components/schemas/{model}"
_STRING = {"type": "string"}
_MOMENT = {"type": "string", "format": "date-time"}
_HEADERS = {
    "type": "object",
    "properties": {
        "content-type": {"const": "application/cloudevents+json"},
        "type": {"type": "string", "description": "The event's type, as in the payload"},
        "traceparent": {
            "type": "string",
            "description": "W3C trace context of the request it was recorded in, when traced",
        },
    },
    "required": ["content-type", "type"],
}
_KEY = {
    "type": "string",
    "description": "pilot_id, or pilot_id:family_id for a family's events: a family's events "
    "stay in order on one partition",
}


def asyncapi_document(
    *,
    title: str,
    version: str,
    sends: str | None,
    receives: Sequence[str],
    bootstrap: str,
    tls: bool,
) -> dict[str, Any]:
    """The document of a service that publishes ``sends`` and consumes ``receives``
    (unprefixed topic names), on the broker at ``bootstrap`` (over TLS when ``tls``)."""
    topics = [*([sends] if sends else []), *receives]
    # A topic no contract describes (a plugged-in service's own) is listed without messages.
    events = {topic: REGISTRIES[topic].events if topic in REGISTRIES else () for topic in topics}
    wanted: list[tuple[type[BaseModel], Literal["serialization"]]] = [
        (event, "serialization") for classes in events.values() for event in classes
    ]
    refs, defs = models_json_schema(wanted, ref_template=_REF)
    schemas: dict[str, Any] = _asyncapi_schema(dict(defs.get("$defs", {})))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for topic, classes in events.items():
        names = []
        for event in classes:
            name = _slug(event.event_type)
            names.append(name)
            schemas[f"{name}_event"] = _cloudevent(event.event_type, refs[(event, "serialization")])
            messages[name] = {
                "name": event.event_type,
                "title": event.event_type,
                "summary": (event.__doc__ or event.event_type).strip().splitlines()[0],
                "contentType": "application/cloudevents+json",
                "headers": _HEADERS,
                "payload": {"$ref": f"#/components/schemas/{name}_event"},
                "bindings": {"kafka": {"key": _KEY, "bindingVersion": "0.5.0"}},
            }
        channels[_slug(topic)] = {
            "address": topic,
            "servers": [{"$ref": "#/servers/ledger"}],
            "description": f"Kafka topic {topic} (with the deployment's LEDGER_TOPIC_PREFIX)",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        }
    operations = {
        f"{'send' if topic == sends else 'receive'}_{_slug(topic)}": {
            "action": "send" if topic == sends else "receive",
            "channel": {"$ref": f"#/channels/{_slug(topic)}"},
        }
        for topic in topics
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Every event is a CloudEvent 1.0 in the Kafka binding's structured "
            "mode, in the ledger's wire format 2; events recorded before it keep format 1.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "ledger": {
                "host": bootstrap,
                "protocol": "kafka-secure" if tls else "kafka",
                "description": (
                    "The ledger's broker, as this service reaches it: SASL/SCRAM-SHA-512 "
                    + ("over TLS (SASL_SSL)" if tls else "without TLS (SASL_PLAINTEXT)")
                    + "; each principal may read and write only what its ACLs grant"
                ),
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "A Kafka principal of the ledger's, by SASL/SCRAM-SHA-512",
                }
            },
        },
    }


def _cloudevent(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one event type's CloudEvent (wire format 2)."""
    properties: dict[str, Any] = {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "format": "uuid"},
        "type": {"const": event_type},
        "source": {"type": "string", "description": "ledger/<service> that recorded it"},
        "time": {**_MOMENT, "description": "When the ledger recorded it (UTC)"},
        "subject": _STRING,
        "datacontenttype": {"const": "application/json"},
        "data": data,
        "schemaversion": {"type": "integer", "minimum": 1},
        "pilotid": _STRING,
        "familyid": _STRING,
        "streamid": _STRING,
        "streamversion": {"type": "integer", "minimum": 1},
        "occurredat": {**_MOMENT, "description": "When it happened, as the caller says (UTC)"},
        "actorsub": _STRING,
        "actorrole": _STRING,
        "correlationid": _STRING,
        "causationid": _STRING,
        "prevhash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        FORMAT_ATTRIBUTE: {"const": 2},
    }
    optional = {"familyid", "causationid"}
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _asyncapi_schema(schema: Any) -> Any:  # noqa: ANN401 - any part of a JSON schema
    """pydantic's JSON schema as AsyncAPI's schema format reads it: a ``discriminator`` is
    the property's name (the variants' ``const`` values already say which is which)."""
    if isinstance(schema, dict):
        return {
            key: value["propertyName"]
            if key == "discriminator" and isinstance(value, dict)
            else _asyncapi_schema(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name)
