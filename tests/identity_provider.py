"""A real OpenID Provider for the tests: deploy/oidc/provider.mjs (the certified
oidc-provider from npm), started on a free port with signing keys the test chooses, and the
two ways the ledger's callers get tokens from it: a person by the authorization code flow
(with PKCE), a case system by client credentials."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from deploy.stack import LOCAL, StackError, free_port, wait_until
from shared.core.settings import Settings

PROVIDER = Path(os.environ.get("LEDGER_OIDC_PROVIDER", LOCAL / "tools/oidc/provider.mjs"))
AUDIENCE = "urn:devolved-budgets-ledger"
# The provider's names for the ledger's roles (its groups), which the services map.
ROLE_NAMES = {
    "admin": "ledger-admins",
    "case_system": "ledger-case-systems",
    "social_worker": "ledger-social-workers",
    "manager": "ledger-managers",
    "finance": "ledger-finance",
    "auditor": "ledger-auditors",
}
# The council's own front end, through which people sign in (the code flow).
WEB = {
    "client_id": "ledger-web",
    "secret": "w" * 40,
    "redirect_uri": "http://127.0.0.1:9/signed-in",
}

__all__ = [
    "AUDIENCE",
    "ROLE_NAMES",
    "WEB",
    "IdentityProvider",
    "ProviderTokens",
    "council_settings",
    "signing_key",
]


def council_settings(settings: Settings, provider: IdentityProvider, **more: str) -> Settings:
    """``settings`` with tokens checked by ``provider``'s keys, its role names mapped."""
    roles = ",".join(f"{name}={role}" for role, name in ROLE_NAMES.items())
    update = {
        "oidc_issuer": provider.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_role_claim": "roles",
        "oidc_roles": roles,
    }
    return settings.model_copy(update=update | more)


def signing_key(algorithm: str, kid: str) -> dict[str, Any]:
    """A new private JWK for ``algorithm`` (ES256 or RS256)."""
    if algorithm == "ES256":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": algorithm}


class IdentityProvider:
    """One oidc-provider process at a time, on a port that stays the same across restarts
    (its issuer must), for the people and clients of ``directory`` (see provider.mjs)."""

    def __init__(self, home: Path, directory: Mapping[str, Any]) -> None:
        if not PROVIDER.exists():
            raise StackError(f"{PROVIDER} is missing: `make test` installs it (deploy/oidc)")
        self.home = home
        self.directory = directory
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)
        (home / "directory.json").write_text(json.dumps(directory))

    def start(self, keys: list[dict[str, Any]], algorithm: str) -> None:
        """Serve with ``keys`` (the provider's whole key set), signing with ``algorithm``."""
        self.stop()
        (self.home / "jwks.json").write_text(json.dumps({"keys": keys}))
        with (self.home / "provider.log").open("ab") as log:
            self._process = subprocess.Popen(
                ["node", str(PROVIDER)],
                env={
                    "PATH": os.environ["PATH"],
                    "PORT": str(self.port),
                    "ISSUER": self.issuer,
                    "AUDIENCE": AUDIENCE,
                    "ALG": algorithm,
                    "JWKS": str(self.home / "jwks.json"),
                    "DIRECTORY": str(self.home / "directory.json"),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._answers, 30, f"the OpenID Provider answering at {self.issuer}")

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise StackError((self.home / "provider.log").read_text()[-2000:])
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    async def _discovery(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.issuer}/.well-known/openid-configuration") as response:
            found: dict[str, Any] = await response.json()
            return found

    async def person_token(self, sub: str) -> str:
        """An access token for ``sub``, who signs in through the web client (code + PKCE)."""
        web = self.directory["web"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        jar = aiohttp.CookieJar(unsafe=True)  # the provider is on an IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            discovery = await self._discovery(session)
            query = {
                "client_id": web["client_id"],
                "response_type": "code",
                "scope": "openid ledger",
                "redirect_uri": web["redirect_uri"],
                "resource": AUDIENCE,
                "state": secrets.token_urlsafe(8),
                "code_challenge": challenge.decode().rstrip("="),
                "code_challenge_method": "S256",
            }
            url = f"{discovery['authorization_endpoint']}?{urlencode(query)}"
            while not url.startswith(web["redirect_uri"]):
                async with session.get(url, allow_redirects=False) as response:
                    assert response.status in {302, 303}, await response.text()
                    url = urljoin(url, response.headers["Location"])
                if "/interaction/" in url:
                    url += f"?{urlencode({'login': sub})}"
            [code] = parse_qs(urlsplit(url).query)["code"]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": web["redirect_uri"],
                "code_verifier": verifier,
            }
            login = aiohttp.encode_basic_auth(web["client_id"], web["secret"])
            return await _token(session, discovery["token_endpoint"], form, login)

    async def client_token(self, client_id: str) -> str:
        """An access token for a case system, by the client-credentials grant."""
        client = self.directory["clients"][client_id]
        async with aiohttp.ClientSession() as session:
            discovery = await self._discovery(session)
            form = {"grant_type": "client_credentials", "resource": AUDIENCE, "scope": "ledger"}
            login = aiohttp.encode_basic_auth(client_id, client["secret"])
            return await _token(session, discovery["token_endpoint"], form, login)


async def _token(
    session: aiohttp.ClientSession, endpoint: str, form: dict[str, str], login: str
) -> str:
    """The access token the token endpoint answers, the client signing in as ``login``
    (client_secret_basic)."""
    async with session.post(endpoint, data=form, headers={"Authorization": login}) as response:
        body = await response.json()
        assert response.status == 200, body
        token: str = body["access_token"]
        assert token.count(".") == 2, "the provider's access tokens must be JWTs"
        return token


Caller = tuple[str, str, str, str | None]  # role, pilot, sub, team


class ProviderTokens:
    """A System's token source that hands out the provider's tokens, for callers named up
    front (a System asks for tokens synchronously). Each caller is a directory entry of its
    own: a person who signs in by the code flow, or for ``case_system`` a client with client
    credentials. The entry's user name is the caller's ``sub``, so that one name can be a
    worker in two pilots or teams: the services name callers by ``preferred_username``."""

    def __init__(self, callers: Iterable[Caller]) -> None:
        self.people: dict[str, Any] = {}
        self.clients: dict[str, Any] = {}
        self._logins: dict[Caller, str] = {}
        for number, caller in enumerate(sorted(set(callers), key=str)):
            role, pilot, sub, team = caller
            login = f"caller-{number}"
            entry = {"roles": [ROLE_NAMES[role]], "pilot": pilot, "username": sub}
            entry |= {"team": team} if team is not None else {}
            if role == "case_system":
                self.clients[login] = entry | {"secret": secrets.token_urlsafe(32)}
            else:
                self.people[login] = entry
            self._logins[caller] = login
        self._held: dict[Caller, str] = {}

    @property
    def directory(self) -> dict[str, Any]:
        return {"people": self.people, "clients": self.clients, "web": WEB}

    async def fetch(self, provider: IdentityProvider) -> None:
        for caller, login in self._logins.items():
            if login in self.clients:
                self._held[caller] = await provider.client_token(login)
            else:
                self._held[caller] = await provider.person_token(login)

    def __call__(
        self, role: str, pilot: str, *, sub: str = "user-1", team: str | None = None
    ) -> str:
        try:
            return self._held[(role, pilot, sub, team)]
        except KeyError:
            raise KeyError(f"no token fetched for {(role, pilot, sub, team)}") from None
