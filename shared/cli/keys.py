"""``ledger keys``: key-encryption keys -- make one, rotate to the current one, see which hold.

Rotation, as the README's Security section tells an operator: put a new key first in
``LEDGER_KEY_ENCRYPTION_KEYS`` (keeping the old ones after it) and restart the services; run
``ledger keys rotate``, which re-wraps every live key of every service under the new one;
``ledger keys status`` then shows no live key under an old one, and the old ones can be
removed from the secret and destroyed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from shared.cli.progress import progress_bar
from shared.core.custody import KeyCustodyError, custody_of, new_kek
from shared.core.db import connect, dsn
from shared.core.personal import rewrap
from shared.core.settings import Settings
from shared.web.registry import services

__all__ = ["add_keys", "key_status", "rotate"]

_STATUS = """
SELECT coalesce(kek_id, CASE WHEN key IS NULL THEN '(erased)' ELSE '(unwrapped)' END) AS kek_id,
       count(*) AS keys
FROM personal_keys GROUP BY 1 ORDER BY 1
"""


async def rotate(settings: Settings) -> dict[str, int]:
    """Re-wrap every service's live keys under the current KEK: how many, by service."""
    custody = custody_of(settings)
    done: dict[str, int] = {}
    for definition in services():
        conn = await connect(dsn(settings, settings.database_of(definition.name)))
        try:
            with progress_bar(f"re-wrapping {definition.name}'s keys", unit="key") as bar:
                done[definition.name] = 0
                while moved := await rewrap(conn, custody):
                    done[definition.name] += moved
                    bar.update(moved)
        finally:
            await conn.close()
    return done


async def key_status(settings: Settings) -> dict[str, dict[str, int]]:
    """How many keys each KEK wraps in each service: '(erased)' for erased keys,
    '(unwrapped)' for keys of an earlier version a service has not yet started to wrap."""
    found: dict[str, dict[str, int]] = {}
    for definition in services():
        conn = await connect(dsn(settings, settings.database_of(definition.name)))
        try:
            rows = await conn.fetch(_STATUS)
        finally:
            await conn.close()
        found[definition.name] = {row["kek_id"]: row["keys"] for row in rows}
    return found


def _new_kek(args: argparse.Namespace, _: Settings) -> int:
    print(new_kek(args.id))
    return 0


def _rotate(_: argparse.Namespace, settings: Settings) -> int:
    try:
        done = asyncio.run(rotate(settings))
    except KeyCustodyError as error:
        print(f"cannot rotate: {error.detail}", file=sys.stderr)
        return 1
    current = custody_of(settings).current
    for name, count in done.items():
        print(f"{name}: {count} keys re-wrapped under {current}")
    return 0


def _status(_: argparse.Namespace, settings: Settings) -> int:
    """Exit 3 while a live key is wrapped under anything but the current KEK: the old one
    may not be removed yet (``ledger keys rotate`` first)."""
    current = custody_of(settings).current
    settled = True
    for name, counts in asyncio.run(key_status(settings)).items():
        listed = ", ".join(f"{kek}: {count}" for kek, count in counts.items()) or "no keys"
        print(f"{name}: {listed}")
        settled &= all(kek in {current, "(erased)"} for kek in counts)
    if not settled:
        print(f"some live keys are not under {current}: run ledger keys rotate", file=sys.stderr)
        return 3
    return 0


def add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``keys`` command and its actions."""
    keys = commands.add_parser("keys", help="key-encryption keys: make, rotate, status")
    actions = keys.add_subparsers(dest="action", required=True)
    making = actions.add_parser("new-kek", help="print a new key-encryption key, <id>=<key>")
    making.add_argument("id", help="its id, e.g. kek-2026-12")
    making.set_defaults(run=_new_kek)
    rotating = actions.add_parser(
        "rotate", help="re-wrap every live key under the current (first) key-encryption key"
    )
    rotating.set_defaults(run=_rotate)
    status = actions.add_parser(
        "status",
        help="how many keys each key-encryption key wraps (exit 3 while any live key is "
        "not under the current one)",
    )
    status.set_defaults(run=_status)
