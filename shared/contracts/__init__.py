"""What services may rely on about each other.

One module per published topic (:mod:`.allocation`, :mod:`.spending`, :mod:`.approval`)
holds the typed models of its events, each the one definition of its type and schema
version; the views of other services' facts that several services keep live once
(:mod:`.balances`, :mod:`.views`, :mod:`.periods`).

Consumers of another service's topic read its records through :func:`decode` and dispatch
on the classes. Two cases are handled explicitly:

- **A type no contract names** (a newer producer's new event): :func:`decode` returns None
  and the consumer passes the record over, as applied. A consumer reads only what it has a
  use for; a new type that others must act on comes with their upgrade.
- **A schema version newer than this code reads**: :func:`decode` raises
  :class:`~shared.core.events.NewerSchemaVersionError`. The consumer parks the record, and
  every later record of the same family behind it, and dead-letters it; once the consumer
  is upgraded, parked records are applied on its start, in order.
"""

from __future__ import annotations

from shared.contracts import allocation, approval, spending
from shared.core.events import DomainEvent, Envelope, EventRegistry

__all__ = ["PUBLISHED", "REGISTRIES", "TOPICS", "decode"]

PUBLISHED = EventRegistry.merge(allocation.REGISTRY, spending.REGISTRY, approval.REGISTRY)
"""Every event type any service publishes, by type and schema version."""

TOPICS = (allocation.TOPIC, spending.TOPIC, approval.TOPIC)
"""The topics these contracts describe, in the order their owners were built."""

REGISTRIES = {
    allocation.TOPIC: allocation.REGISTRY,
    spending.TOPIC: spending.REGISTRY,
    approval.TOPIC: approval.REGISTRY,
}
"""The events each topic carries."""


def decode(envelope: Envelope) -> DomainEvent | None:
    """The typed event in a published envelope; None for a type no contract names."""
    return PUBLISHED.decode_known(envelope)
