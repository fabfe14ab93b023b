"""Reporting's own ``ledger`` commands: ``ledger projections rebuild``."""

from __future__ import annotations

import argparse
import asyncio

from services.reporting.rebuild import rebuild
from shared.cli.progress import ProgressBar, progress_bar
from shared.core.logging import configure_logging
from shared.core.settings import Settings

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``projections rebuild`` to the ``ledger`` command."""
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
