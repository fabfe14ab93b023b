"""``ledger recover SERVICE``: a store restored to a moment, rolled forward from its topic.

A service's database restored from a base backup and the archived write-ahead log
(docs/operations.md, *Restoring one service's database*) lacks every event the service
recorded after the moment it was restored to; its topic still holds each one it published.
Each such event is put back if it continues its stream exactly -- the next version, its
``prev_hash`` the hash of the store's last event of the stream, its content matching its own
hash, its source the service -- without an outbox row (the topic has it), and with what the
event writes besides the store written again in the same transaction
(``ServiceDefinition.effects``: spending's indexes, allocation's adjustments, approval's
balances and request rows, erasures).
Every event is checked before any is put back: a topic that does not continue the store
(a fork, a gap, an event the store holds with another hash) is named and nothing changes.
Run again, it puts back only what is still missing.

Run it with the service stopped, before it takes a command: one taken first would append
at a version the topic already holds, and the stream would fork. The service's consumers
then carry on from the offsets restored with the store, applying again what other topics
said after the moment; what they would decide from it was decided already, and is on the
streams put back, so they decide nothing again (approval's consumer, meeting a request it
decided after the moment, takes the decision from the request's stream).

What a restore still loses: events committed and never published (the newest, if Kafka
was away or the relay behind); the answers kept for ``Idempotency-Key`` after the moment (a
client sending such a command again has it run again); and sealing keys made after the
moment (texts sealed under them read as erased; the command says how many events hold one).

A service that publishes nothing (reporting) needs no roll-forward: its consumers rebuild
what it holds from the offsets restored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.cli import audit
from shared.cli.progress import progress_bar
from shared.core import eventloop
from shared.core.db import Connection, connect, dsn
from shared.core.events import GENESIS_HASH, Envelope, wire_value
from shared.core.eventstore import put_back
from shared.core.personal import keys_kept, sealed_under
from shared.core.settings import Settings
from shared.web.registry import ServiceDefinition, service, services
from shared.web.service import source_of

__all__ = ["Plan", "Recovered", "add_recover", "plan", "recover"]

# Events put back per transaction: what the store and the service's effects see at once.
_CHUNK = 500
# Anyone else on the database: a restored one is used by its service alone.
_SETTLING_CHECKS = 8
_OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


@dataclass
class Plan:
    """What a store lacks of its topic, in the order to put it back, or why it cannot be."""

    missing: list[audit.Wire] = field(default_factory=list)
    held: int = 0  # events on the topic the store holds already
    problems: list[str] = field(default_factory=list)


def plan(source: str, stored: Iterable[audit.StoredEvent], published: Iterable[audit.Wire]) -> Plan:
    """Every published event the store lacks, each checked to continue its stream (pure).

    ``published`` holds each event once, every one carrying the hash of its content (as
    :func:`shared.cli.audit.read_topic` reads a topic)."""
    found = Plan()
    heads: dict[str, tuple[int, str]] = {}  # stream -> its last version and hash
    hashes: dict[str, str | None] = {}
    for event in stored:
        hashes[event.event_id] = event.hash
        if event.row_version > heads.get(event.stream_id, (0, ""))[0]:
            heads[event.stream_id] = (event.row_version, event.hash or "")
    lacking: dict[str, list[audit.Wire]] = {}
    for wire in published:
        event_id = str(wire["id"])
        if event_id in hashes:
            if hashes[event_id] != wire["hash"]:
                found.problems.append(f"event {event_id}: the store holds it with another hash")
            else:
                found.held += 1
        elif wire_value(wire, "source") != source:
            found.problems.append(
                f"event {event_id}: its source is {wire_value(wire, 'source')}, not {source}"
            )
        else:
            lacking.setdefault(wire_value(wire, "stream_id"), []).append(wire)
    for stream_id, wires in sorted(lacking.items()):
        version, last_hash = heads.get(stream_id, (0, GENESIS_HASH))
        for wire in sorted(wires, key=lambda w: int(wire_value(w, "stream_version"))):
            problem = _discontinuity(wire, version, last_hash)
            if problem is not None:
                found.problems.append(f"stream {stream_id}: {problem}")
                break
            version, last_hash = version + 1, str(wire["hash"])
            found.missing.append(wire)
    found.missing = audit.in_order(found.missing)
    return found


def _discontinuity(wire: audit.Wire, version: int, last_hash: str) -> str | None:
    """Why an event cannot follow a stream's version and hash, or None if it can."""
    given = int(wire_value(wire, "stream_version"))
    if given != version + 1:
        return (
            f"the store ends at version {version} and the topic goes on at {given} "
            f"(event {wire['id']}): events between are on neither"
        )
    if wire_value(wire, "prev_hash") != last_hash:
        return (
            f"event {wire['id']} (version {given}) does not chain to the store's version "
            f"{version}: the topic and the store hold different histories"
        )
    return None


