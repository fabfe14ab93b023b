"""The ``ledger`` command: tokens, serving, migrations, topics, audits and rebuilds."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Never, cast

from aiohttp import web
from tqdm import tqdm

from shared import audit
from shared.auth import ROLES, Role, mint_token
from shared.db import connect, dsn
from shared.events import Envelope, canonical_json
from shared.kafka import SERVICE_TOPICS, ensure_topics
from shared.logging import configure_logging
from shared.migrations import apply_migrations, ensure_database, migrations_of
from shared.settings import SERVICE_NAMES, ServiceName, Settings

__all__ = ["ProgressBar", "main"]


def _token(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        print("LEDGER_JWT_SECRET is not set", file=sys.stderr)
        return 2
    print(
        mint_token(
            secret,
            sub=args.sub,
            role=cast("Role", args.role),
            pilot=args.pilot,
            team=args.team,
            now=datetime.now(UTC),
        )
    )
    return 0


async def migrate(settings: Settings, services: Sequence[ServiceName]) -> None:
    """Create each service's database where missing and apply its migrations."""
    admin = dsn(settings, "postgres")
    for service in services:
        database = settings.database_of(service)
        await ensure_database(admin, database)
        conn = await connect(dsn(settings, database))
        try:
            await apply_migrations(
                conn, migrations_of("shared") + migrations_of(f"services.{service}")
            )
        finally:
            await conn.close()


def installed_services() -> tuple[ServiceName, ...]:
    """The services this installation has (they arrive one by one)."""
    return tuple(name for name in SERVICE_NAMES if importlib.util.find_spec(f"services.{name}"))


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(migrate(settings, args.service or installed_services()))
    return 0


def _topics(_: argparse.Namespace, settings: Settings) -> int:
    created = asyncio.run(ensure_topics(settings))
    print("created: " + (", ".join(created) if created else "none (all present)"))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    service = cast("ServiceName", args.service)
    configure_logging(service, settings.log_format, settings.log_level)
    module = importlib.import_module(f"services.{service}.app")
    create_app = cast("Callable[[Settings], web.Application]", module.create_app)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port_of(service),
        shutdown_timeout=settings.shutdown_grace_seconds,
        access_log=None,
        print=None,
    )
    return 0


async def verify(settings: Settings, pilot_id: str | None) -> list[audit.Problem]:
    """Every problem of every owning service's store and topic."""
    problems: list[audit.Problem] = []
    for service, topic in SERVICE_TOPICS.items():
        if service not in installed_services():
            continue
        conn = await connect(dsn(settings, settings.database_of(service)))
        try:
            events = await audit.load_store(conn, pilot_id)
        finally:
            await conn.close()
        problems += audit.check_store(service, events)
        with tqdm(
            desc=f"reading {settings.topic(topic)}", unit="event", disable=None, file=sys.stderr
        ) as bar:
            published = await audit.read_topic(
                settings.kafka_bootstrap, settings.topic(topic), pilot_id, bar.update
            )
        problems += audit.check_topic(service, events, published)
        print(f"{service}: {len(events)} events checked", file=sys.stderr)
    return problems


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    problems = asyncio.run(verify(settings, args.pilot))
    for problem in problems:
        print(f"broken: {problem}")
    if problems:
        return 1
    print("ok: every hash chain holds and Kafka holds the same events")
    return 0


async def replay(
    settings: Settings, pilot_id: str | None, family_id: str | None, as_of: datetime | None
) -> list[Envelope]:
    """The history straight from Kafka: every topic, filtered, in order."""

    def keep(envelope: Envelope) -> bool:
        return (
            (pilot_id is None or envelope.pilot_id == pilot_id)
            and (family_id is None or envelope.family_id == family_id)
            and (as_of is None or envelope.time <= as_of)
        )

    events: list[Envelope] = []
    for topic in SERVICE_TOPICS.values():
        with tqdm(
            desc=f"reading {settings.topic(topic)}", unit="event", disable=None, file=sys.stderr
        ) as bar:
            events += await audit.read_events(
                settings.kafka_bootstrap, settings.topic(topic), keep, bar.update
            )
    return audit.in_order(events)


def _audit_replay(args: argparse.Namespace, settings: Settings) -> int:
    as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    if as_of is not None and as_of.tzinfo is None:
        print("--as-of needs a time zone, e.g. 2026-04-01T12:00:00Z", file=sys.stderr)
        return 2
    for envelope in asyncio.run(replay(settings, args.pilot, args.family, as_of)):
        print(canonical_json(envelope.to_json_dict()).decode())
    return 0


class ProgressBar:
    """A progress bar whose total grows as a rebuild finds more to read."""

    def __init__(self, bar: tqdm[Never]) -> None:
        self._bar = bar

    def expect(self, records: int) -> None:
        self._bar.total = (self._bar.total or 0) + records
        self._bar.refresh()

    def advance(self, records: int) -> object:
        return self._bar.update(records)


def _projections_rebuild(_: argparse.Namespace, settings: Settings) -> int:
    configure_logging("reporting", settings.log_format, settings.log_level)
    # Imported here: the shared library does not depend on a service to load.
    from services.reporting.rebuild import rebuild  # noqa: PLC0415

    with tqdm(desc="rebuilding", unit="offset", total=0, disable=None, file=sys.stderr) as bar:
        report = asyncio.run(rebuild(settings, ProgressBar(bar)))
    print(
        f"rebuilt from {report.records} events in {report.seconds:.1f} s "
        f"({report.records_per_second:.0f} events/s), and switched"
    )
    if not report.compared:
        print("not compared: the live consumer was behind the rebuild at the switch")
    for table in report.tables:
        verdict = "equal" if table.equal else "different (the rebuilt rows are now live)"
        print(
            f"{table.table}: {table.live_rows} rows live, {table.rebuilt_rows} rebuilt: {verdict}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="The devolved budgets ledger.")
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("--role", required=True, choices=sorted(ROLES))
    token.add_argument("--pilot", required=True)
    token.add_argument("--sub", required=True)
    token.add_argument("--team")
    token.set_defaults(run=_token)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(run=_serve)

    migration = commands.add_parser("migrate", help="create databases and apply migrations")
    migration.add_argument("--service", action="append", choices=SERVICE_NAMES)
    migration.set_defaults(run=_migrate)

    topics = commands.add_parser("topics", help="create the ledger's Kafka topics")
    topics.set_defaults(run=_topics)

    audit_command = commands.add_parser("audit", help="check the ledger's history")
    audit_actions = audit_command.add_subparsers(dest="action", required=True)
    verifying = audit_actions.add_parser(
        "verify", help="check hash chains and that Kafka holds the same events"
    )
    verifying.add_argument("--pilot")
    verifying.set_defaults(run=_audit_verify)
    replaying = audit_actions.add_parser(
        "replay", help="print the history from Kafka, in order, one JSON event per line"
    )
    replaying.add_argument("--pilot")
    replaying.add_argument("--family")
    replaying.add_argument("--as-of", help="only events recorded up to this RFC 3339 time")
    replaying.set_defaults(run=_audit_replay)

    projections = commands.add_parser("projections", help="reporting's projections")
    projection_actions = projections.add_subparsers(dest="action", required=True)
    rebuilding = projection_actions.add_parser(
        "rebuild",
        help="rebuild reporting's projections from the start of the topics while it answers, "
        "then switch to them",
    )
    rebuilding.set_defaults(run=_projections_rebuild)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ledger`` console script."""
    args = _parser().parse_args(argv)
    run = cast("Callable[[argparse.Namespace, Settings], int]", args.run)
    return run(args, Settings())
