"""The ``ledger`` command: tokens, serving, migrations, topics, audits and keys.

Services are found through the registry (:mod:`shared.web.registry`): ``serve`` and
``migrate`` take any installed service, audits cover every service that publishes, and a
service may add commands of its own (reporting adds ``projections rebuild``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
)
from asyncpg.exceptions import (
    CannotConnectNowError,
    InvalidAuthorizationSpecificationError,
    InvalidCatalogNameError,
    InvalidPasswordError,
)

from shared.cli import audit
from shared.cli.deadletters import add_deadletters
from shared.cli.keys import add_keys
from shared.cli.progress import progress_bar
from shared.cli.readers import add_readers
from shared.cli.recover import add_recover
from shared.cli.token import add_token
from shared.core import eventloop
from shared.core.db import connect, dsn
from shared.core.events import canonical_json, wire_value
from shared.core.kafka import ensure_topics
from shared.core.logging import configure_logging
from shared.core.settings import Settings
from shared.core.tracing import configure_tracing
from shared.web.registry import ledger_topics, migrate, service, services
from shared.web.serving import serve

__all__ = ["main", "replay", "verify"]


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    names = args.service or [definition.name for definition in services()]
    eventloop.run(migrate(settings, names))
    return 0


def _topics(_: argparse.Namespace, settings: Settings) -> int:
    created = eventloop.run(ensure_topics(settings, ledger_topics()))
    print("created: " + (", ".join(created) if created else "none (all present)"))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    definition = service(args.service)
    configure_logging(
        definition.name, settings.log_format, settings.log_level, settings.log_repeat_seconds
    )

    configure_tracing(definition.name, settings.otlp_endpoint)  # before the app is made
    serve(
        definition.create_app(settings),
        host=settings.host,
        port=settings.port_of(definition.name, definition.default_port),
        shutdown_timeout=settings.shutdown_grace_seconds,
        header_timeout=settings.http_header_timeout_seconds,
    )
    return 0


async def verify(
    settings: Settings,
    pilot_id: str | None,
    kept: Mapping[str, Any] | None = None,
) -> Verification:
    """Every problem of every publishing service's store and topic.

    The topics' end offsets are taken first, then each store is read, and its topic to its
    end as it stands once the store has been read: what the topic held before the store was
    read must be in the store, and what the store held (published) must be on the topic, so
    events written meanwhile raise no false alarm. A topic is read while its store is (from
    its start, as far as it goes), so that parsing one fills the wait for the other.
    ``kept``: the evidence of an earlier run (``--json``), which each store must still hold.
    """
    found = Verification()
    publishing = [definition for definition in services() if definition.topic is not None]
    topics = {definition.name: settings.topic(str(definition.topic)) for definition in publishing}
    # Before any store is read: what the topics held then, every store must hold.
    settled = await audit.end_offsets(settings.kafka, list(topics.values()))
    for definition in publishing:
        topic = topics[definition.name]
        store = asyncio.create_task(_load_store(settings, definition.name, pilot_id))
        try:
            read = await _read_topic(settings, topic, pilot_id, settled, store)
        finally:
            store.cancel()  # if the topic could not be read; a store read whole keeps its result
        events = await store  # its own error, if it could not be read
        found.events += len(events)
        found.problems += audit.check_store(definition.name, events)
        found.problems += audit.check_topic(definition.name, events, read)
        found.repeats += read.repeats
        streams = audit.heads(events)
        found.evidence[definition.name] = {"events": len(events), "heads": streams}
        if kept is not None:
            earlier = kept.get("services", {}).get(definition.name, {}).get("heads", {})
            found.problems += audit.against_evidence(definition.name, earlier, events)
        print(f"{definition.name}: {len(events)} events checked", file=sys.stderr)
    return found


async def _load_store(
    settings: Settings, service: str, pilot_id: str | None
) -> list[audit.StoredEvent]:
    conn = await connect(dsn(settings, settings.database_of(service)))
    try:
        total = await audit.stored_count(conn, pilot_id)
        with progress_bar(f"checking {service}'s store", total=total) as bar:
            return await audit.load_store(conn, pilot_id, bar.update)
    finally:
        await conn.close()


async def _read_topic(
    settings: Settings,
    topic: str,
    pilot_id: str | None,
    settled: dict[str, dict[int, int]],
    store: asyncio.Future[Any],
) -> audit.TopicRead:
    with progress_bar(f"reading {topic}") as bar:
        return await audit.read_topic(
            settings.kafka,
            topic,
            _of_pilot(pilot_id),
            bar.update,
            settled[topic],
            after=store,
            collect=False,
        )


@dataclass
class Verification:
    """What ``audit verify`` found across the services."""

    problems: list[audit.Problem] = field(default_factory=list)
    events: int = 0
    repeats: int = 0
    # Per service: its events and each stream's head (audit.heads), for `--json`.
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)


def _of_pilot(pilot_id: str | None) -> Callable[[audit.Wire], bool]:
    return lambda wire: pilot_id is None or wire_value(wire, "pilot_id") == pilot_id


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    kept = None
    if args.compare is not None:
        try:
            kept = json.loads(args.compare.read_text())
        except (OSError, ValueError) as error:
            print(f"ledger: cannot read evidence {args.compare}: {error}", file=sys.stderr)
            return 2
        if not isinstance(kept, dict) or "services" not in kept:
            print(f"ledger: {args.compare} is not what --json prints", file=sys.stderr)
            return 2
        if kept.get("pilot") != args.pilot:
            print(f"ledger: {args.compare} is evidence of pilot {kept.get('pilot')}, "
                  f"not {args.pilot}", file=sys.stderr)  # fmt: skip
            return 2
    found = eventloop.run(verify(settings, args.pilot, kept))
    if args.json:
        evidence = {
            "verified_at": datetime.now(UTC).isoformat(),
            "pilot": args.pilot,
            "holds": not found.problems,
            "problems": [str(problem) for problem in found.problems],
            "services": found.evidence,
        }
        print(json.dumps(evidence, indent=1, sort_keys=True))
    for problem in found.problems:
        print(f"broken: {problem}", file=sys.stderr if args.json else sys.stdout)
    if found.problems:
        return 1
    if found.events == 0:
        scope = f"pilot {args.pilot}" if args.pilot else "the ledger"
        print(f"nothing to verify: no store holds an event of {scope}", file=sys.stderr)
        return 2
    repeats = f"; the topics repeat {found.repeats} of them" if found.repeats else ""
    print(
        f"ok: {found.events} events; every hash chain holds and Kafka holds the same "
        f"events{repeats}",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


@dataclass
class Replayed:
    """What ``audit replay`` read: the events kept, in order, and how many events were of the
    pilot and family asked for at any time (none: the ledger has never heard of them)."""

    events: list[audit.Wire]
    in_scope: int


async def replay(
    settings: Settings,
    pilot_id: str | None,
    family_id: str | None,
    as_of: datetime | None,
    clock: str = "record",
) -> Replayed:
    """The history straight from Kafka: every published topic, filtered, in order; each
    event as it was published. ``as_of`` is of record time (when the ledger recorded an
    event) or, with ``clock="business"``, of business time (its ``occurred_at``)."""
    moment = "time" if clock == "record" else "occurred_at"
    in_scope = 0

    def keep(wire: audit.Wire) -> bool:
        nonlocal in_scope
        if (pilot_id is not None and wire_value(wire, "pilot_id") != pilot_id) or (
            family_id is not None and wire_value(wire, "family_id") != family_id
        ):
            return False
        in_scope += 1
        return as_of is None or datetime.fromisoformat(wire_value(wire, moment)) <= as_of

    events: list[audit.Wire] = []
    for definition in services():
        if definition.topic is None:
            continue
        topic = settings.topic(definition.topic)
        with progress_bar(f"reading {topic}") as bar:
            read = await audit.read_topic(settings.kafka, topic, keep, bar.update)
        events += read.events
        for foreign in read.foreign:
            print(f"passed over: {foreign}", file=sys.stderr)
        if read.repeats:
            print(f"{topic}: {read.repeats} repeated events shown once", file=sys.stderr)
    return Replayed(audit.in_order(events), in_scope)


def _moment(text: str) -> datetime:
    """An RFC 3339 time with its zone, as argparse reads an option (else a usage error)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time, e.g. 2026-04-01T12:00:00Z"
        ) from error
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone; give an RFC 3339 time, e.g. 2026-04-01T12:00:00Z"
        )
    return moment


