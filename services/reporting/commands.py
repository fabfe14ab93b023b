"""Reporting's own ``ledger`` commands: ``ledger projections rebuild``, ``ledger policy
what-if`` and ``ledger open``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import webbrowser
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from services.reporting.handlers import policy_what_if
from services.reporting.rebuild import rebuild
from services.reporting.signin import sign_in_page
from services.reporting.whatif import WhatIf
from shared.cli.progress import ProgressBar, progress_bar
from shared.contracts.allocation import PilotConfig
from shared.core import eventloop
from shared.core.db import connect, dsn
from shared.core.errors import NotFoundError
from shared.core.logging import configure_logging
from shared.core.settings import Settings
from shared.web.auth import TEAM_SCOPED_ROLES, mint_token
from shared.web.registry import service

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
    opening = commands.add_parser(
        "open",
        help="open the dashboard or a family's statement in a browser, on the local stack "
        "(signed in with a token of the local secret, kept in a cookie for the pilot's pages)",
    )
    opening.add_argument("page", choices=["dashboard", "statement"])
    opening.add_argument("--pilot", required=True)
    opening.add_argument("--family", help="the family, for a statement")
    opening.add_argument("--role", default="admin", choices=["admin", "manager", "auditor",
                         "social_worker"])  # fmt: skip
    opening.add_argument("--sub", default="ledger-open", help="who opens it")
    opening.add_argument("--team", help="a manager's or social worker's team")
    opening.add_argument(
        "--print", action="store_true", help="print the page's path, not opening a browser"
    )
    opening.set_defaults(run=_open)


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
        report = eventloop.run(ask())
    except NotFoundError:
        print(f"ledger: no pilot {args.pilot!r} in reporting", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2))
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging("reporting", settings.log_format, settings.log_level)
    with progress_bar("rebuilding", unit="offset", total=0) as bar:
        report = eventloop.run(
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


def _open(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        print("LEDGER_JWT_SECRET is not set: `ledger open` is for the local stack", file=sys.stderr)
        return 2
    if args.page == "statement" and not args.family:
        print("a statement is a family's: give --family", file=sys.stderr)
        return 2
    if args.role in TEAM_SCOPED_ROLES and not args.team:
        print(f"a {args.role} acts for a team: give --team", file=sys.stderr)
        return 2
    token = mint_token(
        secret,
        sub=args.sub,
        role=args.role,
        pilot=args.pilot,
        team=args.team,
        now=datetime.now(UTC),
        lifetime=timedelta(hours=1),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    page = f"/pilots/{args.pilot}/dashboard"
    if args.page == "statement":
        page = f"/pilots/{args.pilot}/families/{args.family}/statement"
    port = settings.port_of("reporting", service("reporting").default_port)
    base = f"http://127.0.0.1:{port}"
    # A file only its owner may read: it holds the token until the browser has posted it.
    folder = Path(tempfile.mkdtemp(prefix="ledger-open-"))
    opener = folder / "open.html"
    opener.write_text(sign_in_page(base, token, page))
    opener.chmod(0o600)
    print(opener)
    if not args.print:
        webbrowser.open(opener.as_uri())
    return 0
