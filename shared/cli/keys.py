"""``ledger keys``: key-encryption keys -- make one, rotate to the current one, retire the old
ones, and say whether anything still holds one from before.

Rotation, as docs/security.md tells an operator, step by step:

1. ``ledger keys new-kek ID --add`` puts a new KEK first in ``LEDGER_KEY_ENCRYPTION_KEYS_FILE``
   (keeping the old ones after it); the services read the file again within seconds. (With
   the KEKs in ``LEDGER_KEY_ENCRYPTION_KEYS`` instead: put the printed KEK first there and
   restart the services.)
2. ``ledger keys rotate`` re-wraps every live key of every service under it.
3. ``ledger keys retire`` removes every other KEK from the file, refusing while a live key is
   still wrapped under one; the services drop them within seconds.
4. ``ledger keys status`` exits 0 only once nothing holds an old KEK: no live key is wrapped
   under one, no running instance of any service holds one (each says which it holds,
   :mod:`shared.core.keyholders`), and neither does the secret this command was given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.cli.progress import progress_bar
from shared.core import eventloop
from shared.core.custody import KeyCustodyError, custody_of, new_kek, parse_keks
from shared.core.db import connect, dsn
from shared.core.keyholders import Holder, holders
from shared.core.personal import rewrap, to_rewrap
from shared.core.settings import Settings
from shared.web.registry import services

__all__ = ["KeyStatus", "add_keys", "key_status", "rotate"]

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
            total = await to_rewrap(conn, custody)
            bar = progress_bar(f"re-wrapping {definition.name}'s keys", unit="key", total=total)
            with bar:
                done[definition.name] = 0
                while moved := await rewrap(conn, custody):
                    done[definition.name] += moved
                    bar.update(moved)
        finally:
            await conn.close()
    return done


@dataclass
class KeyStatus:
    """What holds which KEK, per service: its keys, and its running instances."""

    keys: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> KEK -> keys
    holders: dict[str, list[Holder]] = field(default_factory=dict)  # service -> instances

    def old(self, current: str) -> list[str]:
        """What still holds a KEK other than the current one, in words; empty when none."""
        found = []
        for service, counts in self.keys.items():
            for kek, count in counts.items():
                if kek not in {current, "(erased)"}:
                    found.append(f"{service}: {count} live keys under {kek}")
        for service, instances in self.holders.items():
            for holder in instances:
                extra = [kek for kek in holder.kek_ids if kek != current]
                if extra:
                    started = holder.started_at.isoformat(timespec="seconds")
                    found.append(
                        f"{service}: an instance (started {started}) holds {', '.join(extra)}"
                    )
        return found


async def key_status(settings: Settings) -> KeyStatus:
    """How many keys each KEK wraps in each service ('(erased)' for erased keys,
    '(unwrapped)' for keys of an earlier version a service has not yet started to wrap), and
    the KEKs each running instance holds."""
    found = KeyStatus()
    for definition in services():
        conn = await connect(dsn(settings, settings.database_of(definition.name)))
        try:
            rows = await conn.fetch(_STATUS)
            found.holders[definition.name] = await holders(conn)
        finally:
            await conn.close()
        found.keys[definition.name] = {row["kek_id"]: row["keys"] for row in rows}
    return found


def _new_kek(args: argparse.Namespace, settings: Settings) -> int:
    made = new_kek(args.id)
    if not args.add:
        print(made)
        return 0
    path = settings.key_encryption_keys_file
    if path is None:
        print(
            "--add writes the file LEDGER_KEY_ENCRYPTION_KEYS_FILE names, and it is not set: "
            "put the key (ledger keys new-kek ID) first in your secret instead",
            file=sys.stderr,
        )
        return 2
    keks = _listed(path)
    if any(kek_id == args.id for kek_id, _ in keks):
        print(f"{path} already holds a key-encryption key {args.id}", file=sys.stderr)
        return 2
    _write_private(path, [made, *(line for _, line in keks)])
    if not eventloop.run(_taken_up(settings, lambda held: args.id in held)):
        print(
            f"{args.id} is first in {path}, but a running service has not taken it up (see "
            "ledger keys status): do not rotate until every one holds it",
            file=sys.stderr,
        )
        return 1
    print(f"{args.id} is now the current key-encryption key in {path}, held by every service")
    return 0


def _retire(_: argparse.Namespace, settings: Settings) -> int:
    """Keep only the current KEK in the file, once no live key needs another."""
    path = settings.key_encryption_keys_file
    if path is None:
        print(
            "retire rewrites the file LEDGER_KEY_ENCRYPTION_KEYS_FILE names, and it is not set: "
            "remove the old keys from your secret, then restart the services",
            file=sys.stderr,
        )
        return 2
    keks = _listed(path)
    current = keks[0][0]
    status = eventloop.run(key_status(settings))
    needed = [
        f"{service}: {count} live keys under {kek}"
        for service, counts in status.keys.items()
        for kek, count in counts.items()
        if kek not in {current, "(erased)"}
    ]
    if needed:
        for line in needed:
            print(line, file=sys.stderr)
        print("run ledger keys rotate first: these keys would be lost", file=sys.stderr)
        return 3
    _write_private(path, [keks[0][1]])
    retired = ", ".join(kek_id for kek_id, _ in keks[1:]) or "none"
    if not eventloop.run(_taken_up(settings, lambda held: held == (current,))):
        print(
            f"retired from {path}: {retired}; a running service still holds it (see ledger "
            "keys status): restart it",
            file=sys.stderr,
        )
        return 1
    print(f"retired from {path}: {retired}; no running service holds it any more")
    return 0


async def _taken_up(
    settings: Settings, holds: Callable[[tuple[str, ...]], bool], seconds: float = 30.0
) -> bool:
    """Wait until every running instance of every service holds what ``holds`` asks (they
    read the file again within seconds of a change); whether they do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        found = await key_status(settings)
        if all(holds(h.kek_ids) for instances in found.holders.values() for h in instances):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.5)


