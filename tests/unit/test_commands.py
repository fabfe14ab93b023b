"""Idempotency fingerprints and the services' ports: the command path's pure parts."""

from __future__ import annotations

import os

import pytest

from shared.core.commands import fingerprint
from shared.core.settings import Settings


def test_a_fingerprint_ignores_key_order_and_spacing_but_not_content() -> None:
    """The same request, however its JSON is laid out, has one fingerprint; another path,
    method or body has another."""
    path = "/pilots/p/families/f/allocations"
    same = fingerprint("POST", path, {"amount_pence": 5, "note": "x"})
    assert fingerprint("POST", path, {"note": "x", "amount_pence": 5}) == same
    assert fingerprint("POST", path, {"amount_pence": 6, "note": "x"}) != same
    assert fingerprint("PUT", path, {"amount_pence": 5, "note": "x"}) != same
    assert fingerprint("POST", path + "/", {"amount_pence": 5, "note": "x"}) != same


def test_each_service_port_comes_from_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEDGER_<SERVICE>_PORT sets a service's port, whatever the service; other settings'
    variables ending in _PORT stay theirs; a service without one keeps its default."""
    for variable in [name for name in os.environ if name.startswith("LEDGER_")]:
        monkeypatch.delenv(variable)  # CI runs with the stack's ports in the environment
    monkeypatch.setenv("LEDGER_SPENDING_PORT", "9182")
    monkeypatch.setenv("LEDGER_FIFTH_PORT", "9185")
    monkeypatch.setenv("LEDGER_PG_PORT", "6543")
    settings = Settings()
    assert settings.port_of("spending", 8082) == 9182
    assert settings.port_of("fifth", 8090) == 9185
    assert settings.port_of("allocation", 8081) == 8081
    assert settings.pg_port == 6543
    assert "pg" not in settings.ports
    assert settings.with_port("allocation", 1).port_of("allocation", 8081) == 1


def test_an_empty_issuer_or_audience_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes an unset LEDGER_JWT_ISSUER as empty: that must not demand iss == ""."""
    monkeypatch.setenv("LEDGER_JWT_ISSUER", "")
    monkeypatch.setenv("LEDGER_JWT_AUDIENCE", "ledger")
    settings = Settings()
    assert (settings.jwt_issuer, settings.jwt_audience) == (None, "ledger")
