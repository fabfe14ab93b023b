"""Envelopes: canonical encoding, hash chains, upcasting."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest

from shared.cli.audit import StoredEvent, check_store
from shared.contracts import PUBLISHED
from shared.contracts.allocation import PilotConfigured
from shared.contracts.periods import ALWAYS, PeriodLength
from shared.core.events import (
    CURRENT_FORMAT,
    FORMAT_ATTRIBUTE,
    GENESIS_HASH,
    DomainEvent,
    Envelope,
    EventRegistry,
    NewerSchemaVersionError,
    canonical_json,
    chain_hash,
    chain_hash_and_size,
)
from shared.core.eventstore import PendingEvent, Stream
from tests.integration.fixtures import CONTEXT, Noted, envelopes_for, new_store


def test_canonical_json_ignores_key_order_and_spacing() -> None:
    """The bytes a hash is taken over depend on content only."""
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == canonical_json(
        {"a": [1, {"c": None, "d": "é"}], "b": 1}
    )


def test_a_changed_amount_breaks_the_chain() -> None:
    """Altering any field of an event makes its hash wrong."""
    first, second = envelopes_for("p", "f", [1, 2])
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert second.computed_hash() == second.hash
    tampered = second.model_copy(update={"data": {**second.data, "number": 3}})
    assert tampered.computed_hash() != tampered.hash


class RenamedV2(DomainEvent):
    event_type: ClassVar[str] = "test.renamed"
    schema_version: ClassVar[int] = 2
    amount_pence: int


def test_old_schema_versions_are_read_through_upcasters() -> None:
    """A version-1 event is upcast before it is validated as version 2."""

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount_pence": data["amount"]}

    registry = EventRegistry((RenamedV2,), {("test.renamed", 1): v1_to_v2})
    [envelope] = envelopes_for("p", "f", [7])
    old = envelope.model_copy(
        update={"type": "test.renamed", "schema_version": 1, "data": {"amount": 7}}
    )
    assert registry.decode(old) == RenamedV2(amount_pence=7)


def test_a_newer_schema_version_is_refused_not_guessed() -> None:
    """A version above its class's is NewerSchemaVersionError, never read as the older one;
    a type the registry does not know is None from decode_known (KeyError from decode)."""
    registry = EventRegistry((RenamedV2,))
    [envelope] = envelopes_for("p", "f", [7])
    newer = envelope.model_copy(
        update={"type": "test.renamed", "schema_version": 3, "data": {"amount_pence": 7}}
    )
    with pytest.raises(NewerSchemaVersionError, match="version 3 is newer"):
        registry.decode(newer)
    unknown = envelope.model_copy(update={"type": "test.unheard_of"})
    assert registry.decode_known(unknown) is None
    with pytest.raises(KeyError):
        registry.decode(unknown)


def test_a_version_1_pilot_configuration_reads_as_version_3() -> None:
    """pilot.configured of version 1 (before backdating_days and period_lengths) reads with
    31 days of backdating and its period_months since always, as it was judged then."""
    [envelope] = envelopes_for("p", "f", [7])
    config = {
        "name": "Wigan",
        "period_months": 12,
        "family_cap_pence": 400_000,
        "allocation": {"mode": "all"},
        "approval_tiers": [],
        "categories": ["other"],
        "forecast_spend_per_family_pence": None,
    }
    old = envelope.model_copy(
        update={
            "type": "pilot.configured",
            "schema_version": 1,
            "data": {"pilot_id": "p", "version": 1, "config": config},
        }
    )
    event = PUBLISHED.decode(old)
    assert isinstance(event, PilotConfigured)
    assert event.config.backdating_days == 31
    assert event.period_lengths == (PeriodLength(since=ALWAYS, months=12),)


def _format_1(envelope: Envelope) -> Envelope:
    """The envelope as the first wire format wrote it: field names, nulls, actor an object,
    hashed over that form (what every event recorded before 2026-12-01 looks like)."""
    body = envelope.model_dump(mode="json", exclude={"wire_format"})
    body["hash"] = chain_hash(body)
    return Envelope.model_validate(body)


def test_new_events_are_cloudevents_with_extensions_the_specification_allows() -> None:
    """Format 2: attribute names of lower-case letters and digits, no nulls, no objects
    but data, datacontenttype set; it reads back to the same envelope."""
    [event] = envelopes_for("p", "f", [1])
    wire = event.to_json_dict()
    assert event.wire_format == CURRENT_FORMAT == wire[FORMAT_ATTRIBUTE] == 2
    assert all(re.fullmatch("[a-z0-9]{1,20}", name) for name in wire)
    assert None not in wire.values()
    assert [name for name, value in wire.items() if isinstance(value, dict)] == ["data"]
    assert wire["datacontenttype"] == "application/json"
    assert (wire["actorsub"], wire["actorrole"]) == (event.actor.sub, event.actor.role)
    assert "familyid" in wire
    assert "causationid" not in wire  # none given: left out, not null
    assert Envelope.model_validate(wire) == event
    assert event.computed_hash() == event.hash == chain_hash(wire)


def test_format_1_events_read_replay_and_verify_and_format_2_continues_their_chain() -> None:
    """An event is never rewritten: an old one keeps its form and its hash, and a stream's
    first new-format event chains to its last old one; verification holds across it."""
    old = _format_1(envelopes_for("p", "f", [1])[0])
    wire = old.to_json_dict()
    assert wire["stream_id"] == old.stream_id
    assert wire["actor"] == {"sub": old.actor.sub, "role": old.actor.role}
    assert "causation_id" in wire  # format 1 kept its nulls
    assert old.wire_format == 1
    assert old.computed_hash() == old.hash
    [new] = new_store().seal(
        Stream(old.stream_id, (old,)), [PendingEvent(Noted(number=2), "p", "f")], CONTEXT
    )
    assert (new.wire_format, new.stream_version, new.prev_hash) == (2, 2, old.hash)
    stored = [StoredEvent.of(e.to_json_dict(), e.stream_version, pending=False) for e in (old, new)]
    assert check_store("test", stored) == []
    tampered = new.model_copy(update={"data": {"number": 3, "poison": False}})
    assert check_store(
        "test", [stored[0], StoredEvent.of(tampered.to_json_dict(), 2, pending=False)]
    )


@pytest.mark.parametrize("text", ["", "é ✓ 𝄞", '"quoted" \\ back', "x" * 5_000])
def test_a_sealed_events_size_is_its_canonical_encodings(text: str) -> None:
    """The size the store checks against its limit is the length of the event's canonical
    encoding with its hash, worked out from the encoding the hash was taken over."""
    envelope = envelopes_for("p", "f", [1])[0].to_json_dict()
    envelope["data"] = {"text": text, "number": 1.5e-7}
    digest, size = chain_hash_and_size(envelope)
    assert digest == chain_hash(envelope)
    assert size == len(canonical_json({**envelope, "hash": digest}))
