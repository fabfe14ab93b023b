"""Bearer JWTs: who the caller is, what they may touch, and the checks on that.

A token is signed either by the council's OpenID Provider (RS256 or ES256, its keys from its
JWKS: :mod:`shared.web.signing_keys`) or, for the local stack and the tests only, with a
shared secret (HS256, ``ledger token``). Either way it is checked as RFC 8725 advises: the
algorithms pinned; ``exp`` and ``iat`` required and numeric (a date written as a string is
refused), ``nbf`` honoured; a lifetime no longer than the rules allow; ``iss`` and ``aud``
checked when configured (always, with a provider). The issuer's clock and the service's may
differ by :data:`~shared.contracts.business_time.CLOCK_SKEW` either way. Its role, pilot and
team are read from the claims a :class:`ClaimMap` names (providers put them in claims of
their own); a non-blank ``sub`` and ``pilot``, exactly one ledger role, and a ``team`` for
the roles that act for a team -- a claim that is missing never widens access.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, get_args

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.contracts.business_time import CLOCK_SKEW
from shared.core.errors import ForbiddenError, LedgerError, UnauthorizedError

__all__ = [
    "MIN_SECRET_BYTES",
    "ROLES",
    "SHARED_SECRET_ALGORITHM",
    "TEAM_SCOPED_ROLES",
    "ClaimMap",
    "Principal",
    "Role",
    "SigningKeys",
    "TokenRules",
    "decode_token",
    "mint_token",
    "require_pilot",
    "require_role",
    "require_team",
]

Role = Literal["admin", "case_system", "social_worker", "manager", "finance", "auditor"]
ROLES: frozenset[str] = frozenset(get_args(Role))
# People who act for their team's families only.
TEAM_SCOPED_ROLES: frozenset[str] = frozenset({"social_worker", "manager"})
SHARED_SECRET_ALGORITHM = "HS256"  # noqa: S105 - a name: the local stack's and the tests' tokens
MIN_SECRET_BYTES = 32  # HS256's key: RFC 7518 asks for at least the hash's 256 bits
_DATES = ("exp", "iat", "nbf")


class SigningKeys(Protocol):
    """Where the key that checks a token's signature comes from."""

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a token may be signed with; any other is refused."""
        ...

    async def key(self, kid: str | None) -> Any:  # noqa: ANN401 - whatever PyJWT takes
        """The key for a token's ``kid``; jwt.InvalidKeyError if there is none."""
        ...


@dataclass(frozen=True)
class ClaimMap:
    """Which claims carry the ledger's role, pilot and team. ``role_claim`` may be a dotted
    path (``realm_access.roles``) and hold a string or a list (``roles``, ``groups``); its
    values are mapped by ``roles`` (provider value -> ledger role; values it does not list
    are ignored), or, when ``roles`` is empty, taken as the ledger's own role names.

    ``subject_claim`` names the caller as the ledger records them (a request's
    ``requested_by``, a decision's ``decided_by``): ``sub``, or the user name where case
    systems know workers by it (a provider's ``sub`` is often an opaque id). A token without
    it, a case system's by client credentials, is named by its ``sub``."""

    role_claim: str = "role"
    roles: Mapping[str, str] = field(default_factory=dict)
    pilot_claim: str = "pilot"
    team_claim: str = "team"
    subject_claim: str = "sub"

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The caller the claims describe, or UnauthorizedError."""
        values = _at(claims, self.role_claim)
        named = values if isinstance(values, list) else [values]
        mapped = {
            self.roles.get(value, "") if self.roles else value
            for value in named
            if isinstance(value, str)
        } & ROLES
        if len(mapped) != 1:
            found = "no ledger role" if not mapped else "more than one ledger role"
            raise UnauthorizedError(f"the token's claims name {found}", code="bad_token")
        try:
            return Principal.model_validate(
                {
                    "sub": _at(claims, self.subject_claim) or claims.get("sub"),
                    "role": mapped.pop(),
                    "pilot": _at(claims, self.pilot_claim),
                    "team": _at(claims, self.team_claim),
                }
            )
        except ValidationError as error:
            raise UnauthorizedError("the token's claims are not valid", code="bad_token") from error


def _at(claims: Mapping[str, Any], path: str) -> Any:  # noqa: ANN401 - a claim is any JSON
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@dataclass(frozen=True)
class TokenRules:
    """What a token must satisfy: its signature by ``keys``, and the rest."""

    keys: SigningKeys
    issuer: str | None = None
    audience: str | None = None
    max_lifetime: timedelta = timedelta(hours=24)
    claims: ClaimMap = field(default_factory=ClaimMap)


class Principal(BaseModel):
    """The verified claims of a request's token."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    sub: str = Field(min_length=1, max_length=200)
    role: Role
    pilot: str = Field(min_length=1, max_length=200)
    team: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _team_for_team_roles(self) -> Principal:
        if self.role in TEAM_SCOPED_ROLES and self.team is None:
            raise ValueError(f"a {self.role}'s token must name a team")
        return self


