"""Rolling a restored store forward: which published events it lacks, and when a topic
cannot continue it (``shared.cli.recover.plan``, pure)."""

from __future__ import annotations

from shared.cli.audit import StoredEvent
from shared.cli.recover import plan
from shared.core.events import Envelope
from shared.web.registry import services
from tests.integration.fixtures import envelopes_for

SOURCE = "ledger/test"


def stored(envelopes: tuple[Envelope, ...]) -> list[StoredEvent]:
    return [StoredEvent.of(e.to_json_dict(), e.stream_version, pending=False) for e in envelopes]


def wires(envelopes: tuple[Envelope, ...]) -> list[dict[str, object]]:
    return [e.to_json_dict() for e in envelopes]


def test_what_the_topic_holds_past_the_store_is_put_back_in_order() -> None:
    """A store restored to version 2 of one stream, and which never had another stream: the
    topic's versions 3 to 5 and the other stream's whole history are missing, in order."""
    family = envelopes_for("p", "f", [1, 2, 3, 4, 5])
    other = envelopes_for("p", "g", [1, 2])
    found = plan(SOURCE, stored(family[:2]), wires(family[::-1] + other))
    assert found.problems == []
    assert found.held == 2
    missing = [(w["streamid"], w["streamversion"]) for w in found.missing]
    by_stream = {stream: [v for s, v in missing if s == stream] for stream, _ in missing}
    assert by_stream == {"family:p:f": [3, 4, 5], "family:p:g": [1, 2]}


def test_a_topic_that_forks_the_store_changes_nothing_of_that_stream() -> None:
    """The store's version 2 and the topic's are different events (another history), or the
    store holds the topic's event with another hash: each is named."""
    ours = envelopes_for("p", "f", [1, 2])
    theirs = envelopes_for("p", "f", [1, 7, 8])  # version 1 differs too: another id
    found = plan(SOURCE, stored(ours), wires(ours + theirs[2:]))
    assert found.missing == []
    [fork] = found.problems
    assert "does not chain" in fork
    altered = ours[1].model_copy(update={"hash": "0" * 64})
    [other_hash] = plan(SOURCE, stored(ours), wires((ours[0], altered))).problems
    assert "another hash" in other_hash


def test_a_gap_between_the_store_and_the_topic_is_named() -> None:
    """Versions missing from both (the topic lost them): nothing after them is put back."""
    family = envelopes_for("p", "f", [1, 2, 3, 4])
    found = plan(SOURCE, stored(family[:1]), wires(family[2:]))
    assert found.missing == []
    [gap] = found.problems
    assert "ends at version 1" in gap
    assert "goes on at 3" in gap


def test_an_event_of_another_source_is_never_put_back() -> None:
    forged = envelopes_for("p", "f", [1], source="ledger/forger")
    found = plan(SOURCE, [], wires(forged))
    assert found.missing == []
    assert "ledger/forger" in found.problems[0]


def test_every_service_that_publishes_can_be_rolled_forward() -> None:
    """A new publishing service says what its events write besides its store, or a restore
    of its database could not be rolled forward."""
    publishing = [d for d in services() if d.topic is not None]
    assert publishing
    assert [d.name for d in publishing if d.effects is None] == []
