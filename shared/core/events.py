"""The event envelope, its canonical encoding and hash chain, and how domain events are typed.

A domain event is a frozen pydantic model with a stable ``event_type`` string and a
``schema_version``. It travels inside an :class:`Envelope` that adds identity, stream
position, both times, who acted and why, and the per-stream hash chain.

An envelope is stored and published in the wire format it was written in, and its hash is
taken over that form, so an event never changes. Format 2 (every event written since
2026-12-01) is a CloudEvent 1.0 in its JSON format, strictly: the ledger's attributes are
extensions named as the specification allows (lower-case letters and digits), who acted is
two of them (``actorsub``, ``actorrole``), an absent family or causation is left out rather
than null, and ``datacontenttype`` is ``application/json``. Format 1, the first, spelled the
same attributes with underscores, ``actor`` as an object and nulls; events in it read,
replay and verify as ever, and a stream's first format-2 event chains to its last format-1
one. :data:`WIRE_NAMES` is the mapping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

__all__ = [
    "CURRENT_FORMAT",
    "FORMAT_ATTRIBUTE",
    "GENESIS_HASH",
    "WIRE_NAMES",
    "Actor",
    "DomainEvent",
    "Envelope",
    "EventRegistry",
    "NewerSchemaVersionError",
    "canonical_json",
    "carries_its_hash",
    "chain_hash",
    "fold",
    "format_time",
    "partition_key",
    "wire_dumps",
    "wire_loads",
    "wire_value",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of every stream's first event."""

CURRENT_FORMAT = 2
FORMAT_ATTRIBUTE = "ledgerformat"  # absent in format 1
# Format 2's name (a CloudEvents extension attribute) of each envelope field format 1 named
# otherwise; ``actor`` becomes actorsub and actorrole.
WIRE_NAMES = {
    "schema_version": "schemaversion",
    "pilot_id": "pilotid",
    "family_id": "familyid",
    "stream_id": "streamid",
    "stream_version": "streamversion",
    "occurred_at": "occurredat",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "prev_hash": "prevhash",
}
_FIELD_NAMES = {wire: field for field, wire in WIRE_NAMES.items()}


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: the one textual form of a timestamp in the ledger."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes a hash is taken over, stable across processes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


class Frozen(BaseModel):
    """Base of the ledger's value objects: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Actor(Frozen):
    """Who caused an event: a person through their token, a case system, or a rule of the ledger."""

    sub: str
    role: str


class DomainEvent(Frozen):
    """A fact decided by a service. Subclasses set ``event_type`` and ``schema_version``."""

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Envelope(Frozen):
    """An event as stored, published and replayed. Never changed once written."""

    specversion: str = "1.0"
    id: UUID
    type: str
    source: str
    time: AwareDatetime = Field(description="When the ledger recorded the event (UTC).")
    subject: str
    schema_version: int
    pilot_id: str
    family_id: str | None
    stream_id: str
    stream_version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(description="When it happened, as the caller says (UTC).")
    actor: Actor
    correlation_id: str
    causation_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str
    wire_format: int = Field(
        default=1,
        ge=1,
        le=CURRENT_FORMAT,
        description="The wire format it was stored and published in, and hashed over: 2, a "
        "CloudEvent with the ledger's attributes as extensions (streamid, prevhash, ...); 1, "
        "the first form, with the field names used here",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, value: Any) -> Any:  # noqa: ANN401 - whatever pydantic is given
        if isinstance(value, Mapping) and FORMAT_ATTRIBUTE in value:
            return _fields_of(value)
        return value

    @field_serializer("time", "occurred_at")
    def _serialize_time(self, moment: datetime) -> str:
        return format_time(moment)

    def to_json_dict(self) -> dict[str, Any]:
        """The envelope as stored and published: plain JSON values, in its wire format."""
        fields = self.model_dump(mode="json")
        if self.wire_format == 1:
            del fields["wire_format"]  # format 1 knew no such field
            return fields
        return _cloudevent_of(fields)

    def partition_key(self) -> bytes:
        """Kafka key of this event (see :func:`partition_key`)."""
        return partition_key(self.pilot_id, self.family_id)

    def computed_hash(self) -> str:
        """The hash this envelope must carry, given its content and ``prev_hash``."""
        return chain_hash(self.to_json_dict())


def _cloudevent_of(fields: dict[str, Any]) -> dict[str, Any]:
    """Format 2 of an envelope's fields: a CloudEvent 1.0 (JSON format)."""
    left = {"actor", "wire_format"}
    event = {k: v for k, v in fields.items() if k not in WIRE_NAMES and k not in left}
    event.update({WIRE_NAMES[k]: fields[k] for k in WIRE_NAMES if fields[k] is not None})
    event["actorsub"], event["actorrole"] = fields["actor"]["sub"], fields["actor"]["role"]
    event["datacontenttype"] = "application/json"
    event[FORMAT_ATTRIBUTE] = 2
    return event


def _fields_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """An envelope's fields from its format-2 form (what is left unknown fails validation)."""
    fields = {
        _FIELD_NAMES.get(name, name): value
        for name, value in event.items()
        if name not in {"actorsub", "actorrole", "datacontenttype", FORMAT_ATTRIBUTE}
    }
    fields.setdefault("family_id", None)
    fields.setdefault("causation_id", None)
    fields["actor"] = {"sub": event.get("actorsub"), "role": event.get("actorrole")}
    fields["wire_format"] = event[FORMAT_ATTRIBUTE]
    return fields


