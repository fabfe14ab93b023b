"""Free text that may identify a family, sealed so that it can be erased (crypto-shredding).

Text is encrypted with AES-256-GCM under a data key of the family's own (the subject,
``pilot:family``), bound to that subject as associated data, and stored in events as
``sealed:v1:<key id>:<nonce and ciphertext, base64url>``. The data key is stored only
wrapped under a key-encryption key held outside the database (:mod:`shared.core.custody`).
Events, amounts and hash chains never change; erasing a subject deletes its wrapped keys,
after which its text cannot be read through the ledger; once the key-encryption keys of
before the erasure are rotated away, no copy anywhere (WAL, archives, backups) opens it.

Reporting seals its own secrets the same way, so that key rotation covers them and removing
them erases them: a webhook subscription's signing secret (subject ``webhook:<id>``) and a
pilot's trial-dataset pseudonymisation secret (``trial:<pilot>``).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import overload

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.core.custody import KeyCustody
from shared.core.db import Connection
from shared.core.writes import Write, gathering

__all__ = [
    "ERASED",
    "LiveKey",
    "Sealer",
    "erase",
    "is_sealed",
    "keys_kept",
    "live_key",
    "rewrap",
    "sealed_under",
    "subject_of",
    "to_rewrap",
    "wrap_legacy_keys",
]

ERASED = "[erased]"
_PREFIX = "sealed:v1:"


def live_key(subject: str) -> str:
    """The statement that reads the live key of the subject ``subject`` names (a parameter):
    no row or one. A statement that reads more may read it as a subquery."""
    return f"""
SELECT key_id, kek_id, wrapped FROM personal_keys WHERE subject = {subject} AND wrapped IS NOT NULL
"""  # noqa: S608 - ``subject`` is a parameter's placeholder ($1), never a value


_LIVE_KEY = live_key("$1")
_NEW_KEY = "INSERT INTO personal_keys (key_id, subject, wrapped, kek_id) VALUES ($1, $2, $3, $4)"
_NEW_KEY_UNLESS_MADE = f"""
{_NEW_KEY}
ON CONFLICT (subject) WHERE wrapped IS NOT NULL OR key IS NOT NULL DO NOTHING
"""
_LIVE_INDEX = "personal_keys_live"
_KEY = "SELECT kek_id, wrapped FROM personal_keys WHERE key_id = $1 AND subject = $2"
_KEPT = "SELECT key_id FROM personal_keys WHERE key_id = ANY($1::uuid[])"
_KEYS = "SELECT key_id, kek_id, wrapped FROM personal_keys WHERE subject = $1"
_ERASE = """
UPDATE personal_keys SET wrapped = NULL, kek_id = NULL, key = NULL, erased_at = now()
WHERE subject = $1 AND (wrapped IS NOT NULL OR key IS NOT NULL)
"""
_LEGACY = "SELECT key_id, subject, key FROM personal_keys WHERE key IS NOT NULL FOR UPDATE"
_TO_REWRAP = """
SELECT key_id, subject, kek_id, wrapped FROM personal_keys
WHERE wrapped IS NOT NULL AND kek_id <> $1 ORDER BY key_id LIMIT $2 FOR UPDATE
"""
_STORE_WRAPPED = "UPDATE personal_keys SET wrapped = $2, kek_id = $3, key = NULL WHERE key_id = $1"


def subject_of(pilot_id: str, family_id: str) -> str:
    """The subject whose key seals a family's text."""
    return f"{pilot_id}:{family_id}"


def is_sealed(value: str) -> bool:
    """Whether a stored string is sealed text."""
    return value.startswith(_PREFIX)


def sealed_under(value: object) -> set[uuid.UUID]:
    """The keys that the sealed texts anywhere in a JSON value (an event's data) need."""
    if isinstance(value, str):
        if not is_sealed(value):
            return set()
        return {uuid.UUID(value.removeprefix(_PREFIX).partition(":")[0])}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*map(sealed_under, value))
    return set()