def _listed(path: Path) -> list[tuple[str, str]]:
    """Each KEK the file lists: its id and its line, in order."""
    lines = [line.strip() for line in path.read_text().replace(",", "\n").splitlines()]
    lines = [line for line in lines if line]
    return [
        (kek_id, line)
        for (kek_id, _), line in zip(parse_keks("\n".join(lines)), lines, strict=True)
    ]


def _write_private(path: Path, lines: list[str]) -> None:
    """Replace the file at once (write aside, then rename), readable by its owner alone."""
    aside = path.with_name(f".{path.name}.new")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")
    aside.replace(path)


def _rotate(_: argparse.Namespace, settings: Settings) -> int:
    current = custody_of(settings).current
    found = eventloop.run(key_status(settings))
    lacking = [
        f"{service}: an instance (started {h.started_at.isoformat(timespec='seconds')})"
        for service, instances in found.holders.items()
        for h in instances
        if current not in h.kek_ids
    ]
    if lacking:
        for line in lacking:
            print(f"{line} does not hold {current}", file=sys.stderr)
        print(
            "a key re-wrapped under it could not be opened there: give every service the new "
            "key first (ledger keys new-kek --add, or the secret and a restart)",
            file=sys.stderr,
        )
        return 1
    try:
        done = eventloop.run(rotate(settings))
    except KeyCustodyError as error:
        print(f"cannot rotate: {error.detail}", file=sys.stderr)
        return 1
    for name, count in done.items():
        print(f"{name}: {count} keys re-wrapped under {current}")
    return 0


def _status(_: argparse.Namespace, settings: Settings) -> int:
    """Exit 3 while anything holds a KEK other than the current one: a live key wrapped
    under it, a running instance of a service, or this command's own secret."""
    custody = custody_of(settings)
    current = custody.current
    found = eventloop.run(key_status(settings))
    for name, counts in found.keys.items():
        listed = ", ".join(f"{kek}: {count}" for kek, count in counts.items()) or "no keys"
        held = sorted({kek for holder in found.holders[name] for kek in holder.kek_ids})
        running = f"; {len(found.holders[name])} running, holding {', '.join(held) or '-'}"
        print(f"{name}: {listed}{running}")
    old = found.old(current)
    mine = [kek for kek in custody.held if kek != current]
    if mine:
        old.append(f"this command's own secret holds {', '.join(mine)}")
    if old:
        for line in old:
            print(line, file=sys.stderr)
        print(
            f"an old key-encryption key is still held: rotate (ledger keys rotate), retire it "
            f"(ledger keys retire, or remove it from the secret and restart the services), then "
            f"check again; until then an erasure does not reach backups. Current: {current}",
            file=sys.stderr,
        )
        return 3
    return 0


def add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``keys`` command and its actions."""
    keys = commands.add_parser("keys", help="key-encryption keys: make, rotate, retire, status")
    actions = keys.add_subparsers(dest="action", required=True)
    making = actions.add_parser("new-kek", help="a new key-encryption key, <id>=<key>")
    making.add_argument("id", help="its id, e.g. kek-2026-12")
    making.add_argument(
        "--add",
        action="store_true",
        help="put it first in LEDGER_KEY_ENCRYPTION_KEYS_FILE (the services take it up) "
        "instead of printing it",
    )
    making.set_defaults(run=_new_kek)
    rotating = actions.add_parser(
        "rotate", help="re-wrap every live key under the current (first) key-encryption key"
    )
    rotating.set_defaults(run=_rotate)
    retiring = actions.add_parser(
        "retire",
        help="remove every key-encryption key but the current one from "
        "LEDGER_KEY_ENCRYPTION_KEYS_FILE (exit 3 while a live key needs one: rotate first)",
    )
    retiring.set_defaults(run=_retire)
    status = actions.add_parser(
        "status",
        help="how many keys each key-encryption key wraps, and which running instances hold "
        "which (exit 3 while anything holds one but the current)",
    )
    status.set_defaults(run=_status)