def mint_token(
    secret: str,
    *,
    sub: str,
    role: Role,
    pilot: str,
    team: str | None,
    now: datetime,
    lifetime: timedelta = timedelta(hours=12),
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """A token signed with the local stack's shared secret, for local use and tests."""
    claims: dict[str, object] = {
        "sub": sub,
        "role": role,
        "pilot": pilot,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    optional = {"team": team, "iss": issuer, "aud": audience}
    claims.update({name: value for name, value in optional.items() if value is not None})
    return jwt.encode(claims, secret, algorithm=SHARED_SECRET_ALGORITHM)


async def decode_token(authorization: str | None, rules: TokenRules) -> Principal:
    """The principal of an ``Authorization: Bearer`` header, or UnauthorizedError (or
    UnavailableError while the provider's keys cannot be fetched)."""
    if not authorization:
        raise UnauthorizedError("send Authorization: Bearer <token>", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "the Authorization header must be 'Bearer <token>'", code="bad_token"
        )
    token = token.strip()
    try:
        _numeric_dates(jwt.decode(token, options={"verify_signature": False}))
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in rules.keys.algorithms:
            raise jwt.InvalidAlgorithmError("the token's algorithm is not allowed")
        key = await rules.keys.key(header.get("kid"))
        claims = jwt.decode(
            token,
            key,
            algorithms=list(rules.keys.algorithms),
            issuer=rules.issuer,
            audience=rules.audience,
            # Clocks differ a little (as business time allows): a token issued by a clock
            # ahead of this one is not "not yet valid", nor one just expired by it.
            leeway=CLOCK_SKEW,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise UnauthorizedError("the token has expired", code="token_expired") from error
    except (jwt.InvalidTokenError, jwt.InvalidKeyError) as error:
        # Not the token's text: it may be anything, and is never echoed or logged.
        raise UnauthorizedError(
            f"the token is not valid ({type(error).__name__})", code="bad_token"
        ) from error
    if claims["exp"] - claims["iat"] > rules.max_lifetime.total_seconds():
        raise UnauthorizedError(
            f"the token lives longer than {rules.max_lifetime}", code="bad_token"
        )
    return rules.claims.principal(claims)


def _numeric_dates(claims: dict[str, Any]) -> None:
    """``exp``, ``iat`` and ``nbf`` are NumericDates (RFC 7519), never strings."""
    for name in _DATES:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise jwt.InvalidTokenError(f"{name} is not a NumericDate")


def require_role(principal: Principal, roles: Iterable[str]) -> None:
    """Refuse a role that may not do this."""
    allowed = frozenset(roles)
    if principal.role not in allowed:
        raise ForbiddenError(
            f"role {principal.role} may not do this; allowed: {', '.join(sorted(allowed))}",
            code="forbidden_role",
        )


def require_pilot(principal: Principal, pilot_id: str) -> None:
    """A token touches its own pilot only."""
    if principal.pilot != pilot_id:
        raise ForbiddenError("this token is for another pilot", code="forbidden_pilot")


def require_team(principal: Principal, team: str, *, unseen: LedgerError | None = None) -> None:
    """Social workers and managers act for their own team's families only.

    ``unseen``: what the caller would be answered if the family (or request) did not exist.
    Another team's family answers exactly that, so that a worker cannot learn which families
    exist beyond their team; without it (a family named in a body), 403 forbidden_team.
    """
    if principal.role in TEAM_SCOPED_ROLES and principal.team != team:
        refusal = unseen or ForbiddenError(
            "this family belongs to another team", code="forbidden_team"
        )
        refusal.refuses_caller = True
        raise refusal
