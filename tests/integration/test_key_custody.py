"""Sealing keys under key custody: stored only wrapped, re-wrapped on rotation, and keys an
earlier version stored unwrapped wrapped when a service starts."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.core.custody import KeyCustodyError, LocalKeyCustody, new_kek
from shared.core.personal import ERASED, Sealer, rewrap, wrap_legacy_keys
from shared.core.settings import Settings
from tests.integration.fixtures import migrated_pool

OLD, NEW = new_kek("old"), new_kek("new")


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    async with migrated_pool(settings, "allocation", max_size=2) as pool:
        yield pool


async def test_keys_are_stored_wrapped_and_rotation_rewraps_them(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """No key is stored in the clear; after rotation the old KEK is needed for nothing."""
    old = LocalKeyCustody.parse(OLD)
    async with pool.acquire() as conn:
        sealed = await Sealer(old).seal(conn, "p:f", "a cot")
        row = await conn.fetchrow("SELECT key, kek_id, wrapped FROM personal_keys")
        assert row is not None
        assert row["key"] is None
        assert row["kek_id"] == "old"
        assert row["wrapped"].startswith(b"LKW1")
        both = LocalKeyCustody.parse(f"{NEW},{OLD}")
        assert await rewrap(conn, both) == 1
        assert await rewrap(conn, both) == 0
        new_only = LocalKeyCustody.parse(NEW)
        assert await Sealer(new_only).open(conn, "p:f", sealed) == "a cot"
        with pytest.raises(KeyCustodyError):
            await Sealer(old).open(conn, "p:f", sealed)  # its KEK no longer wraps the key
        assert await Sealer(new_only).erase(conn, "p:f") == 1
        assert await Sealer(new_only).open(conn, "p:f", sealed) == ERASED


async def test_a_key_stored_unwrapped_before_is_wrapped_at_start(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Text sealed by an earlier version still opens, and its key is no longer in the clear."""
    key, key_id = AESGCM.generate_key(256), uuid.uuid4()
    nonce = os.urandom(12)
    token = base64.urlsafe_b64encode(nonce + AESGCM(key).encrypt(nonce, b"a coat", b"p:g"))
    sealed = f"sealed:v1:{key_id}:{token.decode()}"
    custody = LocalKeyCustody.parse(OLD)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO personal_keys (key_id, subject, key) VALUES ($1, 'p:g', $2)", key_id, key
        )
        assert await wrap_legacy_keys(conn, custody) == 1
        assert await conn.fetchval("SELECT count(*) FROM personal_keys WHERE key IS NOT NULL") == 0
        assert await Sealer(custody).open(conn, "p:g", sealed) == "a coat"
        assert await Sealer(custody).seal(conn, "p:g", "more") != sealed  # the same live key


def test_malformed_key_encryption_keys_are_refused() -> None:
    """An id with spaces, a short key, or nothing at all: a clear error at start."""
    for secret in ("", "has space=" + OLD.partition("=")[2], "k=c2hvcnQ=", "no-key"):
        with pytest.raises(KeyCustodyError):
            LocalKeyCustody.parse(secret)
