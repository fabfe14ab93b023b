"""The authorization matrix: every operation of the four OpenAPI documents, tried by every
role, for its own pilot and another, in its own team and another, and with no token; once
with the local stack's tokens (HS256, shared secret) and once with a real OpenID Provider's
(tests/identity_provider.py), people signing in by the code flow and case systems by client
credentials, as a council runs the services.

What is allowed is written out below from ``../shared/API.md`` (and, for operations the
project added since, from the README). The OpenAPI documents must say the same (``x-roles``),
and every cell must answer as the table says: 401 without a token, 403 for another pilot, a
role the table does not name; to a social worker or manager of another team, a family or
request is not there (the answer one that does not exist gets: 404, or 422 unknown_family
for a spend request naming it), except that enrolling into another team is 403; anything
but 401 and 403 where it is allowed. Every cell's
result is kept in ``.local/artefacts/authorization-matrix-<tokens>.json``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.core.settings import Settings
from shared.web.auth import ROLES, TEAM_SCOPED_ROLES
from shared.web.batches import NDJSON
from tests.e2e.system import WIGAN, Client, System, auth, running_system
from tests.identity_provider import Caller as TokenCaller
from tests.identity_provider import IdentityProvider, ProviderTokens, council_settings, signing_key
from tests.support import wait_for

ANY = frozenset(ROLES)
WRITERS = frozenset({"case_system", "social_worker", "admin"})
ARTEFACTS = Path(".local/artefacts")


@dataclass(frozen=True)
class Allowed:
    """Who may call an operation, and what a social worker or manager of another team gets."""

    roles: frozenset[str]
    other_team: str | None  # None: the operation is about the pilot, any team may


def family(roles: frozenset[str], other_team: str = "404") -> Allowed:
    """About one family: to another team's worker or manager it is not there (the answer a
    family that does not exist gets), so existence is not given away."""
    return Allowed(roles, other_team)


def pilot_wide(roles: frozenset[str]) -> Allowed:
    """About the pilot as a whole: any team."""
    return Allowed(roles, None)


# (service, method, path) -> who may. API.md's tables, then the project's additions.
F = "/pilots/{pilot_id}/families/{family_id}"
R = "/pilots/{pilot_id}/spend-requests"
W = "/pilots/{pilot_id}/webhooks"
ADMIN = frozenset({"admin"})
WORKERS = frozenset({"case_system", "social_worker"})
HANDLERS = frozenset({"case_system", "social_worker", "finance"})
OVERSIGHT = frozenset({"admin", "manager", "auditor"})
TABLE: dict[tuple[str, str, str], Allowed] = {
    ("allocation", "PUT", "/pilots/{pilot_id}"): pilot_wide(ADMIN),
    ("allocation", "GET", "/pilots/{pilot_id}"): pilot_wide(ANY),
    # Enrolling into another team names that team in the body: refused, not hidden.
    ("allocation", "POST", "/pilots/{pilot_id}/families"): family(WRITERS, "403"),
    ("allocation", "GET", F): family(ANY),
    ("allocation", "POST", f"{F}/allocations"): family(ADMIN),
    ("allocation", "POST", f"{F}/adjustments"): family(ADMIN),
    ("allocation", "POST", f"{F}/exit"): family(WRITERS),
    ("allocation", "POST", f"{F}/disclosures"): family(WORKERS),
    ("allocation", "POST", f"{F}/outcomes"): family(WRITERS),
    ("spending", "POST", R): family(WORKERS, "422"),  # unknown_family, as for none
    ("spending", "GET", f"{R}/{{request_id}}"): family(ANY),
    ("spending", "POST", f"{R}/{{request_id}}/withdraw"): family(WORKERS),
    ("spending", "POST", f"{R}/{{request_id}}/purchases"): family(HANDLERS),
    ("spending", "POST", "/pilots/{pilot_id}/purchases/{purchase_id}/refunds"): pilot_wide(
        frozenset({"finance", "case_system"})
    ),
    ("spending", "POST", f"{R}/{{request_id}}/close"): family(HANDLERS),
    # A manager's queue is filtered to their own team, not refused.
    ("approval", "GET", "/pilots/{pilot_id}/approvals"): pilot_wide(
        frozenset({"manager", "auditor"})
    ),
    ("approval", "POST", f"{R}/{{request_id}}/approve"): family(frozenset({"manager"})),
    ("approval", "POST", f"{R}/{{request_id}}/reject"): family(frozenset({"manager"})),
    ("reporting", "GET", f"{F}/balance"): family(ANY),
    ("reporting", "GET", f"{F}/history"): family(OVERSIGHT),
    ("reporting", "GET", "/pilots/{pilot_id}/uptake"): pilot_wide(OVERSIGHT),
    ("reporting", "GET", "/pilots/{pilot_id}/transactions.csv"): pilot_wide(
        frozenset({"admin", "auditor", "finance"})
    ),
    ("reporting", "GET", "/pilots/{pilot_id}/dashboard"): pilot_wide(OVERSIGHT),
    # Added by the project (README): a cut is followed as a request is; erasure is an
    # admin's; free text is read by those who work with the family, not finance or audit.
    ("allocation", "GET", f"{F}/adjustments/{{adjustment_id}}"): family(ANY),
    ("allocation", "POST", f"{F}/erasure"): family(ADMIN),
    ("allocation", "GET", f"{F}/notes"): family(
        frozenset({"admin", "case_system", "manager", "social_worker"})
    ),
    ("spending", "GET", f"{F}/purposes"): family(
        frozenset({"admin", "case_system", "manager", "social_worker"})
    ),
    # A batch is open to whoever may call one of its service's commands; each line is then
    # authorised as its own request (tests/e2e/test_batches.py).
    ("allocation", "POST", "/pilots/{pilot_id}/batches"): pilot_wide(WRITERS),
    ("spending", "POST", "/pilots/{pilot_id}/batches"): pilot_wide(HANDLERS | ADMIN),
    ("approval", "POST", "/pilots/{pilot_id}/batches"): pilot_wide(frozenset({"manager"})),
    # A family's statement is for the family, through its worker (or their manager, an admin).
    ("reporting", "GET", f"{F}/statement"): family(
        frozenset({"admin", "manager", "social_worker"})
    ),
    # A what-if reads every request of the pilot: an admin's question.
    ("reporting", "POST", "/pilots/{pilot_id}/policy/what-if"): pilot_wide(ADMIN),
    # The trial dataset is pseudonymous, for evaluators: auditors and admins.
    ("reporting", "GET", "/pilots/{pilot_id}/trial-dataset"): pilot_wide(
        frozenset({"admin", "auditor"})
    ),
    # Revealing the randomisation's seeds closes a trial: an admin's decision.
    ("allocation", "POST", "/pilots/{pilot_id}/randomisation/reveal"): pilot_wide(ADMIN),
    # Statements are finance's to reconcile; auditors read what did not match.
    ("spending", "POST", "/pilots/{pilot_id}/statements"): pilot_wide(
        frozenset({"finance", "admin"})
    ),
    ("spending", "GET", "/pilots/{pilot_id}/statements/{statement_id}/exceptions.csv"): (
        pilot_wide(frozenset({"finance", "admin", "auditor"}))
    ),
    # Erasing a statement's text (its lines' descriptions and references) is finance's too.
    ("spending", "POST", "/pilots/{pilot_id}/statements/{statement_id}/erasure"): pilot_wide(
        frozenset({"finance", "admin"})
    ),
    # Webhook subscriptions hold a secret and send family events out: an admin's alone.
    ("reporting", "POST", "/pilots/{pilot_id}/webhooks"): pilot_wide(ADMIN),
    ("reporting", "GET", "/pilots/{pilot_id}/webhooks"): pilot_wide(ADMIN),
    ("reporting", "DELETE", f"{W}/{{subscription_id}}"): pilot_wide(ADMIN),
    ("reporting", "GET", f"{W}/{{subscription_id}}/deliveries"): pilot_wide(ADMIN),
    ("reporting", "POST", f"{W}/{{subscription_id}}/replay"): pilot_wide(ADMIN),
}

# A valid body for each command, so that a cell reaches the team check behind validation.
BODIES: dict[str, dict[str, Any]] = {
    "/pilots/{pilot_id}": WIGAN,
    "/pilots/{pilot_id}/families": {
        "family_id": "fam-m",
        "team": "t-1",
        "worker": "sw-1",
        "enrolled_on": "2026-01-05",
    },
    "/allocations": {"amount_pence": 1},
    "/adjustments": {"delta_pence": 1, "reason": "r"},
    "/exit": {"reason": "r", "exited_on": "2026-06-01"},
    "/disclosures": {"disclosed_on": "2026-06-01", "method": "in_person"},
    "/outcomes": {"outcome": "reunified", "occurred_on": "2026-06-02"},
    "/erasure": {"basis": "subject_request", "erased_on": "2026-11-30"},
    "/spend-requests": {
        "family_id": "fam-1",
        "amount_pence": 100,
        "category": "practical",
        "purpose": "p",
        "requested_by": "sw-1",
        "family_involved": True,
    },
    "/withdraw": {"reason": "r"},
    "/purchases": {"amount_pence": 1, "purchased_on": "2026-06-01", "method": "card"},
    "/refunds": {"amount_pence": 1, "reason": "r"},
    "/close": {},
    "/approve": {},
    "/reject": {"reason": "r"},
    # Port 9 (discard) on loopback: nothing answers, and nothing leaves the machine.
    "/webhooks": {"url": "http://127.0.0.1:9/hook", "event_types": ["family.enrolled"]},
    "/replay": {"from_position": 1},
    "/reveal": {"revealed_on": "2026-12-01"},
    "/what-if": WIGAN,
    "/statements": {},  # JSON, not a statement: 415 where the role may, 401 or 403 before that
}


# Who the set-up acts as (System.admin(), .worker(), .manager(), .finance()).
SET_UP: tuple[TokenCaller, ...] = (
    ("admin", "wigan", "finance-1", None),
    ("social_worker", "wigan", "sw-1", "t-1"),
    ("manager", "wigan", "m-1", "t-1"),
    ("finance", "wigan", "fin-1", None),
)


@pytest.fixture(params=["shared-secret", "provider"])
def tokens(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(
    tmp_path: Path, tokens: str
) -> Iterator[tuple[IdentityProvider, ProviderTokens] | None]:
    """With the provider: every caller of the matrix and the set-up in its directory."""
    if tokens != "provider":
        yield None
        return
    held = ProviderTokens([*SET_UP, *(_token_caller(c) for c in _callers() if c.role)])
    started = IdentityProvider(tmp_path / "provider", held.directory)
    started.start([signing_key("ES256", "council-2026-12")], "ES256")
    yield started, held
    started.stop()


@pytest.fixture
async def system(
    settings: Settings,
    token: Callable[..., str],
    provider: tuple[IdentityProvider, ProviderTokens] | None,
) -> AsyncIterator[System]:
    if provider is not None:
        started, held = provider
        await held.fetch(started)
        settings = council_settings(settings, started, oidc_subject_claim="preferred_username")
        token = held
    async with running_system(settings, token, reporting=True) as system:
        yield system


async def test_every_cell_answers_as_the_table_says(system: System, tokens: str) -> None:
    """The OpenAPI documents name the table's roles, and every cell answers as it says."""
    operations = await _operations(system)
    assert set(operations) == set(TABLE)
    for operation, roles in operations.items():
        assert roles == TABLE[operation].roles, operation
    ids = await _set_up(system)
    cells: list[dict[str, Any]] = []
    for (service, method, path), allowed in sorted(TABLE.items()):
        for caller in _callers():
            status = await _try(system, service, method, path, ids, caller)
            expected = _expected(allowed, caller)
            cells.append(
                {
                    "operation": f"{service} {method} {path}",
                    "caller": caller.name,
                    "expected": expected,
                    "status": status,
                    "holds": _holds(expected, status),
                }
            )
    _keep(cells, tokens)
    wrong = [cell for cell in cells if not cell["holds"]]
    assert not wrong, json.dumps(wrong, indent=1)
    assert len(cells) == len(TABLE) * len(_callers())


