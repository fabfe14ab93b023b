"""The audit's pure parts: the history's order, and what a relay's re-publication does to it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.cli.audit import StoredEvent, TopicRead, check_store, check_topic, in_order
from shared.core.events import Envelope, carries_its_hash, chain_hash
from tests.integration.fixtures import envelopes_for


def test_a_batch_published_twice_is_replayed_once() -> None:
    """A relay that dies between the Kafka commit and the outbox delete publishes its batch
    again; the replayed history holds each event once, in order."""
    first = [e.to_json_dict() for e in envelopes_for("p", "f", [1, 2, 3])]
    again = first[1:]
    history = in_order([*first, *again])
    assert [wire["id"] for wire in history] == [wire["id"] for wire in first]


def stored(envelopes: tuple[Envelope, ...], pending: bool = False) -> list[StoredEvent]:
    return [StoredEvent.of(e.to_json_dict(), e.stream_version, pending) for e in envelopes]


def test_intact_chains_have_no_problem() -> None:
    """Given a stream as the store seals it, when checked, then nothing is broken."""
    assert check_store("allocation", stored(envelopes_for("p", "f", [1, 2, 3]))) == []


def test_each_kind_of_tampering_is_named_at_its_first_broken_link() -> None:
    """An altered amount, a removed event and swapped events each break their stream at the
    first event that no longer fits, and nowhere else."""
    events = envelopes_for("p", "f", [1, 2, 3])
    altered = events[1].model_copy(update={"data": {"number": 99, "poison": False}})
    [problem] = check_store("s", stored((events[0], altered, events[2])))
    assert problem.stream_version == 2
    assert "altered" in problem.detail
    [removed] = check_store("s", stored((events[0], events[2])))
    assert removed.stream_version == 3
    assert "removed" in removed.detail
    swapped = [
        StoredEvent.of(events[2].to_json_dict(), 2, pending=False),
        StoredEvent.of(events[1].to_json_dict(), 3, pending=False),
    ]
    [moved] = check_store("s", [*stored(events[:1]), *swapped])
    assert "moved" in moved.detail


def test_the_topic_must_hold_what_the_store_holds() -> None:
    """An event missing from the topic (and not waiting in the outbox), one with another hash
    there, one the store no longer has, and a record that is no ledger event are each a
    problem; a pending one is not, nor one published after the store was read."""
    events = envelopes_for("p", "f", [1, 2, 3, 4])
    in_store = [*stored(events[:3]), *stored(events[3:], pending=True)]
    read = TopicRead(
        hashes={
            str(events[0].id): events[0].hash,
            str(events[1].id): "0" * 64,
            "gone": "x",
            "newer": "y",  # published after the store was read: not expected there
        },
        settled={str(events[0].id), str(events[1].id), "gone"},
        foreign=["t:0@7: 1 problem(s), Invalid JSON"],
    )
    details = {(p.event_id, p.detail) for p in check_topic("s", in_store, read)}
    assert details == {
        (str(events[1].id), "the topic holds it with another hash: one copy was altered"),
        (str(events[2].id), "it is in the store but not on the topic"),
        ("gone", "it is on the topic but gone from the store"),
        ("?", "a record that is not a ledger event: t:0@7: 1 problem(s), Invalid JSON"),
    }


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=8), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "hash"), JSON, max_size=6))
def test_the_fast_hash_check_agrees_with_the_canonical_hash(body: dict[str, object]) -> None:
    """Given any JSON object (any text, integers beyond 64 bits included), when it carries
    chain_hash of itself, the fast check says so, and not once a byte of it changes."""
    wire = {**body, "hash": chain_hash(body)}
    assert carries_its_hash(wire)
    assert not carries_its_hash({**wire, "extra": 1})
    assert not carries_its_hash({**wire, "hash": "0" * 64})
