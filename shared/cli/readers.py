"""``ledger readers``: Kafka principals for readers outside the ledger (a council's data
warehouse, an evaluator's pipeline) that may read the ledger's topics in consumer groups
of their own, and nothing else. Run with the broker's superuser as LEDGER_KAFKA_USERNAME
(only it manages users and ACLs)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from shared.core import eventloop
from shared.core.kafka_readers import READER_NAME, create_reader, list_readers, revoke_reader
from shared.core.settings import Settings
from shared.web.registry import services

__all__ = ["add_readers"]


def _readable(settings: Settings) -> tuple[str, ...]:
    """The topics a reader may read: every service's events (not the dead letters)."""
    return tuple(settings.topic(d.topic) for d in services() if d.topic is not None)


def _create(args: argparse.Namespace, settings: Settings) -> int:
    group_prefix = settings.topic(f"reader-{args.name}.")
    reader = eventloop.run(
        create_reader(
            settings.kafka, args.name, topics=_readable(settings), group_prefix=group_prefix
        )
    )
    print(
        json.dumps(
            {
                "principal": reader.principal,
                "password": reader.password,  # shown once: the broker keeps only a verifier
                "mechanism": "SCRAM-SHA-512",
                "group_prefix": reader.group_prefix,
                "topics": list(reader.topics),
            },
            indent=1,
        )
    )
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    eventloop.run(revoke_reader(settings.kafka, args.name))
    print(f"revoked: reader-{args.name}")
    return 0


def _list(_: argparse.Namespace, settings: Settings) -> int:
    for reader in eventloop.run(list_readers(settings.kafka)):
        print(json.dumps({"principal": reader.principal, "group_prefix": reader.group_prefix,
                          "topics": list(reader.topics)}))  # fmt: skip
    return 0


def _name(value: str) -> str:
    if not READER_NAME.match(value):
        message = "a reader's name is 1 to 40 of a-z, 0-9 and -"
        raise argparse.ArgumentTypeError(message)
    return value


Run = Callable[[argparse.Namespace, Settings], int]


def _guarded(run: Run) -> Run:
    def guarded(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return int(run(args, settings))
        except RuntimeError as error:  # the broker refused: said in one line
            print(str(error), file=sys.stderr)
            return 1

    return guarded


def add_readers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``readers`` command and its actions."""
    command = commands.add_parser(
        "readers", help="Kafka principals that may read the ledger's topics: create, revoke"
    )
    actions = command.add_subparsers(dest="action", required=True)
    creating = actions.add_parser(
        "create", help="a reader (or a new password for one), shown once, as JSON"
    )
    creating.add_argument("name", type=_name, help="the principal is reader-<name>")
    creating.set_defaults(run=_guarded(_create))
    revoking = actions.add_parser("revoke", help="remove a reader's ACLs and credentials")
    revoking.add_argument("name", type=_name)
    revoking.set_defaults(run=_guarded(_revoke))
    listing = actions.add_parser("list", help="every reader and what it may read")
    listing.set_defaults(run=_guarded(_list))