def partition_key(pilot_id: str, family_id: str | None) -> bytes:
    """Kafka key: pilot and family, so a family's events stay in order on one partition."""
    return (pilot_id if family_id is None else f"{pilot_id}:{family_id}").encode()


def chain_hash(envelope: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical encoding of everything in the envelope except ``hash``."""
    return chain_hash_and_size(envelope)[0]


def chain_hash_and_size(envelope: Mapping[str, Any]) -> tuple[str, int]:
    """:func:`chain_hash`, and the length of the envelope's canonical encoding once it
    carries that hash: the encoding hashed with ``,"hash":"…"`` put in, so one encoding
    serves both (an envelope has other fields)."""
    encoded = canonical_json(_without_hash(envelope))
    digest = hashlib.sha256(encoded).hexdigest()
    return digest, len(encoded) + len(',"hash":""') + len(digest)


def carries_its_hash(wire: Mapping[str, Any]) -> bool:
    """Whether a stored or published event's ``hash`` is :func:`chain_hash` of the rest of it,
    read straight from its wire form (no model: the audit checks millions of these).

    orjson's sorted, compact encoding is byte for byte :func:`canonical_json`'s for text,
    integers within 64 bits, booleans and null, and several times faster. Where it is not
    (a float below 1e-4 in size, which it spells otherwise) or refuses a value, the fast hash
    misses and the canonical encoding decides: a match is never missed and never invented.
    """
    claimed = wire.get("hash")
    body = _without_hash(wire)
    try:
        fast = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, say
        fast = None
    return fast == claimed or chain_hash(wire) == claimed


def _without_hash(envelope: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(envelope)  # a copy, then a delete: a sixth of a filtering comprehension's time
    body.pop("hash", None)
    return body


def wire_loads(text: str | bytes) -> Any:  # noqa: ANN401 - any JSON value
    """JSON as stored or published, parsed by orjson, or by json where orjson refuses a
    value it cannot hold (an integer beyond 64 bits); ValueError if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def wire_dumps(value: object) -> str:
    """JSON text of a value, by orjson, or by json where orjson refuses one (an integer
    beyond 64 bits): for PostgreSQL to store, not to hash (that is :func:`canonical_json`)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, ensure_ascii=False, allow_nan=False)


def wire_value(wire: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - any JSON value
    """An envelope field (by its name here) of an event in its wire form, either format;
    None if absent. ``actor`` is not one: format 2 spells it as two attributes."""
    return wire.get(WIRE_NAMES.get(name, name) if FORMAT_ATTRIBUTE in wire else name)


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class NewerSchemaVersionError(Exception):
    """An event written by a newer version of its producer than this code knows.

    Reading it as the older version would guess at fields that may mean something else:
    a consumer parks such a record (and dead-letters it) until it is upgraded; parked
    records are tried again when it starts.
    """


class EventRegistry:
    """Maps ``(type, schema_version)`` to the event class, upcasting older versions first."""

    def __init__(
        self,
        events: tuple[type[DomainEvent], ...],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self._classes = {cls.event_type: cls for cls in events}
        if len(self._classes) != len(events):
            raise ValueError("two event classes share a type")
        self._upcasters = dict(upcasters or {})

    @classmethod
    def merge(cls, *registries: EventRegistry) -> EventRegistry:
        """One registry that knows every type (and upcaster) of the given ones."""
        return cls(
            tuple(event for registry in registries for event in registry.events),
            {key: up for registry in registries for key, up in registry.upcasters.items()},
        )

    @property
    def events(self) -> tuple[type[DomainEvent], ...]:
        """The event classes this registry decodes."""
        return tuple(self._classes.values())

    @property
    def upcasters(self) -> Mapping[tuple[str, int], Upcaster]:
        """The upcasters, by the type and version each reads."""
        return dict(self._upcasters)

    def knows(self, event_type: str) -> bool:
        """Whether this registry can decode events of that type."""
        return event_type in self._classes

    def decode(self, envelope: Envelope) -> DomainEvent:
        """The domain event inside an envelope, read through any upcasters.

        KeyError for a type this registry does not know; NewerSchemaVersionError for a
        version newer than its class.
        """
        cls = self._classes[envelope.type]
        data, version = dict(envelope.data), envelope.schema_version
        if version > cls.schema_version:
            raise NewerSchemaVersionError(
                f"{envelope.type} version {version} is newer than this code reads "
                f"(version {cls.schema_version}): upgrade the consumer"
            )
        while version < cls.schema_version:
            data = self._upcasters[(envelope.type, version)](data)
            version += 1
        return cls.model_validate(data)

    def decode_known(self, envelope: Envelope) -> DomainEvent | None:
        """The domain event inside an envelope, or None for a type this registry does not know."""
        return self.decode(envelope) if self.knows(envelope.type) else None


StateT = TypeVar("StateT")


def fold(
    envelopes: Iterable[Envelope],
    registry: EventRegistry,
    state: StateT,
    evolve: Callable[[StateT, DomainEvent], StateT],
) -> StateT:
    """The state after every event in order; types the registry does not know are passed over."""
    for envelope in envelopes:
        if registry.knows(envelope.type):
            state = evolve(state, registry.decode(envelope))
    return state
