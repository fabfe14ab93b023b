"""The services as a council runs them: tokens from its OpenID Provider (a real one,
oidc-provider from npm: tests/identity_provider.py), not a shared secret.

People sign in by the authorization code flow, the case system by client credentials; the
provider puts the ledger's role in ``roles`` under names of its own, which the services map.
A spend request goes through end to end; then the provider's signing key is rotated (a new
key of another algorithm, the old one removed) while the services run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.core.settings import Settings
from shared.web.auth import mint_token
from shared.web.signing_keys import REFETCH_INTERVAL_SECONDS
from tests.e2e.system import System, auth, running_system
from tests.identity_provider import WEB, IdentityProvider, council_settings, signing_key
from tests.support import wait_for

DIRECTORY: dict[str, Any] = {
    "people": {
        "finance-1": {"roles": ["staff", "ledger-admins"], "pilot": "wigan"},
        "sw-1": {"roles": ["ledger-social-workers"], "pilot": "wigan", "team": "t-1"},
        "m-1": {"roles": ["ledger-managers"], "pilot": "wigan", "team": "t-1"},
        "fin-1": {"roles": ["ledger-finance"], "pilot": "wigan"},
        "aud-1": {"roles": ["ledger-auditors"], "pilot": "wigan"},
        "visitor": {"roles": ["staff"], "pilot": "wigan"},
        "two-hats": {"roles": ["ledger-finance", "ledger-auditors"], "pilot": "wigan"},
    },
    "clients": {
        "case-system-1": {"secret": "c" * 40, "roles": ["ledger-case-systems"], "pilot": "wigan"}
    },
    "web": WEB,
}


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[IdentityProvider]:
    started = IdentityProvider(tmp_path / "provider", DIRECTORY)
    started.start([signing_key("ES256", "council-2026-11")], "ES256")
    yield started
    started.stop()


class Tokens:
    """The System's token source: each caller's token, fetched from the provider ahead."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def fetch(self, provider: IdentityProvider) -> None:
        for sub in DIRECTORY["people"]:
            self.held[sub] = await provider.person_token(sub)
        self.held["case-system-1"] = await provider.client_token("case-system-1")

    def __call__(self, _role: str, _pilot: str, *, sub: str, **_team: str | None) -> str:
        """The token of ``sub``: its role, pilot and team are the provider's to say."""
        return self.held[sub]


@pytest.fixture
async def system(
    settings: Settings, provider: IdentityProvider
) -> AsyncIterator[tuple[System, Tokens]]:
    tokens = Tokens()
    await tokens.fetch(provider)
    council = council_settings(settings, provider)
    async with running_system(council, tokens, reporting=True) as running:
        await running.configure()
        yield running, tokens


async def test_every_role_signs_in_with_the_provider_and_a_spend_goes_through(
    system: tuple[System, Tokens],
) -> None:
    running, tokens = system
    version = await running.enrol("fam-1", allocate=100_000)
    # The case system asks (client credentials), above the auto tier; the manager approves.
    response = await running.spending.post(
        "/pilots/wigan/spend-requests",
        json={
            "family_id": "fam-1",
            "amount_pence": 60_000,
            "category": "practical",
            "purpose": "a bed",
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": version,
        },
        headers=auth(tokens("case_system", "wigan", sub="case-system-1")),
    )
    assert response.status == 202, await response.text()
    request_id = (await response.json())["request_id"]
    await running.settled(request_id, "awaiting_approval")
    approved = await running.approval.post(
        f"/pilots/wigan/spend-requests/{request_id}/approve", json={}, headers=running.manager()
    )
    assert approved.status in {200, 201, 202}, await approved.text()
    await running.settled(request_id, "approved")
    bought = await running.spending.post(
        f"/pilots/wigan/spend-requests/{request_id}/purchases",
        json={"amount_pence": 58_500, "purchased_on": "2026-04-02", "method": "card"},
        headers=running.worker(),
    )
    assert bought.status == 201, await bought.text()

    async def spent() -> bool:
        response = await running.reports.get(
            "/pilots/wigan/families/fam-1/balance", headers=running.finance()
        )
        return response.status == 200 and (await response.json())["spent_pence"] == 58_500

    await wait_for(spent, timeout=20)
    auditor = auth(tokens("auditor", "wigan", sub="aud-1"))
    assert (await running.reports.get("/pilots/wigan/uptake", headers=auditor)).status == 200


async def test_a_token_that_names_no_single_ledger_role_or_is_signed_by_a_secret_is_refused(
    system: tuple[System, Tokens], settings: Settings
) -> None:
    running, tokens = system
    for sub in ("visitor", "two-hats"):
        response = await running.allocation.get(
            "/pilots/wigan", headers=auth(tokens("none", "wigan", sub=sub))
        )
        assert response.status == 401
        assert (await response.json())["code"] == "bad_token"
    # The local stack's kind of token, even with the right secret, is not the provider's.
    local = mint_token(
        settings.jwt_secret.get_secret_value(),
        sub="finance-1",
        role="admin",
        pilot="wigan",
        team=None,
        now=datetime.now(UTC),
    )
    response = await running.allocation.get("/pilots/wigan", headers=auth(local))
    assert response.status == 401


async def test_a_rotated_key_is_taken_without_a_restart_and_a_removed_one_refused(
    system: tuple[System, Tokens], provider: IdentityProvider
) -> None:
    running, tokens = system
    before = tokens("admin", "wigan", sub="finance-1")
    assert (await running.allocation.get("/pilots/wigan", headers=auth(before))).status == 200
    # The council rotates: a new RSA key signs, and the old EC key is gone from the set.
    provider.start([signing_key("RS256", "council-2026-12")], "RS256")
    after = await provider.person_token("finance-1")
    await asyncio.sleep(REFETCH_INTERVAL_SECONDS)  # the services ask again at most so often
    assert (await running.allocation.get("/pilots/wigan", headers=auth(after))).status == 200
    # The old key was dropped with the set the new key came in.
    response = await running.allocation.get("/pilots/wigan", headers=auth(before))
    assert response.status == 401
    assert (await response.json())["code"] == "bad_token"
