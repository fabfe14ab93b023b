"""Where the keys that check tokens come from: the council's OpenID Provider, or the local
stack's shared secret.

:class:`ProviderKeys` reads the provider's discovery document
(``<issuer>/.well-known/openid-configuration``), then the key set its ``jwks_uri`` names, and
keeps it: it asks again when a token names a key it does not hold (the provider has rotated:
at most once per :data:`REFETCH_INTERVAL_SECONDS`, however many such tokens arrive), and
every ``refresh_seconds`` (a key the provider has removed stops working by then at the
latest). :class:`SharedSecret` is HS256 with one secret, for the local stack and the tests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from shared.core.errors import UnavailableError
from shared.web.auth import SHARED_SECRET_ALGORITHM

__all__ = ["REFETCH_INTERVAL_SECONDS", "ProviderKeys", "SharedSecret", "fetch_json"]

# A token naming an unknown key makes the set be fetched again, no more often than this: a
# flood of made-up key ids does not become a flood of requests to the provider.
REFETCH_INTERVAL_SECONDS = 2.0
_TIMEOUT = aiohttp.ClientTimeout(total=5)

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class SharedSecret:
    """HS256 with the local stack's secret (``LEDGER_JWT_SECRET``): never a provider's."""

    secret: str = field(repr=False)

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (SHARED_SECRET_ALGORITHM,)

    async def key(self, _kid: str | None) -> str:
        return self.secret


def fetch_json(ca_file: Path | None) -> Fetch:
    """GET a JSON document over HTTPS (checked against ``ca_file``, or the system's CAs)."""
    context = ssl.create_default_context(cafile=ca_file)

    async def fetch(url: str) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.get(url, ssl=context, allow_redirects=False) as response,
        ):
            response.raise_for_status()
            document: dict[str, Any] = json.loads(await response.read())
            return document

    return fetch


class ProviderKeys:
    """The signing keys of the provider that ``issuer`` names, fetched when needed."""

    def __init__(
        self,
        issuer: str,
        algorithms: tuple[str, ...],
        *,
        fetch: Fetch,
        refresh_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if SHARED_SECRET_ALGORITHM in algorithms:
            raise ValueError("a provider's keys are public keys: HS256 is not one of them")
        self.issuer = issuer.rstrip("/")
        self._algorithms = algorithms
        self._fetch = fetch
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    async def key(self, kid: str | None) -> Any:  # noqa: ANN401 - whatever PyJWT takes
        if self._stale() or (kid not in self._keys and self._may_refetch()):
            async with self._lock:  # one fetch for every request waiting on it
                if self._stale() or (kid not in self._keys and self._may_refetch()):
                    await self._refresh()
        if kid not in self._keys:
            raise jwt.InvalidKeyError("the token's key is not one of the provider's")
        return self._keys[kid]

    def _stale(self) -> bool:
        return self._fetched_at is None or (
            self._clock() - self._fetched_at >= self._refresh_seconds
        )

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or (
            self._clock() - self._fetched_at >= REFETCH_INTERVAL_SECONDS
        )

    async def _refresh(self) -> None:
        try:
            discovery = await self._fetch(f"{self.issuer}/.well-known/openid-configuration")
            if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
                # OpenID Connect Discovery: the document must name the issuer asked about.
                raise UnavailableError(
                    "the identity provider's discovery document names another issuer",
                    code="identity_provider_unavailable",
                )
            found = await self._fetch(str(discovery["jwks_uri"]))
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as error:
            raise UnavailableError(
                "the identity provider's keys cannot be fetched just now; retry",
                code="identity_provider_unavailable",
            ) from error
        keys: dict[str | None, Any] = {}
        for entry in found.get("keys", []):
            if entry.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWKError:
                continue  # a key of a type or algorithm this ledger does not take
            if jwk.algorithm_name in self._algorithms:
                keys[jwk.key_id] = jwk.key
        self._keys = keys
        self._fetched_at = self._clock()
