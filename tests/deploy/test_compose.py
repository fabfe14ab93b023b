"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

``deploy/compose-check`` loads the compose file as Docker Compose does (interpolation, the
Compose Specification's JSON schema, normalisation, consistency); these tests then hold it
to what ``make up`` runs (``deploy/stack.py``) and to what ops teams need: health checks,
start order, scaling, secrets kept out of the repository.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from deploy.stack import (
    ACCESS_SCRIPT,
    ROOT,
    SETUP_COMMANDS,
    Kafka,
    Postgres,
    installed_services,
    ledger_access_script,
    password_variable,
    serve_command,
    stack_variables,
)
from shared.core.custody import parse_keks
from shared.core.settings import Settings
from shared.web.registry import KAFKA_ADMIN, migrate

COMPOSE_CHECK = Path(os.environ.get("LEDGER_COMPOSE_CHECK", ROOT / ".local/tools/compose-check"))
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SERVICES = installed_services()
SETTINGS_VARIABLES = {f"LEDGER_{name.upper()}" for name in Settings.model_fields} | {
    f"LEDGER_{name.upper()}_PORT" for name in SERVICES
}


def example_secrets() -> dict[str, str]:
    """The variables .env.example leaves for the operator to fill in, filled in."""
    names = re.findall(r"^([A-Z_]+)=$", ENV_EXAMPLE, re.MULTILINE)
    return {name: f"test-{name.lower()}" for name in names}


def load_compose(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the offline compose loader with only the given environment (no stray LEDGER_*)."""
    if not COMPOSE_CHECK.exists():
        pytest.fail(f"{COMPOSE_CHECK} is missing: `make test` builds it from deploy/compose-check")
    env = {"PATH": os.environ["PATH"], **extra_env}
    return subprocess.run(
        [str(COMPOSE_CHECK), "docker-compose.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    loaded = load_compose(example_secrets())
    assert loaded.returncode == 0, loaded.stderr
    resolved: dict[str, Any] = json.loads(loaded.stdout)
    return resolved


def test_the_compose_file_is_valid_and_needs_its_secrets(project: dict[str, Any]) -> None:
    """Valid with the secrets .env.example names; refused, naming them, without them."""
    assert set(project["services"]) == {"postgres", "kafka", "kafka-access", "topics", *SERVICES}
    bare = load_compose({})
    assert bare.returncode == 1
    for secret in ("LEDGER_JWT_SECRET", "POSTGRES_PASSWORD", "REPORTING_DB_PASSWORD"):
        assert secret in bare.stderr
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == set(example_secrets())  # every secret is documented, none committed
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_runs_what_make_up_runs(
    project: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Same commands, one image, known variables only, same databases, topics and versions."""
    services = project["services"]
    ledger = {name: services[name] for name in (*SERVICES, "topics")}
    assert len({service["image"] for service in ledger.values()}) == 1
    for name in SERVICES:
        assert services[name]["command"] == serve_command(name)
    assert tuple(services["topics"]["command"]) in SETUP_COMMANDS
    # `make up` also runs `migrate`; in compose, PostgreSQL's init script creates the
    # databases and each service migrates its own when it starts.
    monkeypatch.setenv("LEDGER_JWT_SECRET", "not-a-secret")
    monkeypatch.setenv("LEDGER_KEY_ENCRYPTION_KEYS", "not-a-key")
    kafka = Kafka(tmp_path, 9092, 9093, password="not-a-password")
    local = stack_variables(Postgres(tmp_path, 5432), kafka, "spending")
    assert set(local) <= SETTINGS_VARIABLES
    for name, service in ledger.items():
        environment = service["environment"]
        unknown = {key for key in environment if key.startswith("LEDGER_")} - SETTINGS_VARIABLES
        assert not unknown, (name, unknown)
        needed = {"LEDGER_KAFKA_BOOTSTRAP"} if name == "topics" else set(local)
        assert needed <= set(environment), name
        assert environment["LEDGER_DATABASE_PREFIX"] == Settings().database_prefix
        assert environment["LEDGER_TOPIC_PREFIX"] == Settings().topic_prefix
        assert int(environment["LEDGER_TOPIC_PARTITIONS"]) == Settings().topic_partitions
    for name in SERVICES:
        assert services[name]["environment"]["LEDGER_PG_USER"] == f"ledger_{name}"
    for name, principal in (*((n, n) for n in SERVICES), ("topics", KAFKA_ADMIN)):
        environment = services[name]["environment"]
        assert environment["LEDGER_KAFKA_USERNAME"] == principal
        assert (
            environment["LEDGER_KAFKA_PASSWORD"] == f"test-{password_variable(principal).lower()}"
        )
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version is not None
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    assert services["postgres"]["image"].startswith("postgres:15")  # as deploy/system-packages


def test_services_are_health_checked_ordered_and_scalable(project: dict[str, Any]) -> None:
    services = project["services"]
    ranges = []
    for name in SERVICES:
        service = services[name]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert "127.0.0.1:8080" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["stop_signal"] == "SIGTERM"
        assert "container_name" not in service  # a fixed name cannot be scaled
        [port] = service["ports"]
        assert port["target"] == 8080
        low, high = (int(part) for part in port["published"].split("-"))
        assert high > low  # a range: each scaled replica gets a host port of its own
        ranges.append((low, high))
    ranges.sort()
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
    for name in ("postgres", "kafka"):
        assert services[name]["healthcheck"]["test"]
        [data] = [v for v in services[name]["volumes"] if v["type"] == "volume"]
        assert data["source"] in project["volumes"]  # kept across restarts and upgrades
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    # Reporting asks spending what requests were for, at the port every service listens on.
    assert services["reporting"]["environment"]["LEDGER_SPENDING_URL"] == "http://spending:8080"


def test_the_dockerfile_is_multi_stage_non_root_and_stops_on_sigterm() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^STOPSIGNAL SIGTERM$", final, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/readyz", final, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["ledger"\]$', final, re.MULTILINE)
    assert not re.search(r"gcc|build-essential|apt-get install", final)
    for name in SERVICES:
        assert f"LEDGER_{name.upper()}_PORT=8080" in final


async def test_the_init_script_gives_each_service_its_own_role_and_database(
    settings: Settings, tmp_path: Path
) -> None:
    """Run for real against the tests' PostgreSQL: each role owns and migrates its database,
    and may not connect to another service's; no password is ever on psql's command line
    (a wrapper records every command line it is given)."""
    passwords = {f"{name.upper()}_DB_PASSWORD": f"pw-{name}" for name in SERVICES}
    script = ROOT / "deploy" / "postgres" / "init-databases.sh"
    seen = tmp_path / "command-lines"
    wrappers = _recording(tmp_path / "bin", ["psql"], seen)
    admin = await asyncpg.connect(
        host=settings.pg_host, port=settings.pg_port, user=settings.pg_user, database="postgres"
    )
    try:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(script),
            env={
                "PATH": f"{wrappers}:{os.environ['PATH']}",
                "POSTGRES_USER": settings.pg_user,
                "PGHOST": settings.pg_host,
                "PGPORT": str(settings.pg_port),
                **passwords,
            },
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await process.communicate()
        assert process.returncode == 0, errors.decode()
        lines = seen.read_text()
        assert lines.count("psql") == len(SERVICES)
        assert not any(password in lines for password in passwords.values())
        roles = await admin.fetch(
            "SELECT rolname FROM pg_authid WHERE rolname LIKE 'ledger\\_%' "
            "AND rolpassword IS NOT NULL"
        )
        assert {row["rolname"] for row in roles} >= {f"ledger_{name}" for name in SERVICES}
        for name in SERVICES:
            owner = await admin.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
                f"ledger_{name}",
            )
            assert owner == f"ledger_{name}"
        own = settings.model_copy(
            update={"pg_user": "ledger_reporting", "database_prefix": "ledger_"}
        )
        await migrate(own, ["reporting"])  # as its owner, the service can build its schema
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(
                host=settings.pg_host,
                port=settings.pg_port,
                user="ledger_spending",
                database="ledger_reporting",
            )
    finally:
        for name in SERVICES:
            await admin.execute(f'DROP DATABASE IF EXISTS "ledger_{name}"')
            await admin.execute(f'DROP ROLE IF EXISTS "ledger_{name}"')
        await admin.close()


def test_compose_gives_kafka_the_users_and_acls_the_registry_makes(project: dict[str, Any]) -> None:
    """compose's access job runs the script made from ``kafka_grants`` for the installed
    services (tests/e2e/test_kafka_access.py runs that script against a real broker), with
    every password it needs, after the broker is up and before the topics are made."""
    assert ACCESS_SCRIPT.read_text() == ledger_access_script(), (
        "deploy/kafka/access.sh is stale: run `python deploy/stack.py access-script`"
    )
    access = project["services"]["kafka-access"]
    assert access["image"] == project["services"]["kafka"]["image"]
    assert access["entrypoint"] == ["/bin/sh", "/ledger/access.sh"]
    [script] = [v for v in access["volumes"] if v["target"] == "/ledger/access.sh"]
    assert Path(script["source"]) == ACCESS_SCRIPT
    needed = set(re.findall(r"\$\{([A-Z_]+)", ACCESS_SCRIPT.read_text())) - {"KAFKA_BIN"}
    assert needed <= set(access["environment"]) | {"LEDGER_TOPIC_PREFIX"}
    assert access["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert access["depends_on"]["kafka"]["condition"] == "service_healthy"
    topics = project["services"]["topics"]["depends_on"]["kafka-access"]
    assert topics["condition"] == "service_completed_successfully"


def _properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def test_compose_runs_kafka_as_the_local_stack_does(tmp_path: Path) -> None:
    """The compose broker's settings (deploy/kafka/broker.sh) equal the local broker's, but
    for addresses and the sizes the local one trims for a laptop; nothing in it is PLAINTEXT."""
    local = Kafka(tmp_path, 9092, 9093, password="pw")
    stack = _properties(local._write_config().read_text())
    script = (ROOT / "deploy" / "kafka" / "broker.sh").read_text()
    [body] = re.findall(r'cat >"\$config" <<END\n(.*?)\nEND\n', script, re.DOTALL)
    user = 'username="kafka" password="pw"'
    compose = _properties(body.replace("$user", user).replace("$KAFKA_SUPERUSER_PASSWORD", "pw"))
    addresses = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    local_only = {"num.partitions", "offsets.topic.num.partitions"}
    local_only |= {"transaction.state.log.num.partitions"}
    assert {k: stack[k] for k in set(stack) - addresses - local_only} == {
        k: compose[k] for k in set(compose) - addresses - {"log.retention.ms"}
    }
    assert "PLAINTEXT://" not in script
    assert compose["log.retention.ms"] == "-1"  # the topics are the ledger's history


def _recording(folder: Path, tools: list[str], log: Path) -> Path:
    """A folder of wrappers, first on PATH, that append each command line they are given to
    ``log`` and run the real tool: what any user of the machine could read in ``ps``."""
    folder.mkdir(parents=True)
    for tool in tools:
        real = shutil.which(tool)
        assert real is not None, tool
        wrapper = folder / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >>{log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    return folder


def test_the_key_recipe_in_env_example_works_before_anything_is_set() -> None:
    """The recipe for LEDGER_KEY_ENCRYPTION_KEYS must run on a first run, when no compose
    command can (compose refuses every command while the variable is empty), and make a key
    the services take."""
    comment = re.search(r"((?:^#.*\n)+)LEDGER_KEY_ENCRYPTION_KEYS=$", ENV_EXAMPLE, re.MULTILINE)
    recipe = re.search(r"^#   (.+)$", comment[1] if comment else "", re.MULTILINE)
    assert recipe, "no recipe in the comment above LEDGER_KEY_ENCRYPTION_KEYS in .env.example"
    made = subprocess.run(
        ["sh", "-c", recipe[1]],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    keks = parse_keks(made.stdout.strip())
    assert [kek_id for kek_id, _ in keks] == ["kek-2026-12"]


def test_the_readmes_compose_tasks_do_not_run_the_one_shot_jobs_again() -> None:
    """`docker compose run` starts a service's dependencies first, so without --no-deps each
    task ran the Kafka jobs again (tens of seconds of JVMs) and then `up -d` re-created every
    service."""
    readme = (ROOT / "README.md").read_text()
    runs = re.findall(r"docker compose run [^`\n]*", readme)
    assert runs
    assert [run for run in runs if "--no-deps" not in run] == []
