"""Custody of the keys that seal families' text: data keys wrapped under key-encryption keys.

Each family's data key (:mod:`shared.core.personal`) is stored only wrapped: encrypted with
AES-256-GCM under a key-encryption key (KEK) that lives outside every database and topic --
a secret the services are given, ``LEDGER_KEY_ENCRYPTION_KEYS`` (or a file of them,
``LEDGER_KEY_ENCRYPTION_KEYS_FILE``, which they read again when it changes). Erasing a family
deletes its wrapped key; copies of it remain in PostgreSQL's WAL, in WAL archives and in
backups, but each is useless without its KEK. Rotation (``ledger keys rotate``) re-wraps
every live key under a new KEK; once the old KEK is destroyed (removed from the secret, and
held by no running process: ``ledger keys status`` tells), nothing from before the rotation
can be unwrapped, so an erasure made before it is complete on every copy.

A council's KMS or Vault takes over by registering a :class:`KeyCustody` in the entry-point
group ``ledger.key_custody`` and naming it in ``LEDGER_KEY_CUSTODY``; ``local`` (the
default) holds the KEKs the secret lists.

A wrapped key is ``WRAPPED_MAGIC`` + nonce + ciphertext, bound to its subject and key id as
associated data, so a wrapped key cannot be moved to another family's row.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.core.errors import LedgerError
from shared.core.settings import Settings

__all__ = [
    "WRAPPED_MAGIC",
    "KeyCustody",
    "KeyCustodyError",
    "LocalKeyCustody",
    "custody_of",
    "new_kek",
    "parse_keks",
]

WRAPPED_MAGIC = b"LKW1"  # also lets a forensic scan find wrapped keys in raw files
_NONCE = 12
_KEK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyCustodyError(LedgerError):
    """A KEK the ledger needs is not configured, or the configuration is malformed."""

    status = 500
    code = "key_custody"
    title = "Key custody misconfigured"


class KeyCustody(Protocol):
    """Wraps and unwraps data keys under key-encryption keys it alone holds."""

    @property
    def current(self) -> str:
        """The KEK new keys are wrapped under, and rotation re-wraps to."""
        ...

    @property
    def held(self) -> tuple[str, ...]:
        """The ids of every KEK this process holds, the current first: `ledger keys status`
        shows them, so that an erasure is known complete only once no process holds an old
        one."""
        ...

    def reload(self) -> bool:
        """Take up a change of the KEKs' source (their file); whether anything changed."""
        ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """The data key wrapped under the current KEK: (KEK id, wrapped)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The data key; KeyCustodyError if the KEK is not held (destroyed or not given)."""
        ...


class LocalKeyCustody:
    """KEKs given as a secret: ``id=base64key,id=base64key``, the first one current; or in a
    file that lists them so (one per line, or comma-separated), read again when it changes."""

    def __init__(self, keks: Sequence[tuple[str, bytes]], source: Path | None = None) -> None:
        if not keks:
            raise KeyCustodyError("LEDGER_KEY_ENCRYPTION_KEYS must name at least one key")
        self._keks = dict(keks)
        self._current = keks[0][0]
        self._source = source
        self._stamp = _stamp(source)

    @classmethod
    def parse(cls, secret: str, source: Path | None = None) -> LocalKeyCustody:
        """The custody a ``LEDGER_KEY_ENCRYPTION_KEYS`` value describes."""
        return cls(parse_keks(secret), source)

    @classmethod
    def from_file(cls, path: Path) -> LocalKeyCustody:
        """The custody of the KEKs a file lists."""
        try:
            text = path.read_text()
        except OSError as error:
            raise KeyCustodyError(f"cannot read the key-encryption keys in {path}") from error
        return cls.parse(text, path)

    @property
    def current(self) -> str:
        return self._current

    @property
    def held(self) -> tuple[str, ...]:
        return tuple(self._keks)

    def reload(self) -> bool:
        """Read the file again if it changed; a file that cannot be read, or lists nothing
        usable, leaves the KEKs as they were (KeyCustodyError says why)."""
        if self._source is None or _stamp(self._source) == self._stamp:
            return False
        fresh = LocalKeyCustody.from_file(self._source)
        self._keks, self._current, self._stamp = fresh._keks, fresh._current, fresh._stamp  # noqa: SLF001 - its own kind
        return True

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._keks[self._current]).encrypt(nonce, data_key, context)
        return self._current, WRAPPED_MAGIC + nonce + sealed

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyCustodyError(
                f"key-encryption key {kek_id!r} is not configured: a live key is wrapped "
                "under it (rotate before removing a key-encryption key)"
            )
        return unwrap_with(kek, wrapped, context)


def parse_keks(secret: str) -> list[tuple[str, bytes]]:
    """The KEKs a secret lists, ``id=base64key`` separated by commas or lines, in order."""
    keks: list[tuple[str, bytes]] = []
    for item in filter(None, (part.strip() for part in re.split(r"[,\n]", secret))):
        kek_id, _, encoded = item.partition("=")
        try:
            key = base64.urlsafe_b64decode(encoded.encode())
        except (binascii.Error, ValueError):
            key = b""
        if not _KEK_ID.match(kek_id) or len(key) != 32:
            raise KeyCustodyError(
                "each key-encryption key is <id>=<32 bytes, base64url>; "
                "`ledger keys new-kek` makes one"
            )
        keks.append((kek_id, key))
    return keks


def _stamp(source: Path | None) -> tuple[int, int] | None:
    """What tells a changed file: its modification time and size."""
    if source is None:
        return None
    try:
        found = source.stat()
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def unwrap_with(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Unwrap with one KEK; KeyCustodyError if it is not the one (or the bytes are not a key)."""
    if not wrapped.startswith(WRAPPED_MAGIC):
        raise KeyCustodyError("not a wrapped key")
    body = wrapped[len(WRAPPED_MAGIC) :]
    try:
        return AESGCM(kek).decrypt(body[:_NONCE], body[_NONCE:], context)
    except InvalidTag as error:
        raise KeyCustodyError("the key-encryption key does not open this key") from error


def new_kek(kek_id: str) -> str:
    """A fresh key-encryption key as ``LEDGER_KEY_ENCRYPTION_KEYS`` lists it."""
    if not _KEK_ID.match(kek_id):
        raise KeyCustodyError("a key-encryption key id is 1-64 of [A-Za-z0-9._-]")
    return f"{kek_id}={base64.urlsafe_b64encode(AESGCM.generate_key(256)).decode()}"


def custody_of(settings: Settings) -> KeyCustody:
    """The custody the settings name: ``local`` (the KEKs of ``LEDGER_KEY_ENCRYPTION_KEYS``
    or of ``LEDGER_KEY_ENCRYPTION_KEYS_FILE``), or one registered by a plug-in."""
    if settings.key_custody == "local":
        secret, path = (
            settings.key_encryption_keys.get_secret_value(),
            settings.key_encryption_keys_file,
        )
        if path is not None:
            if secret:
                raise KeyCustodyError(
                    "set LEDGER_KEY_ENCRYPTION_KEYS or LEDGER_KEY_ENCRYPTION_KEYS_FILE, not both"
                )
            return LocalKeyCustody.from_file(path)
        return LocalKeyCustody.parse(secret)
    found = entry_points(group="ledger.key_custody", name=settings.key_custody)
    if not found:
        raise KeyCustodyError(f"no key custody named {settings.key_custody!r} is installed")
    factory: Callable[[Settings], KeyCustody] = next(iter(found)).load()
    return factory(settings)
