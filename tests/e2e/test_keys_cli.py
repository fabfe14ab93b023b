"""``ledger keys``, run as an operator runs it: status, rotate, status again."""

from __future__ import annotations

from pydantic import SecretStr

from shared.core.custody import LocalKeyCustody, new_kek
from shared.core.kafka import ensure_topics
from shared.core.personal import Sealer
from shared.web.registry import ledger_topics, migrate, services
from tests.conftest import Infrastructure
from tests.support import connect_service_db, run_ledger


async def test_rotation_as_an_operator_runs_it(infra: Infrastructure) -> None:
    """A new key first: status says the old one still wraps live keys (exit 3); rotate
    re-wraps them; status says the old one is still held until it is gone from the secret
    too, then exits 0."""
    old, new = new_kek("kek-old"), new_kek("kek-new")
    settings = infra.settings(key_encryption_keys=SecretStr(old))
    await ensure_topics(settings, ledger_topics())
    await migrate(settings, [definition.name for definition in services()])
    async with connect_service_db(settings, "spending") as conn:
        sealer = Sealer(LocalKeyCustody.parse(old))
        for family in ("f-1", "f-2"):
            await sealer.seal(conn, f"p:{family}", "a cot")
        await sealer.erase(conn, "p:f-2")
    both = settings.model_copy(update={"key_encryption_keys": SecretStr(f"{new},{old}")})
    code, output = await run_ledger(both, "keys", "status")
    assert code == 3
    assert "spending: (erased): 1, kek-old: 1" in output
    code, output = await run_ledger(both, "keys", "rotate")
    assert code == 0
    assert "spending: 1 keys re-wrapped under kek-new" in output
    code, output = await run_ledger(both, "keys", "status")
    assert code == 3  # the old key is still in this command's own secret
    assert "spending: (erased): 1, kek-new: 1; 0 running" in output
    only_new = settings.model_copy(update={"key_encryption_keys": SecretStr(new)})
    code, output = await run_ledger(only_new, "keys", "status")
    assert code == 0
