"""Bearer JWTs (HS256): who the caller is, what they may touch, and the checks on that."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal, get_args

import jwt
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.core.errors import ForbiddenError, UnauthorizedError

__all__ = [
    "ROLES",
    "TEAM_SCOPED_ROLES",
    "Principal",
    "Role",
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
_ALGORITHM = "HS256"  # pinned: a token naming any other algorithm is refused


class Principal(BaseModel):
    """The verified claims of a request's token."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str
    role: Role
    pilot: str
    team: str | None = None


def mint_token(
    secret: str,
    *,
    sub: str,
    role: Role,
    pilot: str,
    team: str | None,
    now: datetime,
    lifetime: timedelta = timedelta(hours=12),
) -> str:
    """A signed token for local use and tests."""
    claims: dict[str, object] = {
        "sub": sub,
        "role": role,
        "pilot": pilot,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    if team is not None:
        claims["team"] = team
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def decode_token(authorization: str | None, secret: str) -> Principal:
    """The principal of an ``Authorization: Bearer`` header, or UnauthorizedError."""
    if not authorization:
        raise UnauthorizedError("send Authorization: Bearer <token>", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "the Authorization header must be 'Bearer <token>'", code="bad_token"
        )
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "sub", "role", "pilot"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise UnauthorizedError("the token has expired", code="token_expired") from error
    except jwt.InvalidTokenError as error:
        raise UnauthorizedError(f"the token is not valid: {error}", code="bad_token") from error
    try:
        return Principal.model_validate(claims)
    except ValidationError as error:
        raise UnauthorizedError("the token's claims are not valid", code="bad_token") from error


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


def require_team(principal: Principal, team: str) -> None:
    """Social workers and managers act for their own team's families only."""
    if principal.role in TEAM_SCOPED_ROLES and principal.team != team:
        raise ForbiddenError("this family belongs to another team", code="forbidden_team")
