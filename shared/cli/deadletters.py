"""``ledger deadletters``: see what consumers have parked, and retry or release it.

A record is named by a reference the list prints, ``service:consumer:topic:partition:offset``.
What each kind of parked record means, and what retrying and releasing do, is in
:mod:`shared.core.consumer.decisions`; every retry and release is kept there with who asked
and why (``ledger deadletters decisions``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from shared.core import eventloop
from shared.core.consumer import decisions
from shared.core.db import Connection, connect, dsn
from shared.core.errors import LedgerError
from shared.core.settings import Settings
from shared.web.registry import services

__all__ = ["add_deadletters"]

_RETRIED = """
SELECT error, retried_at, retry_requested FROM consumer_parked
WHERE consumer = $1 AND topic = $2 AND partition = $3 AND "offset" = $4
"""


class _BadReferenceError(ValueError):
    """A reference that names no service's record."""


def _reference(text: str) -> tuple[str, tuple[str, str, int, int]]:
    """The service and place a reference names (``service:consumer:topic:partition:offset``)."""
    parts = text.split(":")
    names = {definition.name for definition in services()}
    if len(parts) != 5 or parts[0] not in names or not (parts[3] + parts[4]).isdigit():
        raise _BadReferenceError(
            f"{text!r} is not a reference from `ledger deadletters list` "
            "(service:consumer:topic:partition:offset)"
        )
    service, consumer, topic, partition, offset = parts
    return service, (consumer, topic, int(partition), int(offset))


@asynccontextmanager
async def _database(settings: Settings, service: str) -> AsyncIterator[Connection]:
    conn = await connect(dsn(settings, settings.database_of(service)))
    try:
        yield conn
    finally:
        await conn.close()


def _described(service: str, record: decisions.ParkedRecord) -> dict[str, Any]:
    """A parked record as the list and show print it: which pilot, family, topic, offset, why."""
    envelope = record.envelope
    return {
        "ref": f"{service}:{record.consumer}:{record.topic}:{record.partition}:{record.offset}",
        "service": service,
        "consumer": record.consumer,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "kind": record.kind,
        "key": record.origin_key,
        "pilot_id": envelope.pilot_id if envelope else None,
        "family_id": envelope.family_id if envelope else None,
        "event": None
        if envelope is None
        else {
            "id": str(envelope.id),
            "type": envelope.type,
            "source": envelope.source,
            "stream_id": envelope.stream_id,
            "stream_version": envelope.stream_version,
            "time": envelope.time.isoformat(),
        },
        "error": record.error,
        "parked_at": record.parked_at.isoformat(),
        "retried_at": record.retried_at.isoformat() if record.retried_at else None,
    }


async def _parked(settings: Settings, only: str | None) -> list[dict[str, Any]]:
    found = []
    for definition in services():
        if only is None or definition.name == only:
            async with _database(settings, definition.name) as conn:
                records = await decisions.parked(conn)
            found += [_described(definition.name, record) for record in records]
    return found


def _list(args: argparse.Namespace, settings: Settings) -> int:
    found = eventloop.run(_parked(settings, args.service))
    if args.json:
        for item in found:
            print(json.dumps(item))
        return 0
    if not found:
        print("no parked records", file=sys.stderr)
    for item in found:
        event = item["event"]
        what = (
            f"{event['type']} v{event['stream_version']} of {event['stream_id']}" if event else "-"
        )
        print(f"{item['ref']}\t{item['kind']}\t{item['key']}\t{what}\t{item['error']}")
    return 0


async def _show(settings: Settings, reference: str) -> dict[str, Any] | None:
    service, place = _reference(reference)
    async with _database(settings, service) as conn:
        for record in await decisions.parked(conn):
            if (record.consumer, record.topic, record.partition, record.offset) == place:
                shown = _described(service, record)
                envelope = record.envelope
                shown["value"] = (
                    envelope.to_json_dict()
                    if envelope
                    else record.value[:2000].decode(errors="replace")
                )
                return shown
    return None


def _show_command(args: argparse.Namespace, settings: Settings) -> int:
    shown = eventloop.run(_show(settings, args.ref))
    if shown is None:
        print(f"nothing is parked at {args.ref}", file=sys.stderr)
        return 2
    print(json.dumps(shown, indent=2))
    return 0


