"""The provider's keys as the services keep them, and the claims a provider's token maps to.

The provider is a function here that serves documents and counts requests: what is under
test is when the keys are asked for again, not HTTP (tests/e2e/test_identity_provider.py
runs a real provider).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest

from shared.core.errors import UnauthorizedError, UnavailableError
from shared.core.settings import Settings
from shared.web.auth import ClaimMap, TokenRules, decode_token
from shared.web.service import token_rules
from shared.web.signing_keys import REFETCH_INTERVAL_SECONDS, ProviderKeys, SharedSecret
from tests.identity_provider import signing_key

ISSUER = "https://login.council.example"


class Provider:
    """A discovery document and a key set, each fetch counted."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.issuer = ISSUER
        self.fetches = 0

    async def __call__(self, url: str) -> dict[str, Any]:
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": self.issuer, "jwks_uri": f"{ISSUER}/keys"}
        self.fetches += 1
        public = [
            {k: v for k, v in key.items() if k not in {"d", "p", "q", "dp", "dq", "qi"}}
            for key in self.keys
        ]
        return {"keys": public}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sign(key: dict[str, Any], claims: dict[str, Any]) -> str:
    private = jwt.PyJWK.from_dict(key).key
    return jwt.encode(claims, private, algorithm=key["alg"], headers={"kid": key["kid"]})


async def test_an_unknown_key_fetches_the_set_again_but_not_more_often_than_allowed() -> None:
    first, second = signing_key("ES256", "k1"), signing_key("RS256", "k2")
    provider, clock = Provider([first]), Clock()
    keys = ProviderKeys(ISSUER, ("RS256", "ES256"), fetch=provider, clock=clock)
    assert await keys.key("k1") is not None
    assert provider.fetches == 1
    provider.keys = [second]  # rotated: k1 removed
    with pytest.raises(jwt.InvalidKeyError):  # too soon after the last fetch: not asked
        await keys.key("k2")
    assert provider.fetches == 1
    clock.now += REFETCH_INTERVAL_SECONDS
    assert await keys.key("k2") is not None
    assert provider.fetches == 2
    for kid in ("k1", "made-up-1", "made-up-2"):  # a flood of unknown ids: one fetch at most
        with pytest.raises(jwt.InvalidKeyError):
            await keys.key(kid)
    assert provider.fetches == 2


async def test_the_set_is_fetched_again_when_it_is_old_so_a_removed_key_stops_working() -> None:
    key = signing_key("ES256", "k1")
    provider, clock = Provider([key]), Clock()
    keys = ProviderKeys(ISSUER, ("ES256",), fetch=provider, refresh_seconds=300, clock=clock)
    await keys.key("k1")
    provider.keys = []
    clock.now += 299
    assert await keys.key("k1") is not None
    clock.now += 1
    with pytest.raises(jwt.InvalidKeyError):
        await keys.key("k1")


async def test_a_provider_that_names_another_issuer_or_cannot_be_reached_is_unavailable() -> None:
    provider = Provider([signing_key("ES256", "k1")])
    provider.issuer = "https://evil.example"
    with pytest.raises(UnavailableError):
        await ProviderKeys(ISSUER, ("ES256",), fetch=provider).key("k1")

    async def away(_url: str) -> dict[str, Any]:
        raise TimeoutError

    with pytest.raises(UnavailableError):
        await ProviderKeys(ISSUER, ("ES256",), fetch=away).key("k1")


async def test_a_key_of_an_algorithm_not_allowed_is_not_taken() -> None:
    provider = Provider([signing_key("RS256", "k1")])
    with pytest.raises(jwt.InvalidKeyError):
        await ProviderKeys(ISSUER, ("ES256",), fetch=provider).key("k1")


