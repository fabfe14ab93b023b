"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

``deploy/compose-check`` loads the compose file as Docker Compose does (interpolation, the
Compose Specification's JSON schema, normalisation, consistency); these tests then hold it
to what ``make up`` runs (``deploy/stack.py``) and to what ops teams need: health checks,
start order, scaling, secrets kept out of the repository.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import json
import os
import re
import shutil
import stat
import subprocess
import types
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from deploy.stack import (
    ACCESS_SCRIPT,
    KAFKA_SUPERUSER,
    ROOT,
    SETUP_COMMANDS,
    Kafka,
    KafkaCluster,
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
COMPOSE_SECRETS = ROOT / "deploy" / "compose-secrets"
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SERVICES = installed_services()
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")
BOOTSTRAP = ",".join(f"{node}:9092" for node in KAFKA_NODES)

# A secret setting may also be given as a file (LEDGER_<NAME>_FILE), as compose gives them.
SECRET_SETTINGS = {
    f"LEDGER_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr
}
SETTINGS_VARIABLES = (
    {f"LEDGER_{name.upper()}" for name in Settings.model_fields}
    | {f"LEDGER_{name.upper()}_PORT" for name in SERVICES}
    | {f"{name}_FILE" for name in SECRET_SETTINGS}
)


def load_compose(
    extra_env: dict[str, str], files: tuple[str, ...] = ("docker-compose.yml",)
) -> subprocess.CompletedProcess[str]:
    """Run the offline compose loader with only the given environment (no stray LEDGER_*),
    every profile enabled (the tools service)."""
    if not COMPOSE_CHECK.exists():
        pytest.fail(f"{COMPOSE_CHECK} is missing: `make test` builds it from deploy/compose-check")
    env = {"PATH": os.environ["PATH"], "COMPOSE_PROFILES": "*", **extra_env}
    return subprocess.run(
        [str(COMPOSE_CHECK), *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    loaded = load_compose({})
    assert loaded.returncode == 0, loaded.stderr
    resolved: dict[str, Any] = json.loads(loaded.stdout)
    return resolved


def compose_secrets(folder: Path) -> str:
    """Run deploy/compose-secrets into ``folder`` with nothing but PATH set; its output."""
    made = subprocess.run(
        [str(COMPOSE_SECRETS)],
        env={"PATH": os.environ["PATH"], "LEDGER_SECRETS_DIR": str(folder)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What deploy/compose-secrets makes on a first run."""
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    compose_secrets(folder)
    return folder


def test_every_secret_is_a_file_that_compose_secrets_makes(
    project: dict[str, Any], made_secrets: Path
) -> None:
    """No secret is an environment variable of any container, or a value in .env.example;
    each is a file of the secrets folder (git-ignored), given only to the containers that
    name it."""
    assert set(project["services"]) == {
        "proxy",
        "postgres",
        *KAFKA_NODES,
        "kafka-access",
        "topics",
        "tools",
        "readers",
        *SERVICES,
    }
    files = {Path(secret["file"]).name for secret in project["secrets"].values()}
    assert files == {path.name for path in made_secrets.iterdir()} - {"ca_key"}
    given = {
        secret["source"]
        for service in project["services"].values()
        for secret in service.get("secrets", [])
    }
    assert given == set(project["secrets"])  # none declared for nothing
    for name, service in project["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in SECRET_SETTINGS or variable.endswith("_PASSWORD"):
                pytest.fail(f"{name} is given the secret {variable} in its environment")
            if variable.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert Path(value).name in {s["source"] for s in service["secrets"]}, variable
    assert not re.search(r"^[A-Z_]*(PASSWORD|SECRET|KEYS)[A-Z_]*=", ENV_EXAMPLE, re.MULTILINE)
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored
    assert "secrets/" in ignored


def test_the_laptop_override_applies_over_the_compose_file() -> None:
    loaded = load_compose({}, ("docker-compose.yml", "compose.override.example.yml"))
    assert loaded.returncode == 0, loaded.stderr
    services = json.loads(loaded.stdout)["services"]
    assert services["postgres"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert services["spending"]["environment"]["LEDGER_LOG_LEVEL"] == "DEBUG"
    assert services["spending"]["environment"]["LEDGER_PG_USER"] == "ledger_spending"
    for number, node in enumerate(KAFKA_NODES, start=1):  # smaller, and still itself
        assert services[node]["environment"]["KAFKA_HEAP_OPTS"] == "-Xms128m -Xmx384m"
        assert services[node]["environment"]["KAFKA_NODE_ID"] == str(number)


def test_compose_runs_what_make_up_runs(
    project: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Same commands, one image, known variables only, same databases, topics and versions."""
    services = project["services"]
    ledger = {name: services[name] for name in (*SERVICES, "topics", "tools")}
    assert len({service["image"] for service in ledger.values()}) == 1
    # One service builds the image: built per service, the tag would change hands and the
    # next `up` re-create every service (seen in the first real run).
    assert [name for name, service in services.items() if "build" in service] == ["topics"]
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
        given = {key.removesuffix("_FILE") for key in environment} | set(environment)
        assert needed <= given, (name, needed - given)
        # TLS to PostgreSQL and Kafka, each checked against the stack's CA.
        assert environment["LEDGER_KAFKA_CA_FILE"] == "/run/secrets/ca_cert"
        assert environment["LEDGER_PG_CA_FILE"] == "/run/secrets/ca_cert"
        assert environment["LEDGER_DATABASE_PREFIX"] == Settings().database_prefix
        assert environment["LEDGER_TOPIC_PREFIX"] == Settings().topic_prefix
        assert int(environment["LEDGER_TOPIC_PARTITIONS"]) == Settings().topic_partitions
    for name in SERVICES:
        environment = services[name]["environment"]
        assert environment["LEDGER_PG_USER"] == f"ledger_{name}"
        assert environment["LEDGER_PG_PASSWORD_FILE"] == f"/run/secrets/{name}_db_password"
    principals = (*((n, n) for n in SERVICES), ("topics", KAFKA_ADMIN), ("tools", KAFKA_ADMIN))
    for name, principal in principals:
        environment = services[name]["environment"]
        assert environment["LEDGER_KAFKA_USERNAME"] == principal
        secret = password_variable(principal).lower()
        assert environment["LEDGER_KAFKA_PASSWORD_FILE"] == f"/run/secrets/{secret}"
    # `ledger readers` alone acts as the broker's superuser: users and ACLs are its alone.
    readers = services["readers"]
    assert readers["image"] == services["topics"]["image"]
    assert readers["entrypoint"] == ["ledger", "readers"]
    assert readers["environment"]["LEDGER_KAFKA_USERNAME"] == KAFKA_SUPERUSER
    assert {s["source"] for s in readers["secrets"]} == {"kafka_superuser_password", "ca_cert"}
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version is not None
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    assert services["postgres"]["image"].startswith("postgres:15")  # as deploy/system-packages


def test_services_are_health_checked_ordered_and_behind_one_fixed_port_each(
    project: dict[str, Any],
) -> None:
    """Only the proxy is published, on loopback unless asked, one fixed port per service
    (the port `make up` gives it): a range handed each re-created container the next port."""
    services = project["services"]
    for name in SERVICES:
        service = services[name]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert "127.0.0.1:8080" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        for node in KAFKA_NODES:
            assert service["depends_on"][node]["condition"] == "service_healthy"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["environment"]["LEDGER_KAFKA_BOOTSTRAP"] == BOOTSTRAP
        assert service["environment"]["LEDGER_TOPIC_REPLICAS"] == str(len(KAFKA_NODES))
        assert service["stop_signal"] == "SIGTERM"
        assert service["restart"] == "unless-stopped"
        assert "container_name" not in service  # a fixed name cannot be scaled
        assert int(service["deploy"]["resources"]["limits"]["memory"]) > 0
        assert proxy_route(name) == SERVICES[name]
    published = [
        (port["host_ip"], port["published"], port["target"])
        for name, service in services.items()
        for port in service.get("ports", [])
    ]
    assert sorted(published) == sorted(("127.0.0.1", str(port), port) for port in SERVICES.values())
    assert {
        name: dependency["condition"]
        for name, dependency in services["proxy"]["depends_on"].items()
    } == dict.fromkeys(SERVICES, "service_healthy")
    for name in ("postgres", *KAFKA_NODES):
        assert services[name]["healthcheck"]["test"]
        assert services[name]["restart"] == "unless-stopped"
        named = [v["source"] for v in services[name]["volumes"] if v["type"] == "volume"]
        assert named  # its data, kept across restarts and upgrades
        assert set(named) <= set(project["volumes"])
    # PostgreSQL's write-ahead log, archived continuously, on a volume of its own.
    postgres_volumes = {v["source"]: v["target"] for v in services["postgres"]["volumes"]}
    assert postgres_volumes["postgres-archive"] == "/var/lib/postgresql/archive"
    for node in KAFKA_NODES:
        assert services["topics"]["depends_on"][node]["condition"] == "service_healthy"
    # Reporting asks spending what requests were for, at the port every service listens on.
    assert services["reporting"]["environment"]["LEDGER_SPENDING_URL"] == "http://spending:8080"


def proxy_route(service: str) -> int:
    """The port deploy/proxy/nginx.conf serves ``service`` on."""
    config = (ROOT / "deploy" / "proxy" / "nginx.conf").read_text()
    [port] = re.findall(rf"^\s+(\d+) {service};$", config, re.MULTILINE)
    assert re.search(rf"^\s+listen {port} ssl;$", config, re.MULTILINE)
    return int(port)


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
    passwords = {f"{name}_db_password": f"pw-{name}" for name in SERVICES}
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for file, password in passwords.items():
        (secrets / file).write_text(password)
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
                "POSTGRES_SECRETS": str(secrets),
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
    variables = set(re.findall(r"\$\{([A-Z_]+)", ACCESS_SCRIPT.read_text()))
    assert variables - {"KAFKA_BIN"} <= set(access["environment"]) | {"LEDGER_TOPIC_PREFIX"}
    # Each password from its file: the superuser's, and one per user the script makes.
    assert access["environment"]["KAFKA_SECRETS"] == "/run/secrets"
    users = re.findall(r"^user \S+ ([A-Z_]+)$", ACCESS_SCRIPT.read_text(), re.MULTILINE)
    assert len(users) == len(SERVICES) + 1
    given = {secret["source"] for secret in access["secrets"]}
    assert {"kafka_superuser_password", *(user.lower() for user in users)} <= given
    assert access["environment"]["KAFKA_BOOTSTRAP"] == BOOTSTRAP
    assert access["environment"]["KAFKA_CA_FILE"] == "/run/secrets/ca_cert"
    for node in KAFKA_NODES:
        assert access["depends_on"][node]["condition"] == "service_healthy"
    topics = project["services"]["topics"]["depends_on"]["kafka-access"]
    assert topics["condition"] == "service_completed_successfully"


def _properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def test_compose_runs_kafka_as_the_local_stack_does(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """Each compose node's settings (deploy/kafka/broker.sh, with its variables as the
    compose file sets them) equal a node's of the local cluster of three (LEDGER_KAFKA_BROKERS=3),
    but for addresses, the sizes the local one trims for a laptop and TLS, which every
    listener of the compose nodes has; nothing in it is PLAINTEXT."""
    cluster = KafkaCluster.of(tmp_path, [(9092, 9093), (9094, 9095), (9096, 9097)], "pw")
    script = (ROOT / "deploy" / "kafka" / "broker.sh").read_text()
    [body] = re.findall(r'cat >"\$config" <<END\n(.*?)\nEND\n', script, re.DOTALL)
    user = 'username="kafka" password="pw"'
    services = project["services"]
    nodes = [services[name] for name in ("kafka", "kafka-2", "kafka-3")]
    assert [node["environment"]["KAFKA_NODE_ID"] for node in nodes] == ["1", "2", "3"]
    voters = "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    for number, node in enumerate(nodes, start=1):
        environment = node["environment"]
        assert environment["KAFKA_VOTERS"] == voters
        assert environment["KAFKA_REPLICAS"] == "3"
        assert environment["CLUSTER_ID"] == nodes[0]["environment"]["CLUSTER_ID"]
        [data] = [v for v in node["volumes"] if v["target"] == "/var/lib/kafka/data"]
        assert data["source"] == f"{environment['KAFKA_HOST']}-data"  # each its own
        variables = {
            "$user": user,
            "$KAFKA_SUPERUSER_PASSWORD": "pw",
            "$node": environment["KAFKA_NODE_ID"],
            "$voters": environment["KAFKA_VOTERS"],
            "$host": environment["KAFKA_HOST"],
            "$replicas": environment["KAFKA_REPLICAS"],
            "$in_sync": "2",  # what the script works out for three copies
        }
        text = body
        for variable, value in variables.items():
            text = text.replace(variable, value)
        _compare_with_the_local_node(_properties(text), cluster.nodes[number - 1], script)


def _compare_with_the_local_node(compose: dict[str, str], local: Kafka, script: str) -> None:
    stack = _properties(local._write_config().read_text())
    assert compose["node.id"] == stack["node.id"]

    protocols = "listener.security.protocol.map"
    assert compose[protocols] == "CLIENTS:SASL_SSL,CONTROLLER:SASL_SSL"
    assert stack[protocols] == "CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    tls = {key for key in compose if key.startswith("ssl.")}
    assert tls >= {"ssl.keystore.location", "ssl.truststore.location"}
    assert compose["ssl.endpoint.identification.algorithm"] == "https"
    compose = {key: value for key, value in compose.items() if key not in tls | {protocols}}
    stack.pop(protocols)
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


def test_compose_secrets_makes_a_working_key_and_certificates_on_a_first_run(
    made_secrets: Path,
) -> None:
    """The first run's recipe: it needs nothing set (the old .env.example recipe ran `ledger
    ledger keys new-kek` in a container that compose would not start with the key unset),
    makes a key the services take and certificates that verify for the names clients use,
    and a second run changes nothing."""
    [(kek_id, _)] = parse_keks((made_secrets / "key_encryption_keys").read_text().strip())
    assert re.fullmatch(r"kek-\d{4}-\d{2}", kek_id)
    assert stat.S_IMODE(made_secrets.stat().st_mode) == 0o700
    assert stat.S_IMODE((made_secrets / "ca_key").stat().st_mode) == 0o600
    for stem, name in (
        ("postgres_tls", "postgres"),
        ("kafka_tls", "kafka"),
        ("edge_tls", "localhost"),
    ):
        checked = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(made_secrets / "ca_cert"),
                "-verify_hostname",
                name,
                str(made_secrets / f"{stem}_cert"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    before = {path.name: path.read_text() for path in made_secrets.iterdir()}
    assert "every secret is there" in compose_secrets(made_secrets)
    assert {path.name: path.read_text() for path in made_secrets.iterdir()} == before


def test_the_readmes_compose_tasks_do_not_run_the_one_shot_jobs_again() -> None:
    """`docker compose run` starts a service's dependencies first, so without --no-deps each
    task ran the Kafka jobs again (tens of seconds of JVMs) and then `up -d` re-created every
    service."""
    guides = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    runs = [
        run
        for guide in guides
        for run in re.findall(r"docker compose run [^`\n]*", guide.read_text())
    ]
    assert runs
    assert [run for run in runs if "--no-deps" not in run] == []


def test_an_internal_certificate_is_signed_again_when_a_kafka_node_is_added(
    tmp_path: Path,
) -> None:
    """A secrets folder made for one Kafka node: its certificate named only "kafka", which
    kafka-2 and kafka-3 cannot present. Run again, compose-secrets signs one for all three
    and keeps everything else (the edge's certificate may be the council's own)."""
    loader = importlib.machinery.SourceFileLoader("compose_secrets", str(COMPOSE_SECRETS))
    script = types.ModuleType(loader.name)
    loader.exec_module(script)
    folder = tmp_path / "secrets"
    compose_secrets(folder)
    for stem in ("kafka_tls_cert", "kafka_tls_key"):
        (folder / stem).unlink()
    script.sign(folder, "kafka_tls", ["kafka"])  # as the one-node version made it
    assert script.names_of(folder / "kafka_tls_cert") == {"DNS:kafka"}
    kept = {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith("kafka_tls")}
    assert compose_secrets(folder).strip() == f"{folder}: made kafka_tls_cert"
    assert script.names_of(folder / "kafka_tls_cert") == {"DNS:kafka", "DNS:kafka-2", "DNS:kafka-3"}
    assert kept == {p.name: p.read_text() for p in folder.iterdir() if p.name in kept}
