"""docs/operations.md's compose instructions, run for real (``make compose-test``).

Each ``<!-- compose-test: NAME -->`` block of docs/operations.md is run as an
operator would run it, in the repository, against the project's own Docker engine
(``deploy/engine.py``), one bash session carrying the variables from block to block; what
an operator would then expect is checked in between. The stack starts from nothing
(``down --volumes``) and is taken down at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.engine import ENGINE, Engine
from deploy.stack import LOCAL, ROOT, revision

GUIDE = (ROOT / "docs" / "operations.md").read_text()
SECRETS = ROOT / "secrets"
PROJECT = "devolved-budgets-ledger"
PORTS = {"allocation": 8081, "spending": 8082, "approval": 8083, "reporting": 8084}
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")
LOG = LOCAL / "artefacts" / "compose-test.log"


def block(name: str) -> str:
    """The guide's shell block after ``<!-- compose-test: name -->``."""
    found = re.search(rf"<!-- compose-test: {name} -->\n```sh\n(.*?)```", GUIDE, re.DOTALL)
    assert found, f"no compose-test block {name!r} in docs/operations.md"
    return found[1]


class Operator:
    """A shell in the repository, pointed at the project's engine, that keeps the variables
    one block of the guide sets for the next (as one terminal would)."""

    def __init__(self, environment: dict[str, str], state: Path) -> None:
        self.environment = environment
        self.state = state
        state.write_text("")

    def run(self, script: str, timeout: float = 900) -> str:
        started = time.monotonic()
        wrapped = (
            f"set -euo pipefail\nset -a\nsource {self.state}\n{script}\n"
            f"export -p | grep -E '^declare -x [A-Z]+=' > {self.state}\n"
        )
        result = subprocess.run(
            ["bash", "-c", wrapped],
            cwd=ROOT,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with LOG.open("a") as log:
            log.write(f"$ {script}\n{result.stdout}{result.stderr}")
            log.write(f"# exit {result.returncode} after {time.monotonic() - started:.1f}s\n\n")
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def guide(self, name: str, timeout: float = 900) -> str:
        return self.run(block(name), timeout)

    def variable(self, name: str) -> str:
        found = re.search(rf'^declare -x {name}="(.*)"$', self.state.read_text(), re.MULTILINE)
        assert found, name
        return found[1]

    def docker(self, *arguments: str) -> str:
        result = subprocess.run(
            ["docker", *arguments],
            cwd=ROOT,
            env=self.environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        return result.stdout

    def containers(self) -> list[dict[str, Any]]:
        """Every container of the project, as ``docker inspect`` describes it."""
        ids = self.docker(
            "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
        )
        if not ids.split():
            return []
        inspected: list[dict[str, Any]] = json.loads(self.docker("inspect", *ids.split()))
        return inspected

    def of(self, service: str) -> list[dict[str, Any]]:
        return [
            c
            for c in self.containers()
            if c["Config"]["Labels"]["com.docker.compose.service"] == service
        ]


@pytest.fixture(scope="module")
def operator() -> Iterator[Operator]:
    engine = Engine()
    assert engine.running(), "the engine is not running: run `make compose-test`"
    images = dict(line.split("=", 1) for line in (ENGINE / "images.env").read_text().split())
    environment = {
        **os.environ,
        **engine.environment(),
        **images,
        # deploy/build/wheels holds every wheel (deploy/engine.py): the build needs no network.
        "LEDGER_BUILD_NETWORK": "none",
    }
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    shell = Operator(environment, ENGINE / "operator-state")
    shell.run("docker compose --profile tools down --volumes --remove-orphans")
    yield shell
    if os.environ.get("LEDGER_COMPOSE_KEEP") == "yes":  # to look into a failure
        return
    shell.run("docker compose --profile tools down --volumes --remove-orphans")
    shell.run("docker image prune --force")  # the builds this run replaced
    shell.run("rm -rf backups dashboard.html")


def https(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    """A GET over HTTPS, checking the proxy's certificate against the stack's CA."""
    context = ssl.create_default_context(cafile=SECRETS / "ca_cert")
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def balance(operator: Operator) -> dict[str, Any]:
    """fam-17's balance now (without the moment it was asked, which always differs)."""
    status, body = https(
        PORTS["reporting"], "/pilots/wigan/families/fam-17/balance", operator.variable("WORKER")
    )
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    del found["as_of"]
    return found


def published(operator: Operator) -> dict[str, list[tuple[str, str]]]:
    """Each container's published ports: its name -> (host address, host port) pairs."""
    ports: dict[str, list[tuple[str, str]]] = {}
    for container in operator.containers():
        bindings = container["NetworkSettings"]["Ports"] or {}
        for target, hosts in bindings.items():
            for host in hosts or []:
                ports.setdefault(container["Name"], []).append(
                    (host["HostIp"], f"{host['HostPort']}->{target}")
                )
    return ports


def expected_ports() -> dict[str, list[tuple[str, str]]]:
    proxy = [("127.0.0.1", f"{port}->{port}/tcp") for port in PORTS.values()]
    return {f"/{PROJECT}-proxy-1": sorted(proxy)}


def test_a_first_run_starts_everything_and_publishes_only_https_on_loopback(
    operator: Operator,
) -> None:
    operator.guide("first-run")
    configured = subprocess.run(
        ["docker", "compose", "--profile", "tools", "config", "--quiet"],
        cwd=ROOT,
        env=operator.environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (configured.returncode, configured.stdout, configured.stderr) == (0, "", "")
    states = {
        c["Config"]["Labels"]["com.docker.compose.service"]: c["State"]
        for c in operator.containers()
    }
    for job in ("kafka-access", "topics"):
        assert states.pop(job)["ExitCode"] == 0
    assert set(states) == {"proxy", "postgres", *KAFKA_NODES, *PORTS}
    assert all(state["Health"]["Status"] == "healthy" for state in states.values())
    # Only the proxy, only on loopback, each service on its own fixed port.
    assert {name: sorted(ports) for name, ports in published(operator).items()} == expected_ports()
    # No secret in any container's environment: they are files, given where needed.
    secrets = [
        path.read_text().strip() for path in SECRETS.iterdir() if not path.name.endswith("_cert")
    ]
    for container in operator.containers():
        environment = "\n".join(container["Config"]["Env"])
        leaked = [secret[:6] for secret in secrets if secret in environment]
        assert not leaked, (container["Name"], leaked)
    # Named volumes only: the Kafka image's own volumes leave nothing anonymous behind.
    volumes = set(operator.docker("volume", "ls", "--format", "{{.Name}}").split())
    assert volumes == {
        f"{PROJECT}_postgres-data",
        f"{PROJECT}_postgres-archive",
        *(f"{PROJECT}_{n}-data" for n in KAFKA_NODES),
    }
    # Built on the Python the image's base has (Debian bookworm's 3.11.2 when made here).
    version = operator.docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        f"{PROJECT}:latest",
        "-c",
        "import sys; print(sys.version.split()[0])",
    ).strip()
    if operator.environment["PYTHON_IMAGE"].startswith("ledger-local/"):
        assert version == "3.11.2"


def test_every_port_answers_https_alone_and_postgres_refuses_plain_connections(
    operator: Operator,
) -> None:
    for port in PORTS.values():
        status, _ = https(port, "/readyz")
        assert status == 200
        # Plain HTTP: the connection is closed, nothing answered.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert plain.recv(1024) == b""
        # A client that does not trust the stack's CA fails the handshake.
        connection = http.client.HTTPSConnection(
            "localhost", port, context=ssl.create_default_context(), timeout=10
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            connection.request("GET", "/readyz")
        connection.close()
    refused = subprocess.run(
        [
            "docker",
            "compose",
            "exec",
            "-T",
            "-u",
            "postgres",
            "postgres",
            "psql",
            "host=127.0.0.1 dbname=postgres user=postgres sslmode=disable",
            "-c",
            "SELECT 1",
        ],
        cwd=ROOT,
        env=operator.environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "no encryption" in refused.stderr


def test_postgres_archives_each_write_ahead_log_segment(operator: Operator) -> None:
    """Continuous archiving: a segment PostgreSQL has finished is in the archive volume."""

    def postgres(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "exec", "-T", "-u", "postgres", "postgres", *command],
            cwd=ROOT,
            env=operator.environment,
            capture_output=True,
            text=True,
            check=False,
        )

    # A commit first: with no WAL written since the last switch, a switch finishes nothing.
    switched = postgres(
        "psql", "-Atc", "SELECT txid_current()", "-c", "SELECT pg_walfile_name(pg_switch_wal())"
    )
    assert switched.returncode == 0, switched.stderr
    segment = switched.stdout.split()[-1]
    deadline = time.monotonic() + 60
    while postgres("test", "-f", f"/var/lib/postgresql/archive/{segment}").returncode != 0:
        assert time.monotonic() < deadline, f"{segment} was never archived"
        time.sleep(1)


def test_the_first_request_and_a_spend_through_approval_over_https(operator: Operator) -> None:
    operator.guide("first-request")
    operator.guide("spend")
    assert balance(operator).items() >= {"allocated_pence": 400000, "spent_pence": 58500}.items()
    dashboard = (ROOT / "dashboard.html").read_text()
    assert "<html" in dashboard
    assert "Wigan" in dashboard


def test_a_kafka_node_lost_takes_nothing_with_it(operator: Operator) -> None:
    before = balance(operator)
    services = {c["Id"] for name in PORTS for c in operator.of(name)}
    operator.guide("broker-loss")  # the spend request is taken while kafka-2 is away
    [node] = operator.of("kafka-2")
    assert node["State"]["Health"]["Status"] == "healthy"

    def held() -> bool:
        return bool(balance(operator)["committed_pence"] == before["committed_pence"] + 1500)

    deadline = time.monotonic() + 60
    while not held():  # decided by approval, projected by reporting, through two topics
        assert time.monotonic() < deadline, balance(operator)
        time.sleep(0.5)
    assert {c["Id"] for name in PORTS for c in operator.of(name)} == services
    # Every partition has its three copies again, all in sync once kafka-2 has caught up.
    deadline = time.monotonic() + 60
    while (copies := _copies(operator)) != {("1", "2", "3")}:
        assert time.monotonic() < deadline, copies
        time.sleep(1)


def _copies(operator: Operator) -> set[tuple[str, ...]]:
    """Of each partition of spending's topic: its replicas, if every one is in sync."""
    described = operator.run(
        "docker compose exec -T kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server "
        "kafka:9092 --command-config /tmp/superuser.properties --describe --topic ledger.spending"
    )
    found: set[tuple[str, ...]] = set()
    for line in described.splitlines():
        replicas = re.search(r"Replicas: ([\d,]+)", line)
        in_sync = re.search(r"Isr: ([\d,]+)", line)
        if replicas and in_sync:
            copies = tuple(sorted(replicas[1].split(",")))
            found.add(copies if copies == tuple(sorted(in_sync[1].split(","))) else ())
    return found


def test_tasks_run_without_running_the_one_shot_jobs_or_recreating_services(
    operator: Operator,
) -> None:
    [access] = operator.of("kafka-access")
    services = {c["Id"] for name in PORTS for c in operator.of(name)}
    output = operator.guide("tasks")  # each exits 0: verified, rebuilt, one key in use
    for expected in (
        r"^ok: [1-9]\d* events; every hash chain holds",
        r"^rebuilt from [1-9]\d* events .* and switched$",
        r"^reporting: .*1 running, holding kek-",
    ):
        assert re.search(expected, output, re.MULTILINE), output

    [after] = operator.of("kafka-access")
    assert after["State"]["FinishedAt"] == access["State"]["FinishedAt"]
    operator.run("docker compose up -d --wait")
    assert {c["Id"] for name in PORTS for c in operator.of(name)} == services
    # The access job ran again with that up, and every service still has its password.
    assert balance(operator)["spent_pence"] == 58500
    status, _ = https(PORTS["spending"], "/readyz")
    assert status == 200


def test_a_reader_is_made_listed_and_revoked_by_the_readers_service(operator: Operator) -> None:
    output = operator.guide("readers")
    assert re.search(r'^ "password": "[\w-]{40,}",$', output, re.MULTILINE), output
    assert '{"principal": "reader-warehouse", "group_prefix": "reader-warehouse."' in output
    assert re.search(r"^revoked: reader-warehouse$", output, re.MULTILINE), output


def test_scaled_replicas_share_one_port(operator: Operator) -> None:
    operator.guide("scale")
    assert len(operator.of("reporting")) == 3
    assert {name: sorted(ports) for name, ports in published(operator).items()} == expected_ports()
    # The proxy's workers each keep what compose's DNS answered for 5 s (nginx.conf): one
    # that asked while the third replica was starting names two until it asks again.
    since, deadline = time.time(), time.monotonic() + 20
    upstreams: set[str] = set()
    while len(upstreams) < 3 and time.monotonic() < deadline:
        for _ in range(6):
            assert https(PORTS["reporting"], "/healthz")[0] == 200
        logs = operator.docker("logs", "--since", str(int(since) - 1), f"{PROJECT}-proxy-1")
        upstreams = {
            line["upstream"]
            for line in map(
                json.loads, (text for text in logs.splitlines() if text.startswith("{"))
            )
            if line["service"] == "reporting"
        }
    assert len(upstreams) == 3, upstreams
    memory = operator.docker(
        "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}"
    )
    (LOCAL / "artefacts" / "compose-memory.txt").write_text(memory)
    operator.run("docker compose up -d --wait --scale reporting=1")


def test_a_backup_restores_onto_empty_volumes(operator: Operator) -> None:
    before = balance(operator)
    operator.guide("backup")
    operator.guide("restore")
    assert balance(operator) == before
    assert {name: sorted(ports) for name, ports in published(operator).items()} == expected_ports()


def test_an_upgrade_and_a_restart_keep_every_port_and_all_data(operator: Operator) -> None:
    before = balance(operator)
    services = {c["Id"] for name in PORTS for c in operator.of(name)}
    operator.guide("upgrade")
    built = revision()
    for name in PORTS:
        [container] = operator.of(name)
        assert container["Id"] not in services  # re-created from the new image
        labels = json.loads(operator.docker("image", "inspect", container["Image"]))[0]
        assert labels["Config"]["Labels"]["org.opencontainers.image.revision"] == built
    assert {name: sorted(ports) for name, ports in published(operator).items()} == expected_ports()
    assert balance(operator) == before
    operator.guide("restart")
    assert {name: sorted(ports) for name, ports in published(operator).items()} == expected_ports()
    assert balance(operator) == before
