"""What a service refuses to start with, before it opens anything."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from shared.core.custody import new_kek
from shared.core.settings import Settings
from shared.web.registry import service


def _settings(secret: str) -> Settings:
    return Settings(jwt_secret=SecretStr(secret), key_encryption_keys=SecretStr(new_kek("k-1")))


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])
def test_a_token_secret_shorter_than_32_bytes_is_refused(secret: str) -> None:
    """A short HS256 secret can be guessed, and whoever guesses it mints any role's token:
    every service refuses to start with one (a 10-byte secret used to be accepted)."""
    for name in ("allocation", "reporting"):
        with pytest.raises(ValueError, match="at least 32 bytes"):
            service(name).create_app(_settings(secret))


def test_a_secret_of_32_bytes_is_enough() -> None:
    """The bound is the hash's size, no more."""
    assert service("spending").create_app(_settings("y" * 32)) is not None
