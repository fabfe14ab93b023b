"""Erasure tested as a thief with the disks would test it.

A family's notes, purposes and reasons are sealed in three services; a ``pg_dumpall`` is
taken; the family is erased; the key-encryption key is rotated and the old one destroyed.
Then every wrapped key found anywhere -- every file of PostgreSQL's data directory (WAL
included) and its server log, the dump from before the erasure, Kafka's log directories and
its server log -- is tried with every key-encryption key still in existence, against every
sealed text of the family found on the topics. None opens. The same search before the
rotation, with the old key still in existence, does open them: the search finds what it is
looking for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from deploy.stack import ROOT, _pg_bin
from services.allocation.app import SERVICE as ALLOCATION
from services.spending.app import SERVICE as SPENDING
from shared.core.custody import WRAPPED_MAGIC, KeyCustodyError, new_kek, unwrap_with
from shared.core.kafka import ensure_topics
from shared.core.settings import Settings
from shared.web.auth import Principal
from shared.web.http import CommandCall
from shared.web.registry import ServiceDefinition, ledger_topics
from tests.conftest import Infrastructure
from tests.e2e.cloudevents_check import every_record_is_a_cloudevent
from tests.e2e.system import System, running_system
from tests.support import connect_service_db, read_topic, run_ledger, settings_env, wait_for

WRAPPED_LENGTH = len(WRAPPED_MAGIC) + 12 + 32 + 16
HEX_WRAPPED = re.compile(WRAPPED_MAGIC.hex().encode() + rb"[0-9a-f]{%d}" % (2 * WRAPPED_LENGTH - 8))
SEALED = re.compile(r"sealed:v1:([0-9a-f-]{36}):([A-Za-z0-9_=-]+)")


def kek_bytes(entry: str) -> bytes:
    return base64.urlsafe_b64decode(entry.partition("=")[2])


def wrapped_keys_in(data: bytes) -> Iterator[bytes]:
    """Every wrapped key in raw bytes, or written out as bytea hex (a dump)."""
    start = data.find(WRAPPED_MAGIC)
    while start != -1:
        yield data[start : start + WRAPPED_LENGTH]
        start = data.find(WRAPPED_MAGIC, start + 1)
    for written in HEX_WRAPPED.finditer(data):
        yield binascii.unhexlify(written.group())


def contents(path: Path) -> bytes:
    """A file's bytes; one PostgreSQL removes while the scan runs (a relation cache file, a
    recycled WAL segment) is skipped. The scan reads the disk as it is; its control step,
    with the old key still in existence, shows that what it reads is enough to open the
    texts, so a file skipped does not make the later "nothing opens" hollow."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (path for path in root.rglob("*") if path.is_file())


def opened_texts(
    sources: list[Path], keks: list[bytes], sealed: list[tuple[str, UUID, bytes]]
) -> set[str]:
    """What a thief opens: every wrapped key found, every KEK, every sealed text's context."""
    candidates = {key for path in sources for key in wrapped_keys_in(contents(path))}
    opened: set[str] = set()
    for subject, key_id, token in sealed:
        context = f"{subject}|{key_id}".encode()
        for wrapped in candidates:
            for kek in keks:
                try:
                    data_key = unwrap_with(kek, wrapped, context)
                except KeyCustodyError:
                    continue
                try:
                    text = AESGCM(data_key).decrypt(token[:12], token[12:], subject.encode())
                except InvalidTag:
                    continue
                opened.add(text.decode())
    return opened


async def sealed_on_topics(settings: Settings, family: str) -> list[tuple[str, UUID, bytes]]:
    found = []
    for service in ("allocation", "spending", "approval"):
        for record in await read_topic(settings, f"ledger.{service}"):
            if record.envelope.family_id != family:
                continue
            for key_id, token in SEALED.findall(str(record.value["data"])):
                found.append((f"wigan:{family}", UUID(key_id), base64.urlsafe_b64decode(token)))
    return found