async def test_a_providers_token_maps_to_the_ledgers_role_pilot_and_team() -> None:
    key = signing_key("ES256", "k1")
    rules = TokenRules(
        ProviderKeys(ISSUER, ("ES256",), fetch=Provider([key])),
        issuer=ISSUER,
        audience="ledger",
        max_lifetime=timedelta(hours=2),
        claims=ClaimMap(
            role_claim="realm_access.roles",
            roles={"ledger-workers": "social_worker"},
            pilot_claim="ledger_pilot",
            team_claim="ledger_team",
        ),
    )
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "ledger",
        "sub": "sw-9",
        "iat": now,
        "exp": now + 3600,
        "realm_access": {"roles": ["offline", "ledger-workers"]},
        "ledger_pilot": "wigan",
        "ledger_team": "north",
    }
    principal = await decode_token(f"Bearer {sign(key, claims)}", rules)
    assert (principal.sub, principal.role, principal.pilot, principal.team) == (
        "sw-9",
        "social_worker",
        "wigan",
        "north",
    )
    refused = [
        {**claims, "realm_access": {"roles": ["social_worker"]}},  # not mapped: no role
        {**claims, "aud": "another-app"},
        {**claims, "exp": now + 3 * 3600},  # lives longer than the rules allow
        {**claims, "ledger_team": None},  # a social worker acts for a team
    ]
    for bad in refused:
        with pytest.raises(UnauthorizedError):
            await decode_token(f"Bearer {sign(key, bad)}", rules)


def test_a_person_is_named_by_the_subject_claim_and_a_client_without_it_by_its_sub() -> None:
    """Where the provider's sub is an opaque id, a worker's requests name them by user name."""
    claims = ClaimMap(subject_claim="preferred_username")
    person = {"sub": "8f2c…", "preferred_username": "sw-9", "role": "social_worker"}
    person |= {"pilot": "wigan", "team": "north"}
    assert claims.principal(person).sub == "sw-9"
    client = {"sub": "case-system-1", "role": "case_system", "pilot": "wigan"}
    assert claims.principal(client).sub == "case-system-1"


def test_a_provider_needs_an_audience_and_in_production_https() -> None:
    with pytest.raises(ValueError, match="LEDGER_OIDC_AUDIENCE"):
        token_rules(Settings(oidc_issuer=ISSUER))
    with pytest.raises(ValueError, match="https"):
        token_rules(Settings(environment="production", oidc_issuer="http://idp", oidc_audience="a"))
    with pytest.raises(ValueError, match="roles the ledger has not"):
        token_rules(Settings(oidc_issuer=ISSUER, oidc_audience="a", oidc_roles="x=wizard"))


def test_production_refuses_to_start_with_the_shared_secret_unless_told_it_is_a_try_out() -> None:
    """The local stack's kind of token in production let anyone with the secret mint any
    role's token, with only a warning in the log."""
    secret = "s" * 40
    with pytest.raises(ValueError, match="LEDGER_OIDC_ISSUER and LEDGER_OIDC_AUDIENCE"):
        token_rules(Settings(environment="production", jwt_secret=secret))
    trying = Settings(environment="production", jwt_secret=secret, shared_secret_in_production=True)
    assert isinstance(token_rules(trying).keys, SharedSecret)
    council = Settings(environment="production", oidc_issuer=ISSUER, oidc_audience="a")
    assert isinstance(token_rules(council).keys, ProviderKeys)
    assert isinstance(token_rules(Settings(jwt_secret=secret)).keys, SharedSecret)  # locally


async def test_a_token_from_a_clock_a_few_minutes_ahead_is_taken_and_one_far_ahead_is_not() -> None:
    """With approval's clock five minutes behind the issuer's, every manager was refused
    (401 bad_token, ImmatureSignatureError) for five minutes: tokens had no leeway, though
    business time allows five minutes of skew."""
    rules = TokenRules(SharedSecret("s" * 40))
    now = int(time.time())

    def token(iat: int, exp: int) -> str:
        claims = {"sub": "m-1", "role": "manager", "pilot": "wigan", "team": "t-1"}
        return jwt.encode({**claims, "iat": iat, "exp": exp}, "s" * 40, algorithm="HS256")

    ahead = await decode_token(f"Bearer {token(now + 290, now + 3600)}", rules)
    assert ahead.sub == "m-1"
    just_expired = await decode_token(f"Bearer {token(now - 3600, now - 60)}", rules)
    assert just_expired.sub == "m-1"
    for iat, exp in ((now + 600, now + 4000), (now - 7200, now - 600)):
        with pytest.raises(UnauthorizedError):
            await decode_token(f"Bearer {token(iat, exp)}", rules)
