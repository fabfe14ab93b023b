"""Reporting's own ``ledger`` commands: ``ledger projections rebuild`` and ``ledger policy
what-if``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from services.reporting.handlers import policy_what_if
from services.reporting.rebuild import rebuild
from services.reporting.whatif import WhatIf
from shared.cli.progress import ProgressBar, progress_bar
from shared.contracts.allocation import PilotConfig
from shared.core.db import connect, dsn
from shared.core.errors import NotFoundError
from shared.core.logging import configure_logging
from shared.core.settings import Settings

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``projections rebuild`` and ``policy what-if`` to the ``ledger`` command."""
    policy = commands.add_parser("policy", help="a pilot's configuration")
    policy_actions = policy.add_subparsers(dest="action", required=True)
    asking = policy_actions.add_parser(
        "what-if",
        help="replay a pilot's recorded requests under a proposed configuration (a JSON file "
        "as PUT /pilots/{pilot_id} takes); prints the comparison as JSON, records nothing",
    )
    asking.add_argument("--pilot", required=True)
    asking.add_argument("--config", required=True, type=Path)
    asking.set_defaults(run=_what_if)
    projections = commands.add_parser("projections", help="reporting's projections")
    actions = projections.add_subparsers(dest="action", required=True)
    rebuilding = actions.add_parser(
        "rebuild",
        help="rebuild reporting's projections from the start of the topics while it answers, "
        "then switch to them",
    )
    rebuilding.add_argument(
        "--accept-differences",
        action="store_true",
        help="switch even where a rebuilt table differs from the live one (replacing it)",
    )
    rebuilding.set_defaults(run=_rebuild)


def _what_if(args: argparse.Namespace, settings: Settings) -> int:
    try:
        proposal = PilotConfig.model_validate_json(args.config.read_bytes())
    except OSError as error:
        print(f"ledger: cannot read {args.config}: {error.strerror}", file=sys.stderr)
        return 2
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or '(file)'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        print(f"ledger: {args.config} is not a pilot configuration: {problems}", file=sys.stderr)
        return 2

    async def ask() -> WhatIf:
        conn = await connect(dsn(settings, settings.database_of("reporting")))
        try:
            return await policy_what_if(conn, args.pilot, proposal)
        finally:
            await conn.close()

    try:
        report = asyncio.run(ask())
    except NotFoundError:
        print(f"ledger: no pilot {args.pilot!r} in reporting", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2))
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging("reporting", settings.log_format, settings.log_level)
    with progress_bar("rebuilding", unit="offset", total=0) as bar:
        report = asyncio.run(
            rebuild(settings, ProgressBar(bar), accept_differences=args.accept_differences)
        )
    outcome = "and switched" if report.switched else "and did not switch"
    print(
        f"rebuilt from {report.records} events in {report.seconds:.1f} s "
        f"({report.records_per_second:.0f} events/s), {outcome}"
    )
    if not report.compared:
        print("not compared: the live consumer was behind the rebuild at the switch")
    for table in report.tables:
        verdict = "equal" if table.equal else "different"
        print(
            f"{table.table}: {table.live_rows} rows live, {table.rebuilt_rows} rebuilt: {verdict}"
        )
    if not report.switched:
        print(
            f"refused: {', '.join(report.differing)} differ from the live projections, which "
            "stay as they were; look at why, then run again with --accept-differences to "
            "replace them"
        )
        return 1
    return 0
