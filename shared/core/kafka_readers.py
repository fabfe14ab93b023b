"""Readers outside the ledger: a Kafka principal of their own that may read the ledger's
topics, in consumer groups under a prefix of its own, and nothing else.

The broker keeps users and ACLs; this speaks Kafka's admin protocol for them as its
superuser (the only principal that may): AlterUserScramCredentials (KIP-554; the client
salts the password, so the text never reaches the broker) and CreateAcls / DeleteAcls /
DescribeAcls of Kafka's standard authorizer. aiokafka speaks the ACL requests but not the
credential one, which is declared here in aiokafka's protocol terms.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from shared.core.kafka import new_admin
from shared.core.settings import KafkaAccess

__all__ = ["READER_NAME", "Reader", "create_reader", "list_readers", "revoke_reader"]

READER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PRINCIPAL_PREFIX = "reader-"
# Kafka's codes (org.apache.kafka.common.acl / resource / ScramMechanism).
_TOPIC, _GROUP, _ANY = 2, 3, 1
_LITERAL, _PREFIXED, _MATCH_ANY = 3, 4, 1
_READ, _DESCRIBE, _ALLOW = 3, 8, 3
_SCRAM_SHA_512, _ITERATIONS = 2, 8192


@dataclass(frozen=True)
class Reader:
    """A reader's principal, what it may read, and (when just made) its password."""

    principal: str
    group_prefix: str
    topics: tuple[str, ...]
    password: str | None = None


class _AlterScramResponse(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramRequestV0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramRequestV0]):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 51

    def __init__(self, *, upsert: tuple[str, str] | None = None, delete: str | None = None) -> None:
        self._upsert, self._delete = upsert, delete

    def build(self, request_struct_class: type[_AlterScramRequestV0]) -> _AlterScramRequestV0:
        deletions: list[tuple[object, ...]] = []
        if self._delete is not None:
            deletions.append((self._delete, _SCRAM_SHA_512, {}))
        upsertions: list[tuple[object, ...]] = []
        if self._upsert is not None:
            name, password = self._upsert
            salt = secrets.token_bytes(32)
            salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
            upsertions.append((name, _SCRAM_SHA_512, _ITERATIONS, salt, salted, {}))
        return request_struct_class(deletions, upsertions, {})


def _principal(name: str) -> str:
    if not READER_NAME.match(name):
        raise ValueError(f"a reader's name is 1 to 40 of a-z, 0-9 and -: not {name!r}")
    return f"{_PRINCIPAL_PREFIX}{name}"


def _acls(principal: str, group_prefix: str, topics: Sequence[str]) -> list[CreateAclsRequest]:
    user = f"User:{principal}"
    return [
        *(
            CreateAclsRequest(_TOPIC, topic, _LITERAL, user, "*", operation, _ALLOW)
            for topic in topics
            for operation in (_READ, _DESCRIBE)
        ),
        CreateAclsRequest(_GROUP, group_prefix, _PREFIXED, user, "*", _READ, _ALLOW),
    ]


async def _send(admin: AIOKafkaAdminClient, request: Request) -> Response:
    # aiokafka's admin client sends any request it can build, by this (private) method.
    return await admin._send_request(request)  # noqa: SLF001


def _check(response: Response, what: str) -> None:
    """Raise when the broker refused any part of ``response``."""
    fields = response.to_object()
    for key in ("results", "creation_responses", "filter_responses"):
        for result in fields.get(key, []):
            if result.get("error_code", 0) != 0:
                raise RuntimeError(f"{what}: {result.get('error_message') or result}")
    if fields.get("error_code", 0) != 0:
        raise RuntimeError(f"{what}: {fields.get('error_message') or fields}")


async def create_reader(
    kafka: KafkaAccess, name: str, *, topics: Sequence[str], group_prefix: str
) -> Reader:
    """A new reader (or a new password for one): its SCRAM credentials, and ACLs to read
    ``topics`` in groups named ``group_prefix…``. ``kafka`` is the superuser's access."""
    principal = _principal(name)
    password = secrets.token_urlsafe(32)
    admin = new_admin(kafka)
    await admin.start()
    try:
        response = await _send(admin, _AlterScram(upsert=(principal, password)))
        _check(response, f"setting {principal}'s password")
        for acl in _acls(principal, group_prefix, topics):
            _check(await _send(admin, acl), f"granting {principal}")
    finally:
        await admin.close()
    return Reader(principal, group_prefix, tuple(topics), password)


async def revoke_reader(kafka: KafkaAccess, name: str) -> None:
    """The reader's ACLs and credentials removed: it can neither sign in nor read."""
    principal = _principal(name)
    admin = new_admin(kafka)
    await admin.start()
    try:
        every = DeleteAclsRequest(_ANY, None, _MATCH_ANY, f"User:{principal}", None, _ANY, _ANY)
        _check(await _send(admin, every), f"removing {principal}'s ACLs")
        _check(await _send(admin, _AlterScram(delete=principal)), f"removing {principal}")
    finally:
        await admin.close()


async def list_readers(kafka: KafkaAccess) -> list[Reader]:
    """Every reader the broker's ACLs name, with what it may read."""
    admin = new_admin(kafka)
    await admin.start()
    try:
        request = DescribeAclsRequest(_ANY, None, _MATCH_ANY, None, None, _ANY, _ANY)
        answer = await _send(admin, request)
    finally:
        await admin.close()
    _check(answer, "listing ACLs")
    response = answer.to_object()
    topics: dict[str, set[str]] = {}
    groups: dict[str, str] = {}
    for resource in response.get("resources", []):
        for acl in resource.get("acls", []):
            user = str(acl["principal"]).removeprefix("User:")
            if not user.startswith(_PRINCIPAL_PREFIX):
                continue
            if resource["resource_type"] == _TOPIC:
                topics.setdefault(user, set()).add(resource["resource_name"])
            elif resource["resource_type"] == _GROUP:
                groups[user] = resource["resource_name"]
    return [
        Reader(user, groups.get(user, ""), tuple(sorted(topics.get(user, ()))))
        for user in sorted(topics.keys() | groups.keys())
    ]