async def _retry(settings: Settings, args: argparse.Namespace) -> str:
    """Ask for a retry, then wait for the consumer's answer: applied, or parked still."""
    service, place = _reference(args.ref)
    async with _database(settings, service) as conn:
        async with conn.transaction():
            await decisions.retry(conn, place, args.by, args.reason)
        asked = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.wait
        while loop.time() < deadline:
            row = await conn.fetchrow(_RETRIED, *place)
            if row is None:
                return "applied"
            if row["retried_at"] is not None and row["retried_at"] >= asked:
                return f"tried again and still parked: {row['error']}"
            await asyncio.sleep(0.25)
    raise TimeoutError(
        f"{service} did not try it within {args.wait} s: is the service running? It will try "
        "when it next starts"
    )


def _retry_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        outcome = eventloop.run(_retry(settings, args))
    except TimeoutError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(outcome)
    return 0 if outcome == "applied" else 1


async def _release(settings: Settings, args: argparse.Namespace) -> decisions.ParkedRecord:
    service, place = _reference(args.ref)
    async with _database(settings, service) as conn, conn.transaction():
        return await decisions.release(conn, place, args.by, args.reason)


def _release_command(args: argparse.Namespace, settings: Settings) -> int:
    record = eventloop.run(_release(settings, args))
    what = "set aside" if record.kind == "rejected" else "set aside as applied"
    print(f"released: {args.ref} ({record.kind}) {what}; what its family held behind it follows")
    return 0


async def _decisions(settings: Settings, only: str | None) -> list[dict[str, Any]]:
    found = []
    for definition in services():
        if only is not None and definition.name != only:
            continue
        async with _database(settings, definition.name) as conn:
            kept = await decisions.decisions(conn)
        found += [
            {"service": definition.name, **vars(d), "decided_at": d.decided_at.isoformat()}
            for d in kept
        ]
    return sorted(found, key=lambda item: str(item["decided_at"]))


def _decisions_command(args: argparse.Namespace, settings: Settings) -> int:
    for item in eventloop.run(_decisions(settings, args.service)):
        print(json.dumps(item))
    return 0


def _guarded(run: Any) -> Any:  # noqa: ANN401 - a command's run function
    """A command whose refusals (a bad reference, nothing there, held behind) are one line."""

    def guarded(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return int(run(args, settings))
        except _BadReferenceError as error:
            print(str(error), file=sys.stderr)
            return 2
        except LedgerError as error:
            print(error.detail, file=sys.stderr)
            return 2 if error.status == 404 else 1

    return guarded


def add_deadletters(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``deadletters`` command and its actions."""
    command = commands.add_parser(
        "deadletters", help="records consumers could not apply: list, show, retry, release"
    )
    actions = command.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every parked record, one per line")
    listing.add_argument("--service", choices=[d.name for d in services()])
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_guarded(_list))
    showing = actions.add_parser("show", help="one parked record, with its event")
    showing.add_argument("ref", help="service:consumer:topic:partition:offset, from the list")
    showing.set_defaults(run=_guarded(_show_command))
    retrying = actions.add_parser(
        "retry", help="try a record (and what its family holds behind it) again now"
    )
    retrying.add_argument("ref")
    retrying.add_argument("--by", required=True, help="who asks (kept with the decision)")
    retrying.add_argument("--reason", default="cause fixed", help="why (kept with it)")
    retrying.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it")
    retrying.set_defaults(run=_guarded(_retry_command))
    releasing = actions.add_parser(
        "release",
        help="set a record aside for good (a failed event as if applied); its family goes on",
    )
    releasing.add_argument("ref")
    releasing.add_argument("--by", required=True, help="who decided (kept with the decision)")
    releasing.add_argument("--reason", required=True, help="why (kept with it)")
    releasing.set_defaults(run=_guarded(_release_command))
    deciding = actions.add_parser("decisions", help="every retry and release, with who and why")
    deciding.add_argument("--service", choices=[d.name for d in services()])

    deciding.set_defaults(run=_guarded(_decisions_command))
