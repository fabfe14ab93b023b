"""Allocation's own ``ledger`` commands: ``ledger retention run [--dry-run]``."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC

from services.allocation.handlers import Allocation
from services.allocation.retention import Due, sweep
from shared.core.custody import custody_of
from shared.core.db import dsn, open_pool
from shared.core.logging import configure_logging
from shared.core.metrics import Metrics
from shared.core.settings import Settings
from shared.web.service import ServiceCore, utcnow

__all__ = ["add_commands"]


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
    found = asyncio.run(_sweep(settings, dry_run=args.dry_run))
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
