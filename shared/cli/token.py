"""``ledger token``: a token of the local stack's secret. Kept apart from the rest of the
CLI, which loads every service, so that it starts at once (shared.cli.entry)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import cast

from shared.core.settings import Settings
from shared.web.auth import ROLES, TEAM_SCOPED_ROLES, Role, mint_token

__all__ = ["add_token"]


def add_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``token`` command."""
    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("--role", required=True, choices=sorted(ROLES))
    token.add_argument("--pilot", required=True)
    token.add_argument("--sub", required=True)
    token.add_argument("--team")
    token.set_defaults(run=_token)


def _token(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        print("LEDGER_JWT_SECRET is not set (source .local/env)", file=sys.stderr)
        return 2
    if args.role in TEAM_SCOPED_ROLES and not args.team:
        print(f"a {args.role} acts for a team: give --team", file=sys.stderr)
        return 2
    print(
        mint_token(
            secret,
            sub=args.sub,
            role=cast("Role", args.role),
            pilot=args.pilot,
            team=args.team,
            now=datetime.now(UTC),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0