def rotation_commands() -> str:
    """The rotation, as docs/security.md writes it (its shell block)."""
    guide = (ROOT / "docs" / "security.md").read_text()
    section = guide.split("**Erasure and rotation.**", 1)[1].split("**Retention", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return str(block)


async def test_an_erased_familys_text_opens_from_no_copy_after_rotation(
    infra: Infrastructure, token: Callable[..., str], tmp_path: Path
) -> None:
    """Erase, then rotate exactly as docs/security.md says, with the services running: afterwards
    no wrapped key anywhere opens the family's text with any KEK still in existence, the
    idempotency keys' fingerprints confirm no guess at it, and the other family's text, the
    amounts and `ledger audit verify` are unchanged. (Following the README's earlier steps
    left the old KEK in the local stack's files and in every running service.)"""
    old = new_kek("kek-old")
    keks = tmp_path / "key-encryption-keys"
    keks.write_text(old + "\n")
    keks.chmod(0o600)
    settings = infra.settings(key_encryption_keys=SecretStr(""), key_encryption_keys_file=keks)
    await ensure_topics(settings, ledger_topics())
    texts = {"a bed for the eldest", "school shoes", "speak to the family first"}
    async with running_system(settings, token, reporting=True) as system:
        await system.configure()
        asked = await _seal_texts(system, "fam-x", texts)
        await _seal_texts(system, "fam-keep", {"kept: a bus pass", "kept: a coat", "kept: a cot"})
        dump = tmp_path / "before-erasure.sql"
        await asyncio.to_thread(_dump_all, infra, dump)
        balances_before = await _balances(settings)
        erased = await system.allocation.post(
            "/pilots/wigan/families/fam-x/erasure",
            json={"basis": "subject_request", "erased_on": "2026-11-30"},
            headers=system.admin(),
        )
        assert erased.status == 200, await erased.text()
        await wait_for(lambda: _no_live_key(settings, "wigan:fam-x"), timeout=20)

        logs = [infra.postgres.log, infra.kafka.log]
        sealed = await sealed_on_topics(settings, "fam-x")
        seen = await every_record_is_a_cloudevent(settings, "erasure")  # the erasure's too
        assert ("ledger.allocation", "family.personal_data_erased") in seen
        assert len(sealed) >= len(texts)
        # Every file a thief with the disks has: PostgreSQL's data directory (WAL included)
        # and server log, Kafka's log directories and server log, and the dump from before.
        sources = [*files_under(infra.postgres.data, infra.kafka.home / "data"), dump, *logs]
        # The search works: while the old KEK exists, copies of the erased keys open the text.
        assert opened_texts(sources, [kek_bytes(old)], sealed) >= texts

        rotation = await _bash(rotation_commands(), settings)
        assert rotation.returncode == 0, rotation.stderr
        in_existence = [kek_bytes(line) for line in keks.read_text().split()]
        assert len(in_existence) == 1  # the new one alone: the old is in no file and no process
        sources = [*files_under(infra.postgres.data, infra.kafka.home / "data"), dump, *logs]
        assert opened_texts(sources, in_existence, sealed) == set()
        dumped = dump.read_text()
        for fingerprint_of in asked:
            guesses = {fingerprint_of(text) for text in (*texts, "a guess that is wrong")}
            assert len(guesses) == 1  # the fingerprint says nothing of what was written
            assert all(guess in dumped for guess in guesses)  # and is the one kept

        notes = await system.allocation.get(
            "/pilots/wigan/families/fam-keep/notes", headers=system.admin()
        )
        assert "kept: a bus pass" in {note["text"] for note in (await notes.json())["notes"]}
        gone = await system.allocation.get(
            "/pilots/wigan/families/fam-x/notes", headers=system.admin()
        )
        assert {note["text"] for note in (await gone.json())["notes"]} == {"[erased]"}
        for family, shown in (
            ("fam-keep", {"kept: a coat", "kept: a cot"}),
            ("fam-x", {"[erased]"}),
        ):
            purposes = await system.spending.get(
                f"/pilots/wigan/families/{family}/purposes", headers=system.admin()
            )
            assert {item["purpose"] for item in (await purposes.json())["purposes"]} == shown
    assert await _balances(settings) == balances_before
    code, output = await run_ledger(settings, "audit", "verify")
    assert code == 0, output


async def _bash(script: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    """A shell block run as an operator runs it, after ``source .local/env``."""
    env = settings_env(settings)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


Fingerprint = Callable[[str], str]


async def _seal_texts(system: System, family: str, texts: set[str]) -> list[Fingerprint]:
    """Seal each text somewhere: an allocation note, a request's purpose, a manager's reason,
    each request under an Idempotency-Key. What comes back, per request, makes the
    fingerprint the ledger keeps with its key, for the request with any other text in it."""
    version = await system.enrol(family)
    made: list[Fingerprint] = []
    for number, text in enumerate(sorted(texts)):
        key = {"Idempotency-Key": f"{family}-{number}"}
        if number % 3 == 0:
            path = f"/pilots/wigan/families/{family}/allocations"
            body: dict[str, Any] = {"amount_pence": 100_000, "note": text}
            response = await system.allocation.post(
                path, json=body, headers={**system.admin(), **key}
            )
            assert response.status == 201, await response.text()
            version = (await response.json())["stream_version"]
            made.append(_fingerprints(ALLOCATION, "POST", path, body, "note", "admin"))
            continue
        body = {
            "family_id": family,
            "amount_pence": 60_000,  # above the automatic tier: a manager decides
            "category": "practical",
            "purpose": text,
            "requested_by": "sw-1",
            "family_involved": True,
            "allocation_version": version,
        }
        path = "/pilots/wigan/spend-requests"
        answer = await system.spending.post(path, json=body, headers={**system.worker(), **key})
        assert answer.status == 202, await answer.text()
        made.append(_fingerprints(SPENDING, "POST", path, body, "purpose", "social_worker"))
        request_id = (await answer.json())["request_id"]
        await system.settled(request_id, "awaiting_approval")
        rejected = await system.approval.post(
            f"/pilots/wigan/spend-requests/{request_id}/reject",
            json={"reason": text},
            headers=system.manager(),
        )
        assert rejected.status == 200, await rejected.text()
    return made


def _fingerprints(
    service: ServiceDefinition, method: str, path: str, body: dict[str, Any], field: str, role: str
) -> Fingerprint:
    """The fingerprint the service's own code keeps for this request, with ``field`` set to
    any text: what a thief with a dump would compute to test a guess."""
    [route] = [
        r
        for r in service.routes()
        if r.command is not None
        and r.method == method
        and re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(r.path)), path)
    ]
    assert route.command is not None
    principal = Principal(sub="x", role=role, pilot="wigan", team="t-1")

    def of(text: str) -> str:
        call = CommandCall(principal, path, {}, {**body, field: text}, "k", "c", None)
        made = route.command.idempotency(call) if route.command else None
        assert made is not None
        return made.fingerprint

    return of


def _dump_all(infra: Infrastructure, path: Path) -> None:
    with path.open("wb") as out:
        subprocess.run(
            [
                _pg_bin("pg_dumpall"),
                "-h",
                "127.0.0.1",
                "-p",
                str(infra.postgres.port),
                "-U",
                infra.postgres.user,
            ],
            stdout=out,
            check=True,
        )


async def _no_live_key(settings: Settings, subject: str) -> bool:
    for service in ("allocation", "spending", "approval"):
        async with connect_service_db(settings, service) as conn:
            if await conn.fetchval(
                "SELECT count(*) FROM personal_keys WHERE subject = $1 AND wrapped IS NOT NULL",
                subject,
            ):
                return False
    return True


async def _balances(settings: Settings) -> list[tuple[Any, ...]]:
    async with connect_service_db(settings, "approval") as conn:
        rows = await conn.fetch(
            "SELECT family_id, allocated_pence, held_pence, spent_pence FROM balances "
            "ORDER BY family_id"
        )
    return [tuple(row.values()) for row in rows]