async def keys_kept(conn: Connection, key_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these keys the store has a record of, live or erased (a key made after the
    moment a store was restored to has none: the texts sealed under it cannot be opened)."""
    rows = await conn.fetch(_KEPT, list(key_ids))
    return {row["key_id"] for row in rows}


@dataclass(frozen=True)
class LiveKey:
    """A subject's live data key, as stored: wrapped under a key-encryption key."""

    key_id: uuid.UUID
    kek_id: str
    wrapped: bytes

    @classmethod
    def of(cls, row: asyncpg.Record) -> LiveKey | None:
        """From a row of :func:`live_key`'s columns (all NULL where the subject has none)."""
        if row["key_id"] is None:
            return None
        return cls(row["key_id"], row["kek_id"], row["wrapped"])


class _Unread:
    """The live key, not read yet: :meth:`Sealer.seal_many` reads it."""


_UNREAD = _Unread()


def _context(subject: str, key_id: uuid.UUID) -> bytes:
    """What a wrapped key is bound to: it opens only as this subject's key of this id."""
    return f"{subject}|{key_id}".encode()


class Sealer:
    """Seals and opens free text in one service's database, with keys the custody wraps."""

    def __init__(self, custody: KeyCustody) -> None:
        self._custody = custody

    @overload
    async def seal(
        self, conn: Connection, subject: str, text: str, *, live: LiveKey | _Unread | None = ...
    ) -> str: ...

    @overload
    async def seal(
        self, conn: Connection, subject: str, text: None, *, live: LiveKey | _Unread | None = ...
    ) -> None: ...

    async def seal(
        self,
        conn: Connection,
        subject: str,
        text: str | None,
        *,
        live: LiveKey | _Unread | None = _UNREAD,
    ) -> str | None:
        """The sealed form of ``text`` under the subject's live key (made on first use);
        ``live``: the key as a statement that read more already read it (:func:`live_key`)."""
        if text is None:
            return None
        [sealed] = await self.seal_many(conn, subject, [text], live=live)
        return sealed

    async def seal_many(
        self,
        conn: Connection,
        subject: str,
        texts: Sequence[str],
        *,
        live: LiveKey | _Unread | None = _UNREAD,
    ) -> list[str]:
        """Each text sealed under the subject's live key (made on first use), read once for
        them all (a statement's thousands of lines)."""
        if not texts:
            return []
        if isinstance(live, _Unread):
            row = await conn.fetchrow(_LIVE_KEY, subject)
            live = None if row is None else LiveKey.of(row)
        if live is None:
            live = await self._made(conn, subject)
        aead = AESGCM(self._unwrap(subject, live.key_id, live.kek_id, live.wrapped))
        return [_sealed(aead, live.key_id, subject, text) for text in texts]

    async def _made(self, conn: Connection, subject: str) -> LiveKey:
        """A first key for the subject. Written with a command's gathered writes, a key that
        another request made meanwhile fails them all, as a lost race (the command runs
        again and finds that key): the texts sealed under this one must never be stored
        without it. Written now, in a transaction, the other's key is the live one."""
        key_id = uuid.uuid4()
        kek_id, wrapped = self._custody.wrap(AESGCM.generate_key(256), _context(subject, key_id))
        writes = gathering()
        if writes is not None:
            made = f"the first key of {subject} was made by another request"
            writes.add(
                Write.of(_NEW_KEY, key_id, subject, wrapped, kek_id, races={_LIVE_INDEX: made})
            )
            return LiveKey(key_id, kek_id, wrapped)
        await conn.execute(_NEW_KEY_UNLESS_MADE, key_id, subject, wrapped, kek_id)
        row = await conn.fetchrow(_LIVE_KEY, subject)
        assert row is not None
        live = LiveKey.of(row)
        assert live is not None
        return live

    async def opener(self, conn: Connection, subject: str) -> Callable[[str], str]:
        """What opens many of the subject's texts, its keys read once: a text that is not
        sealed is given back as it is (one recorded before it was sealed), one whose key is
        gone reads :data:`ERASED`."""
        keys = {
            row["key_id"]: AESGCM(
                self._unwrap(subject, row["key_id"], row["kek_id"], row["wrapped"])
            )
            for row in await conn.fetch(_KEYS, subject)
            if row["wrapped"] is not None
        }

        def open_one(text: str) -> str:
            if not is_sealed(text):
                return text
            key_id, _, token = text.removeprefix(_PREFIX).partition(":")
            aead = keys.get(uuid.UUID(key_id))
            return ERASED if aead is None else _opened(aead, subject, token)

        return open_one

    async def open(self, conn: Connection, subject: str, sealed: str | None) -> str | None:
        """The text, or :data:`ERASED` once the subject's key is gone."""
        if sealed is None:
            return None
        key_id, _, token = sealed.removeprefix(_PREFIX).partition(":")
        row = await conn.fetchrow(_KEY, uuid.UUID(key_id), subject)
        if row is None or row["wrapped"] is None:
            return ERASED
        key = self._unwrap(subject, uuid.UUID(key_id), row["kek_id"], row["wrapped"])
        return _opened(AESGCM(key), subject, token)

    async def erase(self, conn: Connection, subject: str) -> int:
        """Delete every key of the subject; return how many were erased."""
        return await erase(conn, subject)

    def _unwrap(self, subject: str, key_id: uuid.UUID, kek_id: str, wrapped: bytes) -> bytes:
        return self._custody.unwrap(kek_id, wrapped, _context(subject, key_id))


def _sealed(aead: AESGCM, key_id: uuid.UUID, subject: str, text: str) -> str:
    nonce = os.urandom(12)
    ciphertext = aead.encrypt(nonce, text.encode(), subject.encode())
    return f"{_PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + ciphertext).decode()}"


def _opened(aead: AESGCM, subject: str, token: str) -> str:
    raw = base64.urlsafe_b64decode(token)
    return aead.decrypt(raw[:12], raw[12:], subject.encode()).decode()


async def erase(conn: Connection, subject: str) -> int:
    """Delete every key of the subject; return how many were erased."""
    result = await conn.execute(_ERASE, subject)
    return int(result.split()[-1])


async def wrap_legacy_keys(conn: Connection, custody: KeyCustody) -> int:
    """Wrap the keys an earlier version stored unwrapped; return how many (run at start)."""
    async with conn.transaction():
        rows = await conn.fetch(_LEGACY)
        for row in rows:
            kek_id, wrapped = custody.wrap(row["key"], _context(row["subject"], row["key_id"]))
            await conn.execute(_STORE_WRAPPED, row["key_id"], wrapped, kek_id)
    return len(rows)


async def to_rewrap(conn: Connection, custody: KeyCustody) -> int:
    """How many live keys are held under an older KEK than the current one."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM personal_keys WHERE wrapped IS NOT NULL AND kek_id <> $1",
            custody.current,
        )
    )


async def rewrap(conn: Connection, custody: KeyCustody, batch: int = 500) -> int:
    """Re-wrap up to ``batch`` live keys held under an older KEK under the current one, in
    one transaction; return how many (0 when every live key is under the current KEK)."""
    async with conn.transaction():
        rows = await conn.fetch(_TO_REWRAP, custody.current, batch)
        for row in rows:
            context = _context(row["subject"], row["key_id"])
            key = custody.unwrap(row["kek_id"], row["wrapped"], context)
            kek_id, wrapped = custody.wrap(key, context)
            await conn.execute(_STORE_WRAPPED, row["key_id"], wrapped, kek_id)
    return len(rows)
