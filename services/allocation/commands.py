"""Allocation's own ``ledger`` commands: ``ledger retention run [--dry-run]``, and
``ledger audit randomisation --pilot P``."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC

from services.allocation import assignments
from services.allocation.handlers import Allocation
from services.allocation.retention import Due, sweep
from shared.cli.audit import Wire, in_order, read_topic
from shared.cli.progress import progress_bar
from shared.contracts import allocation
from shared.core import eventloop
from shared.core.custody import custody_of
from shared.core.db import dsn, open_pool
from shared.core.events import Envelope, wire_value
from shared.core.logging import configure_logging
from shared.core.metrics import Metrics
from shared.core.settings import Settings
from shared.web.service import ServiceCore, utcnow

__all__ = ["add_audits", "add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retention run`` to the ``ledger`` command."""
    retention = commands.add_parser("retention", help="the pilots' retention policies")
    actions = retention.add_subparsers(dest="action", required=True)
    running = actions.add_parser(
        "run",
        help="erase the free text of every family its pilot's policy says is due (as the "
        "allocation service does every hour); recorded as events, as an erasure is",
    )
    running.add_argument(
        "--dry-run", action="store_true", help="list the families due, and erase nothing"
    )
    running.set_defaults(run=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging("allocation", settings.log_format, settings.log_level)
    found = eventloop.run(_sweep(settings, dry_run=args.dry_run))
    verb = "due" if args.dry_run else "erased"
    for item in found:
        print(
            f"{item.pilot_id} {item.family_id}: exited {item.exited_on}, due {item.due_on}, {verb}"
        )
    print(f"{len(found)} {'families' if len(found) != 1 else 'family'} {verb}")
    return 0


async def _sweep(settings: Settings, *, dry_run: bool) -> list[Due]:
    """The sweep the service runs, on allocation's database; its events reach Kafka through
    the outbox, as any command's do, by the running service's relay."""
    database = dsn(settings, settings.database_of("allocation"))
    metrics = Metrics("allocation")
    async with open_pool(database, min_size=1, max_size=2) as pool:
        core = ServiceCore.of(
            "allocation", settings, pool, metrics, custody_of(settings), utcnow, uuid.uuid4
        )
        return await sweep(pool, Allocation(core), utcnow().astimezone(UTC).date(), dry_run=dry_run)


def add_audits(audits: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``randomisation`` to ``ledger audit``."""
    checking = audits.add_parser(
        "randomisation",
        help="check a pilot's randomisation from the allocation topic: each revealed seed "
        "against its commitment, every assignment recomputed, every sequence whole",
    )
    checking.add_argument("--pilot", required=True)
    checking.set_defaults(run=_audit_randomisation)


def _audit_randomisation(args: argparse.Namespace, settings: Settings) -> int:
    found = eventloop.run(_read_and_check(settings, args.pilot))
    for problem in found.problems:
        print(f"broken: {problem}")
    if found.problems:
        return 1
    if not found.recomputed and not found.awaiting:
        print(f"nothing to check: pilot {args.pilot} has randomised no family", file=sys.stderr)
        return 2
    print(
        f"ok: {found.recomputed} assignments recomputed from the revealed seeds, each as "
        f"recorded; {found.awaiting} await their seed's reveal (committed to "
        f"{len(found.commitments)} seed(s))"
    )
    return 0


async def _read_and_check(settings: Settings, pilot_id: str) -> assignments.Check:
    topic = settings.topic(allocation.TOPIC)

    def mine(wire: Wire) -> bool:
        return bool(wire_value(wire, "pilot_id") == pilot_id)

    with progress_bar(f"reading {topic}") as bar:
        read = await read_topic(settings.kafka, topic, mine, bar.update)
    events = []
    for wire in in_order(read.events):
        envelope = Envelope.model_validate(wire)
        if allocation.REGISTRY.knows(envelope.type):
            events.append(allocation.REGISTRY.decode(envelope))
    return assignments.check(events)
