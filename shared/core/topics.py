"""What a topic may carry: its owner's event types, on the streams its owner keeps.

Each ledger topic has one owner, the service whose relay writes it. The broker lets only
that service's principal write the topic, but a principal's credentials can leak, and a
consumer must not take a fact from a topic whose owner does not decide such facts: a
``family.budget_allocated`` on spending's topic is a forgery, whoever signed it in. So
every record a consumer reads is checked against its topic's :class:`TopicContract` (by
:meth:`TopicContract.refusal`) before anything is applied, as its hash is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.core.events import Envelope, EventRegistry

__all__ = ["TopicContract", "TopicOwner", "stream_category"]


def stream_category(stream_id: str) -> str:
    """The kind of aggregate a stream holds: ``family`` of ``family:<pilot>:<family>``."""
    return stream_id.partition(":")[0]


def _stream_pilot(stream_id: str) -> str:
    """The pilot a stream belongs to: every stream is ``<category>:<pilot_id>[:<entity>]``."""
    return stream_id.split(":", 2)[1] if stream_id.count(":") else ""


@dataclass(frozen=True)
class TopicContract:
    """A topic, the event types its owner publishes on it, and the categories of the streams
    those events belong to (a closed list: a new kind of stream comes with its consumers'
    upgrade, as a new schema version does)."""

    topic: str
    registry: EventRegistry
    streams: frozenset[str]
    types: frozenset[str] = field(init=False)  # the event types it carries, as this code knows

    def __post_init__(self) -> None:
        types = frozenset(event.event_type for event in self.registry.events)
        object.__setattr__(self, "types", types)

    def refusal(self, envelope: Envelope, foreign: frozenset[str]) -> str | None:
        """Why the event cannot be one this topic's owner published, or None.

        ``foreign``: the types other topics' contracts name. A type no contract names is not
        refused here (a newer owner's new event, passed over by consumers that do not know
        it), but it must still be on one of the owner's streams.
        """
        category = stream_category(envelope.stream_id)
        if category not in self.streams:
            return (
                f"stream {envelope.stream_id} is not a kind of stream {self.topic} carries "
                f"({', '.join(sorted(self.streams))})"
            )
        if _stream_pilot(envelope.stream_id) != envelope.pilot_id:
            return f"stream {envelope.stream_id} is not of pilot {envelope.pilot_id}"
        if envelope.type in foreign and envelope.type not in self.types:
            return f"{envelope.type} is another topic's event, not one {self.topic} carries"
        return None


@dataclass(frozen=True)
class TopicOwner:
    """The one source that writes a topic (``ledger/<service>``) and what it may write."""

    source: str
    contract: TopicContract