def _audit_replay(args: argparse.Namespace, settings: Settings) -> int:
    replayed = eventloop.run(replay(settings, args.pilot, args.family, args.as_of, args.clock))
    if replayed.in_scope == 0:
        scope = " ".join(
            f"{what} {name}"
            for what, name in (("pilot", args.pilot), ("family", args.family))
            if name is not None
        )
        print(
            f"nothing to replay: no topic holds an event of {scope or 'the ledger'}",
            file=sys.stderr,
        )
        return 2
    for wire in replayed.events:
        print(canonical_json(wire).decode())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="The devolved budgets ledger.")
    commands = parser.add_subparsers(dest="command", required=True)
    names = [definition.name for definition in services()]

    add_token(commands)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=names)
    serve.set_defaults(run=_serve)

    migration = commands.add_parser("migrate", help="create databases and apply migrations")
    migration.add_argument("--service", action="append", choices=names)
    migration.set_defaults(run=_migrate)

    topics = commands.add_parser("topics", help="create the ledger's Kafka topics")
    topics.set_defaults(run=_topics)

    _add_audit(commands)
    add_keys(commands)
    add_deadletters(commands)
    add_readers(commands)
    add_recover(commands)

    for definition in services():
        if definition.add_commands is not None:
            definition.add_commands(commands)
    return parser