@dataclass(frozen=True)
class Caller:
    """One column of the matrix."""

    name: str
    role: str | None  # None: no token
    pilot: str = "wigan"
    team: str | None = None


def _callers() -> list[Caller]:
    callers = [Caller("no token", None)]
    for role in sorted(ROLES):
        team = "t-1" if role in TEAM_SCOPED_ROLES else None
        callers.append(Caller(f"{role}", role, team=team))
        callers.append(Caller(f"{role}, other pilot", role, pilot="leeds", team=team))
        if role in TEAM_SCOPED_ROLES:
            callers.append(Caller(f"{role}, other team", role, team="t-9"))
    return callers


def _token_caller(caller: Caller) -> TokenCaller:
    """The token ``caller`` sends. A worker's requests name the worker (the body's
    requested_by is sw-1)."""
    assert caller.role is not None
    sub = "sw-1" if caller.role == "social_worker" else f"{caller.role}-9"
    return (caller.role, caller.pilot, sub, caller.team)


def _expected(allowed: Allowed, caller: Caller) -> str:
    if caller.role is None:
        return "401"
    if caller.pilot != "wigan" or caller.role not in allowed.roles:
        return "403"
    if allowed.other_team and caller.role in TEAM_SCOPED_ROLES and caller.team != "t-1":
        return allowed.other_team
    return "allowed"


