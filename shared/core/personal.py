"""Free text that may identify a family, sealed so that it can be erased (crypto-shredding).

Text is encrypted with AES-256-GCM under a key of the family's own (the subject,
``pilot:family``), bound to that subject as associated data, and stored in events as
``sealed:v1:<key id>:<nonce and ciphertext, base64url>``. Events, amounts and hash chains
never change; erasing a subject deletes its keys, after which its text cannot be read by
anyone, in the database, on Kafka or in any copy.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import overload

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.core.db import Connection

__all__ = ["ERASED", "Sealer", "is_sealed", "subject_of"]

ERASED = "[erased]"
_PREFIX = "sealed:v1:"
_LIVE_KEY = "SELECT key_id, key FROM personal_keys WHERE subject = $1 AND key IS NOT NULL"
_NEW_KEY = """
INSERT INTO personal_keys (key_id, subject, key) VALUES ($1, $2, $3)
ON CONFLICT (subject) WHERE key IS NOT NULL DO NOTHING
"""
_KEY = "SELECT key FROM personal_keys WHERE key_id = $1 AND subject = $2"
_ERASE = """
UPDATE personal_keys SET key = NULL, erased_at = now() WHERE subject = $1 AND key IS NOT NULL
"""


def subject_of(pilot_id: str, family_id: str) -> str:
    """The subject whose key seals a family's text."""
    return f"{pilot_id}:{family_id}"


def is_sealed(value: str) -> bool:
    """Whether a stored string is sealed text."""
    return value.startswith(_PREFIX)


class Sealer:
    """Seals, opens and erases free text in one service's database."""

    @overload
    async def seal(self, conn: Connection, subject: str, text: str) -> str: ...

    @overload
    async def seal(self, conn: Connection, subject: str, text: None) -> None: ...

    async def seal(self, conn: Connection, subject: str, text: str | None) -> str | None:
        """The sealed form of ``text`` under the subject's live key (made on first use)."""
        if text is None:
            return None
        row = await conn.fetchrow(_LIVE_KEY, subject)
        if row is None:
            # A concurrent first use may win the race: then its key is the live one.
            await conn.execute(_NEW_KEY, uuid.uuid4(), subject, AESGCM.generate_key(256))
            row = await conn.fetchrow(_LIVE_KEY, subject)
            assert row is not None
        nonce = os.urandom(12)
        ciphertext = AESGCM(row["key"]).encrypt(nonce, text.encode(), subject.encode())
        token = base64.urlsafe_b64encode(nonce + ciphertext).decode()
        return f"{_PREFIX}{row['key_id']}:{token}"

    async def open(self, conn: Connection, subject: str, sealed: str | None) -> str | None:
        """The text, or :data:`ERASED` once the subject's key is gone."""
        if sealed is None:
            return None
        key_id, _, token = sealed.removeprefix(_PREFIX).partition(":")
        key = await conn.fetchval(_KEY, uuid.UUID(key_id), subject)
        if key is None:
            return ERASED
        raw = base64.urlsafe_b64decode(token)
        return AESGCM(key).decrypt(raw[:12], raw[12:], subject.encode()).decode()

    async def erase(self, conn: Connection, subject: str) -> int:
        """Delete every key of the subject; return how many were erased."""
        result = await conn.execute(_ERASE, subject)
        return int(result.split()[-1])
