"""The ``ledger`` console script. ``ledger token`` is answered at once, without loading
the services the rest of the CLI finds through the registry (a third of a second, where the
whole CLI takes more than one); every other command goes to :mod:`shared.cli.main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import cast

from shared.core.settings import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ledger`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["token"]:
        from shared.cli.token import add_token  # noqa: PLC0415 - only what a token needs

        parser = argparse.ArgumentParser(prog="ledger")
        add_token(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(arguments)
        run = cast("Callable[[argparse.Namespace, Settings], int]", args.run)
        return run(args, Settings())
    from shared.cli.main import main as everything  # noqa: PLC0415 - loads every service

    return everything(arguments)