def _add_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit_command = commands.add_parser("audit", help="check the ledger's history")
    audit_actions = audit_command.add_subparsers(dest="action", required=True)
    verifying = audit_actions.add_parser(
        "verify", help="check hash chains and that Kafka holds the same events"
    )
    verifying.add_argument("--pilot")
    verifying.add_argument(
        "--json",
        action="store_true",
        help="print evidence to keep (events per service, each stream's head hash) as JSON",
    )
    verifying.add_argument(
        "--compare",
        type=Path,
        help="evidence an earlier --json run printed: each stream must still hold its head",
    )
    verifying.set_defaults(run=_audit_verify)
    replaying = audit_actions.add_parser(
        "replay", help="print the history from Kafka, in order, one JSON event per line"
    )
    replaying.add_argument("--pilot")
    replaying.add_argument("--family")
    replaying.add_argument(
        "--as-of", type=_moment, help="only events up to this RFC 3339 time (see --clock)"
    )
    replaying.add_argument(
        "--clock",
        choices=("record", "business"),
        default="record",
        help="--as-of is of record time (when the ledger recorded an event; the default) or "
        "of business time (when it happened, its occurred_at)",
    )
    replaying.set_defaults(run=_audit_replay)
    for definition in services():
        if definition.add_audits is not None:
            definition.add_audits(audit_actions)


# The exit status of a command that could not reach, or log in to, PostgreSQL or Kafka
# (sysexits' EX_UNAVAILABLE): apart from 1 and 2, which say what a check found.
UNREACHABLE = 69


def main(argv: Sequence[str] | None = None) -> int:
    """Every command but ``token`` (shared.cli.entry)."""
    args = _parser().parse_args(argv)
    run = cast("Callable[[argparse.Namespace, Settings], int]", args.run)
    settings = Settings()
    if args.command != "serve":
        # A command says in one line of its own what it could not reach (below): aiokafka's
        # own lines about each attempt would only bury it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return run(args, settings)
    except Exception as error:
        line = unreachable(error, settings)
        if line is None:
            raise
        print(f"ledger: {line}", file=sys.stderr)
        return UNREACHABLE


def unreachable(error: BaseException, settings: Settings) -> str | None:
    """One line saying which of PostgreSQL or Kafka could not be reached or logged in to,
    and what to do, for an error that says so; None for any other."""
    kafka = settings.kafka_bootstrap
    user = f" as {settings.kafka_username}" if settings.kafka_username else ""
    pg = f"{settings.pg_host}:{settings.pg_port}"
    local = "(source .local/env sets the local stack's)"
    if isinstance(error, SaslAuthenticationFailed | AuthenticationFailedError):
        return (
            f"cannot log in to Kafka at {kafka}{user}: set LEDGER_KAFKA_USERNAME and "
            f"LEDGER_KAFKA_PASSWORD {local}"
        )
    if isinstance(error, KafkaConnectionError):
        return (
            f"cannot reach Kafka at {kafka}, or log in to it{user}: is it running "
            f"(make status)? LEDGER_KAFKA_BOOTSTRAP says where, LEDGER_KAFKA_USERNAME and "
            f"LEDGER_KAFKA_PASSWORD who {local}"
        )
    if isinstance(error, InvalidPasswordError | InvalidAuthorizationSpecificationError):
        return (
            f"cannot log in to PostgreSQL at {pg} as {settings.pg_user}: set LEDGER_PG_USER "
            f"and LEDGER_PG_PASSWORD {local}"
        )
    if isinstance(error, InvalidCatalogNameError):
        return f"PostgreSQL at {pg} has no such database ({error}): make up, or ledger migrate"
    if isinstance(error, ConnectionError | socket.gaierror | CannotConnectNowError):
        return (
            f"cannot reach PostgreSQL at {pg} ({error}): is it running (make status)? "
            f"LEDGER_PG_HOST and LEDGER_PG_PORT say where {local}"
        )
    return None