def _holds(expected: str, status: int) -> bool:
    if expected == "allowed":
        return status not in {401, 403} and status < 500
    return str(status) == expected


async def _operations(system: System) -> dict[tuple[str, str, str], frozenset[str]]:
    found = {}
    for service, client in _clients(system).items():
        document = await (await client.get("/openapi.json")).json()
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                if "x-roles" in operation:
                    found[(service, method.upper(), path)] = frozenset(operation["x-roles"])
    return found


def _clients(system: System) -> dict[str, Client]:
    assert system.reporting is not None
    return {
        "allocation": system.allocation,
        "spending": system.spending,
        "approval": system.approval,
        "reporting": system.reporting,
    }


async def _set_up(system: System) -> dict[str, str]:
    """Families of team t-1 (one to exit, one to erase), a request with a purchase, one
    awaiting a manager, and a top-up to follow."""
    await system.configure()
    for family in ("fam-1", "fam-exit", "fam-erase"):
        await system.enrol(family)
    version = await system.allocate("fam-1", 200_000)
    bought = (await system.request("fam-1", 1_000, version=version))["request_id"]
    await system.settled(bought, "approved")
    purchase = await system.spending.post(
        f"/pilots/wigan/spend-requests/{bought}/purchases",
        json=BODIES["/purchases"] | {"amount_pence": 500},
        headers=system.finance(),
    )
    assert purchase.status == 201, await purchase.text()
    referred = (await system.request("fam-1", 60_000, version=version))["request_id"]
    await system.settled(referred, "awaiting_approval")
    top_up = await system.allocation.post(
        "/pilots/wigan/families/fam-1/adjustments",
        json=BODIES["/adjustments"],
        headers=system.admin(),
    )
    assert top_up.status == 201
    assert system.reporting is not None
    subscription = await system.reporting.post(
        "/pilots/wigan/webhooks", json=BODIES["/webhooks"], headers=system.admin()
    )
    assert subscription.status == 201, await subscription.text()
    ids = {
        "statement_id": "0" * 64,
        "subscription_id": (await subscription.json())["subscription_id"],
        "pilot_id": "wigan",
        "family_id": "fam-1",
        "request_id": bought,
        "referred_id": referred,
        "purchase_id": (await purchase.json())["purchase_id"],
        "adjustment_id": (await top_up.json())["adjustment_id"],
    }

    async def reporting_knows() -> bool:
        assert system.reporting is not None
        answer = await system.reporting.get(
            "/pilots/wigan/families/fam-1/balance", headers=system.admin()
        )
        return answer.status == 200

    await wait_for(reporting_knows)
    return ids