@dataclass
class Recovered:
    """What ``recover`` did."""

    put_back: int
    held: int
    problems: list[str]
    newest: str | None  # the record time of the newest event put back
    unreadable: int  # events put back holding text sealed under a key the store lacks


async def recover(settings: Settings, definition: ServiceDefinition) -> Recovered:
    """Put back into the service's store every event its topic holds and it lacks."""
    if definition.topic is None or definition.effects is None:
        raise ValueError(
            f"{definition.name} publishes nothing to roll it forward from: its consumers "
            "rebuild what it holds from the offsets restored with it"
        )
    conn = await connect(dsn(settings, settings.database_of(definition.name)))
    try:
        others = await _other_sessions(conn)
        if others:
            raise ValueError(
                f"{others} other connections use {definition.name}'s database: stop the "
                "service first (a command it took meanwhile would fork its streams)"
            )
        with progress_bar(f"reading {definition.name}'s store") as bar:
            stored = await audit.load_store(conn, None, bar.update)
        topic = settings.topic(definition.topic)
        with progress_bar(f"reading {topic}") as bar:
            read = await audit.read_topic(settings.kafka, topic, lambda _: True, bar.update)
        found = plan(source_of(definition.name), stored, read.events)
        found.problems += [f"not a ledger event: {foreign}" for foreign in read.foreign]
        done = Recovered(0, found.held, found.problems, None, 0)
        if found.problems:
            return done
        with progress_bar("putting events back", total=len(found.missing)) as bar:
            for start in range(0, len(found.missing), _CHUNK):
                chunk = found.missing[start : start + _CHUNK]
                envelopes = [(Envelope.model_validate(wire), wire) for wire in chunk]
                async with conn.transaction():
                    await put_back(conn, envelopes)
                    for envelope, _ in envelopes:
                        await definition.effects(conn, envelope)
                sealed = {wire["id"]: sealed_under(wire.get("data")) for wire in chunk}
                needed = set().union(*sealed.values())
                lost = needed - await keys_kept(conn, needed)
                done.unreadable += sum(1 for keys in sealed.values() if keys & lost)
                done.put_back += len(chunk)
                bar.update(len(chunk))
        if found.missing:
            done.newest = str(wire_value(found.missing[-1], "time"))
        return done
    finally:
        await conn.close()


async def _other_sessions(conn: Connection) -> int:
    """How many other sessions use the database, once those just closing have gone (a
    backend outlives its client's goodbye by a moment)."""
    for _ in range(_SETTLING_CHECKS):
        others = int(await conn.fetchval(_OTHER_SESSIONS))
        if not others:
            return 0
        await asyncio.sleep(0.25)
    return others


def _recover(args: argparse.Namespace, settings: Settings) -> int:
    definition = service(args.service)
    try:
        done = eventloop.run(recover(settings, definition))
    except ValueError as error:
        print(f"ledger: {error}", file=sys.stderr)
        return 2
    for problem in done.problems:
        print(f"cannot put back: {problem}", file=sys.stderr)
    if done.problems:
        print("nothing was put back: the store is as it was", file=sys.stderr)
        return 1
    newest = f"; the newest recorded at {done.newest}" if done.newest else ""
    print(f"{definition.name}: {done.put_back} events put back from its topic{newest}; "
          f"{done.held} were held already")  # fmt: skip
    if done.unreadable:
        print(
            f"{done.unreadable} of them hold text sealed under keys made after the moment "
            "restored to: that text reads [erased]"
        )
    return 0


def add_recover(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recovering = commands.add_parser(
        "recover",
        help="after a restore to a moment, put back from the service's topic the events "
        "its store lacks (run with the service stopped)",
    )
    recovering.add_argument("service", choices=[d.name for d in services()])
    recovering.set_defaults(run=_recover)
