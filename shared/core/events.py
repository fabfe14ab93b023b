"""The event envelope, its canonical encoding and hash chain, and how domain events are typed.

A domain event is a frozen pydantic model with a stable ``event_type`` string and a
``schema_version``. It travels inside an :class:`Envelope` (CloudEvents-style) that adds
identity, stream position, both times, who acted and why, and the per-stream hash chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "DomainEvent",
    "Envelope",
    "EventRegistry",
    "NewerSchemaVersionError",
    "canonical_json",
    "chain_hash",
    "fold",
    "format_time",
    "partition_key",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of every stream's first event."""


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

    @field_serializer("time", "occurred_at")
    def _serialize_time(self, moment: datetime) -> str:
        return format_time(moment)

    def to_json_dict(self) -> dict[str, Any]:
        """The envelope as plain JSON values."""
        return self.model_dump(mode="json")

    def partition_key(self) -> bytes:
        """Kafka key of this event (see :func:`partition_key`)."""
        return partition_key(self.pilot_id, self.family_id)

    def computed_hash(self) -> str:
        """The hash this envelope must carry, given its content and ``prev_hash``."""
        return chain_hash(self.to_json_dict())


def partition_key(pilot_id: str, family_id: str | None) -> bytes:
    """Kafka key: pilot and family, so a family's events stay in order on one partition."""
    return (pilot_id if family_id is None else f"{pilot_id}:{family_id}").encode()


def chain_hash(envelope: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical encoding of everything in the envelope except ``hash``."""
    body = {key: value for key, value in envelope.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


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