async def _try(
    system: System,
    service: str,
    method: str,
    path: str,
    ids: dict[str, str],
    caller: Caller,
) -> int:
    values = dict(ids)
    if path.endswith(("/approve", "/reject")):
        values["request_id"] = ids["referred_id"]
    if path.endswith("/exit"):
        values["family_id"] = "fam-exit"
    if path.endswith("/erasure"):
        values["family_id"] = "fam-erase"
    url = path.format(**values)
    if path.endswith("/approvals"):
        url += "?status=pending"
    headers: dict[str, str] = {}
    if caller.role is not None:
        role, pilot, sub, team = _token_caller(caller)
        headers = auth(system.token(role, pilot, sub=sub, team=team))
    client = _clients(system)[service]
    if method in {"GET", "DELETE"}:
        response = await client.request(method, url, headers=headers)
    elif path.endswith("/batches"):  # a line naming no command: the batch's guard answers
        headers["Content-Type"] = NDJSON
        line = {"method": "POST", "path": "/nowhere", "idempotency_key": "m", "body": {}}
        response = await client.post(url, data=json.dumps(line), headers=headers)
    else:
        body = next(body for suffix, body in BODIES.items() if path.endswith(suffix))
        response = await client.request(method, url, json=body, headers=headers)
    return response.status


def _keep(cells: list[dict[str, Any]], tokens: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / f"authorization-matrix-{tokens}.json").write_text(json.dumps(cells, indent=1))
