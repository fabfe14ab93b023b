"""The local stack without Docker: PostgreSQL from the machine's binaries, Apache Kafka from
Maven Central's jars on the machine's Java 17, and the services, all under ``.local/``.

``python deploy/stack.py up|down|clean|status``; the Makefile calls it, and the test suite
uses :class:`Postgres` and :class:`Kafka` to run throwaway instances of its own.
Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "deploy" / "kafka" / "log4j2.properties"
KAFKA_LIBS = LOCAL / "kafka-libs"


class StackError(RuntimeError):
    """Something the stack cannot do, said plainly."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, timeout: float, what: str) -> None:
    """Poll ``check()`` until true, or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise StackError(f"{what} did not happen within {timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, if the process still runs."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(path: Path, timeout: float = 20.0) -> bool:
    """SIGTERM the process in a pid file, SIGKILL it after ``timeout``; True if one ran."""
    pid = read_pid(path)
    path.unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def spawn(command: list[str], log: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in a session of its own, logging to a file; it outlives this process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    executable = shutil.which(command[0]) or command[0]
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        # posix_spawn rather than Popen: nothing here will wait() for a daemon.
        pid = os.posix_spawn(
            executable,
            command,
            env if env is not None else dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(out)
        os.close(devnull)
    pid_file.write_text(str(pid))
    return pid


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise StackError(f"PostgreSQL's {name} was not found; apt-get install postgresql-15")
    return str(candidates[0])


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; Debian's package provides a postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass
class Postgres:
    """A PostgreSQL cluster in a folder of ours, on loopback. With a ``password`` (the local
    stack's), every connection must give it (SCRAM), over TCP and the socket alike; without
    (the suite's throwaway clusters), any local connection is trusted."""

    home: Path
    port: int
    user: str = "ledger"
    durable: bool = True
    password: str | None = field(default=None, repr=False)
    # Where a new cluster keeps its write-ahead log (a filesystem of its own, say); None:
    # inside its data folder.
    wal: Path | None = None
    # The addresses it listens on (comma-separated).
    addresses: str = "127.0.0.1"
    # Where it copies each finished write-ahead log segment (continuous archiving: with a
    # base backup, these restore the cluster to any moment since); None: not archived.
    archive: Path | None = None
    # More server settings, each ``name=value`` (the benchmark's statement statistics).
    settings: tuple[str, ...] = ()

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        with contextlib.suppress(OSError, ValueError, IndexError):
            return pid_alive(int(pid_file.read_text().splitlines()[0]))
        return False

    def start(self) -> None:
        if self.running():
            return
        if port_open(self.port):
            raise StackError(
                f"port {self.port} is taken by another program; set LEDGER_PG_PORT to a free port"
            )
        _postgres_folder(self.home)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._pg_ctl_start()
        if self.password is not None:
            self._require_password()

    def _pg_ctl_start(self) -> None:
        options = [
            f"-p {self.port}",
            f"-c listen_addresses={self.addresses}",
            f"-k {self.home}",
            "-c max_connections=300",
            "-c shared_buffers=128MB",
        ]
        if not self.durable:
            # Throwaway test clusters: the same server, without waiting for the disk.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if self.archive is not None:
            _postgres_folder(self.archive)
            # A segment is archived once full, never over one already archived.
            copy = f"test ! -f {self.archive}/%f && cp %p {self.archive}/%f"
            options += ["-c archive_mode=on", f"-c {shlex.quote(f'archive_command={copy}')}"]
        options += [f"-c {shlex.quote(setting)}" for setting in self.settings]
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    " ".join(options),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        wait_until(lambda: port_open(self.port), 30, f"PostgreSQL listening on {self.port}")

    def _initdb(self) -> None:
        if self.wal is not None:
            _postgres_folder(self.wal)
        auth = ["--auth=trust"]
        pwfile = self.home / "initdb-password"
        if self.password is not None:
            # The password from a file only the postgres user reads, removed once used.
            _private_file(pwfile, self.password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            subprocess.run(
                _as_postgres(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        self.user,
                        *auth,
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        *([f"--waldir={self.wal}"] if self.wal else []),
                    ]
                ),
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _require_password(self) -> None:
        """A cluster made before the stack had a password trusted every local user: give
        its role the password (as a SCRAM verifier, so the text itself reaches no log) and
        have every connection give it from now on."""
        hba = self.data / "pg_hba.conf"
        if " trust" not in hba.read_text():
            return
        verifier = scram_verifier(self.password or "")
        subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"],
            input=f"ALTER ROLE \"{self.user}\" PASSWORD '{verifier}';\n",
            text=True,
            check=True,
            capture_output=True,
        )  # fmt: skip
        hba.write_text(
            "# The local stack: every connection gives its role's password.\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "reload"]),
            check=True,
            capture_output=True,
        )

    def reload(self) -> None:
        """Have the running server read its configuration files again (pg_hba.conf)."""
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "reload"]),
            check=True,
            capture_output=True,
        )

    def base_backup(self, target: Path) -> None:
        """Copy the running cluster into ``target`` (which must not exist) as a base backup,
        with the write-ahead log that makes it consistent: with the archive, the starting
        point of a restore to any later moment (:meth:`restore`)."""
        _postgres_folder(target.parent)
        subprocess.run(
            _as_postgres(
                [_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", self.user, "-D", str(target), "-X", "stream", "-c", "fast"]
            ),
            check=True,
            capture_output=True,
            env=self._client_environment(),
        )  # fmt: skip

    def restore(self, backup: Path, archive: Path, until: str) -> None:
        """Make this (new) cluster a copy of ``backup`` rolled forward through ``archive``'s
        segments to the moment ``until`` (a timestamp with its zone, as PostgreSQL reads
        one), then start it: what was committed by then is there, and nothing after."""
        if self.data.exists():
            raise StackError(f"{self.data} exists: a restore makes a new cluster")
        _postgres_folder(self.home)
        subprocess.run(_as_postgres(["cp", "-a", str(backup), str(self.data)]), check=True)
        settings = {
            "restore_command": f"cp {archive}/%f %p",
            "recovery_target_time": until,
            "recovery_target_action": "promote",
        }
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in settings.items())
        (self.data / "recovery.signal").touch()
        if os.geteuid() == 0:
            shutil.chown(self.data / "recovery.signal", "postgres", "postgres")
        self._pg_ctl_start()
        # Recovery ends in a promotion: until then the server answers read-only.
        wait_until(self._promoted, 60, f"PostgreSQL on {self.port} restored to {until}")

    def dump(self, database: str, target: Path) -> None:
        """One database as it stands, into a file :meth:`load` reads (pg_dump's own format):
        how one service's database is taken from a cluster restored to a moment."""
        subprocess.run(
            [_pg_bin("pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-F", "c", "-f", str(target), database],
            check=True,
            capture_output=True,
            env=self._client_environment(),
        )  # fmt: skip

    def load(self, database: str, dump: Path) -> None:
        """Replace a database (which its service must have left) with what ``dump`` holds."""
        quoted = '"' + database.replace('"', '""') + '"'
        subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
             "-c", f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)",
             "-c", f"CREATE DATABASE {quoted}"],
            check=True,
            capture_output=True,
            env=self._client_environment(),
        )  # fmt: skip
        subprocess.run(
            [_pg_bin("pg_restore"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", database, "--exit-on-error", str(dump)],
            check=True,
            capture_output=True,
            env=self._client_environment(),
        )  # fmt: skip

    def _client_environment(self) -> dict[str, str]:
        """This process's environment, with the password for PostgreSQL's own clients."""
        return os.environ | ({"PGPASSWORD": self.password} if self.password else {})

    def _promoted(self) -> bool:
        result = subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-Atc", "SELECT pg_is_in_recovery()"],
            capture_output=True,
            text=True,
            check=False,
            env=self._client_environment(),
        )  # fmt: skip
        return result.stdout.strip() == "f"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` skips the checkpoint (for data about to be deleted)."""
        if self.running():
            subprocess.run(
                _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                check=False,
                capture_output=True,
            )


def _postgres_folder(path: Path) -> None:
    """A folder the server (the postgres user, when we are root) may write to."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def ensure_kafka_jars() -> Path:
    """Fetch the broker's jars from Maven Central once; later calls reuse them."""
    marker = KAFKA_LIBS / ".complete"
    if marker.exists() and marker.read_text() == KAFKA_POM.read_text():
        return KAFKA_LIBS
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Apache Kafka's jars; install maven")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={KAFKA_LIBS}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            "could not fetch Apache Kafka from Maven Central:\n" + result.stdout + result.stderr
        )
    marker.write_text(KAFKA_POM.read_text())
    return KAFKA_LIBS


# The broker's own principal: the broker and the controller talk as it, and it alone
# manages users and ACLs. Every other principal gets only what it is granted.
KAFKA_SUPERUSER = "kafka"
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
# Kafka's command-line tools the stack offers, by their names in Kafka's distribution.
KAFKA_TOOLS = {
    "kafka-acls.sh": "org.apache.kafka.tools.AclCommand",
    "kafka-configs.sh": "kafka.admin.ConfigCommand",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-metadata-quorum.sh": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
}


class KafkaGrantLike(Protocol):
    """What :func:`access_script` reads of a grant (``shared.web.registry.KafkaGrant``)."""

    @property
    def principal(self) -> str: ...
    @property
    def operations(self) -> tuple[str, ...]: ...
    @property
    def topics(self) -> tuple[str, ...]: ...
    @property
    def groups(self) -> tuple[str, ...]: ...
    @property
    def transactional_ids(self) -> tuple[str, ...]: ...
    @property
    def prefixed(self) -> bool: ...


# Stands for LEDGER_TOPIC_PREFIX in the grants the access script is made from.
TOPIC_PREFIX_MARK = "@LEDGER_TOPIC_PREFIX@"
ACCESS_SCRIPT = ROOT / "deploy" / "kafka" / "access.sh"


def password_variable(principal: str) -> str:
    """The variable that holds a principal's Kafka password (compose's .env names them)."""
    return f"{principal.upper()}_KAFKA_PASSWORD"


def _shell_word(value: str) -> str:
    if TOPIC_PREFIX_MARK in value:
        return '"' + value.replace(TOPIC_PREFIX_MARK, "${LEDGER_TOPIC_PREFIX:-}") + '"'
    return shlex.quote(value)


def _acl_arguments(grant: KafkaGrantLike) -> list[str]:
    arguments = ["--add", "--allow-principal", f"User:{grant.principal}"]
    for flag, values in (
        ("--operation", grant.operations),
        ("--topic", grant.topics),
        ("--group", grant.groups),
        ("--transactional-id", grant.transactional_ids),
    ):
        for value in values:
            arguments += [flag, value]
    if grant.prefixed:
        arguments += ["--resource-pattern-type", "prefixed"]
    return arguments


def access_script(principals: Sequence[str], grants: Iterable[KafkaGrantLike]) -> str:
    """The shell script that gives each principal its SCRAM credentials and only the ACLs of
    ``grants`` (names made with topic prefix :data:`TOPIC_PREFIX_MARK`), with Kafka's own
    tools. compose runs it in the Kafka image; the local stack and the tests run it too."""
    users = "".join(f"user {shlex.quote(name)} {password_variable(name)}\n" for name in principals)
    acls = "".join(
        "acls " + " ".join(map(_shell_word, _acl_arguments(grant))) + "\n" for grant in grants
    )
    return f"""#!/bin/sh
# Made by `python deploy/stack.py access-script` from shared.web.registry.kafka_grants (a test
# checks it is current). Gives the ledger's principals their SCRAM credentials and only their
# ACLs; run as the broker's superuser. Idempotent: a user that has a password keeps it (set
# KAFKA_RESET_PASSWORDS=yes to give every user the password given here), missing ACLs are added.
# A password is its variable's value or, where secrets are files (compose), the file
# $KAFKA_SECRETS/<the variable's name in lower case>. With KAFKA_CA_FILE, over TLS.
set -eu
bin=${{KAFKA_BIN:-/opt/kafka/bin}}
secret() {{
  eval "value=\\${{$1:-}}"
  if [ -z "$value" ] && [ -n "${{KAFKA_SECRETS:-}}" ]; then
    value=$(cat "$KAFKA_SECRETS/$(echo "$1" | tr '[:upper:]' '[:lower:]')")
  fi
  if [ -z "$value" ]; then echo "$1 is not set" >&2; exit 1; fi
}}
secret KAFKA_SUPERUSER_PASSWORD
protocol=SASL_PLAINTEXT
if [ -n "${{KAFKA_CA_FILE:-}}" ]; then protocol=SASL_SSL; fi
config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat >"$config" <<END
security.protocol=$protocol
sasl.mechanism={KAFKA_SASL_MECHANISM}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
  username="{KAFKA_SUPERUSER}" password="$value";
END
if [ -n "${{KAFKA_CA_FILE:-}}" ]; then
  printf 'ssl.truststore.type=PEM\\nssl.truststore.location=%s\\n' "$KAFKA_CA_FILE" >>"$config"
fi
# A password goes to the tool in a file only its owner reads, never on a command line.
given=$(mktemp)
known=$(mktemp)
trap 'rm -f "$config" "$given" "$known"' EXIT
# Every user that has credentials, asked once (each run of a Kafka tool starts a JVM).
"$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" \\
  --describe --entity-type users >"$known"
user() {{
  secret "$2"
  if [ "${{KAFKA_RESET_PASSWORDS:-no}}" != yes ] \\
    && grep -q "user-principal '$1' are .*{KAFKA_SASL_MECHANISM}=" "$known"; then
    echo "$1 has a password already: kept"
    return
  fi
  (umask 077 && printf '%s=password=%s\\n' {KAFKA_SASL_MECHANISM} "$value" >"$given")
  "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" \\
    --alter --add-config-file "$given" --entity-type users --entity-name "$1"
}}
acls() {{
  "$bin/kafka-acls.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" "$@"
}}
{users}{acls}"""


@dataclass
class Kafka:
    """An Apache Kafka node (KRaft: broker and controller in one process) that authenticates
    every client (SASL/SCRAM) and authorises it by ACL (standard authorizer): a cluster of
    its own, or one of a :class:`KafkaCluster`'s.

    ``password`` is the superuser's; other users and their ACLs come from an
    :func:`access_script` (:meth:`run_access_script`).
    """

    home: Path
    port: int
    controller_port: int
    password: str = field(repr=False)
    heap: str = "512m"
    partitions: int = 6
    extra: dict[str, str] = field(default_factory=dict)
    node_id: int = 1
    # controller.quorum.voters of a cluster ("1@host:port,2@…"); empty: this node alone.
    voters: str = ""
    # Copies of every partition, the internal topics' too (a cluster: 3).
    replicas: int = 1
    # The cluster's id, the same on every node (empty: a new one when first formatted).
    cluster_id: str = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"

    def _java(self, main: str, *args: str) -> list[str]:
        if main == "kafka.Kafka":
            memory = ["-Xms128m", f"-Xmx{self.heap}", "-XX:+UseG1GC"]
        else:  # a tool: short-lived, so started as quickly as the JVM can
            memory = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        return [
            "java",
            *memory,
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp",
            f"{ensure_kafka_jars()}/*",
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        user = f'username="{KAFKA_SUPERUSER}" password="{self.password}"'
        replicas = str(self.replicas)
        # With copies, a write is acknowledged once two hold it (acks=all), and a copy that
        # fell behind never becomes the leader: nothing acknowledged is lost with one node.
        in_sync = str(min(self.replicas, 2))
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters
            or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"CLIENTS://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENTS://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENTS",
            "listener.security.protocol.map": "CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": KAFKA_SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": KAFKA_SASL_MECHANISM,
            "listener.name.clients.scram-sha-512.sasl.jaas.config": (
                f"org.apache.kafka.common.security.scram.ScramLoginModule required {user};"
            ),
            # SCRAM credentials live in the metadata the controller serves, so the controller
            # listener authenticates with PLAIN, from this file alone.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'{user} user_{KAFKA_SUPERUSER}="{self.password}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{KAFKA_SUPERUSER}",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "group.initial.rebalance.delay.ms": "0",
            **self.extra,
        }
        return _private_file(
            self.home / "server.properties",
            "".join(f"{key}={value}\n" for key, value in config.items()),
        )

    def format_command(self, cluster: str, config: Path) -> tuple[list[str], Path]:
        """The command that formats the broker's storage with the superuser's credentials
        (they must exist before it can start), and the file it reads its arguments from:
        the password is in that file (mode 600, deleted once it has run), never on the
        command line, where every user of the machine could read it."""
        arguments = _private_file(
            self.home / "format.args",
            "\n".join(
                [
                    "kafka.tools.StorageTool",
                    *("format", "-t", cluster, "-c", str(config), "--add-scram"),
                    f"{KAFKA_SASL_MECHANISM}=[name={KAFKA_SUPERUSER},password={self.password}]",
                ]
            )
            + "\n",
        )
        return self._java(f"@{arguments}"), arguments  # java reads @file's lines as arguments

    def tools(self) -> Path:
        """A folder of Kafka's command-line tools, named as in Kafka's own distribution
        (``kafka-acls.sh``, ``kafka-configs.sh``, ``kafka-console-consumer.sh``)."""
        folder = self.home / "bin"
        folder.mkdir(parents=True, exist_ok=True)
        for name, main in KAFKA_TOOLS.items():
            tool = folder / name
            tool.write_text(f'#!/bin/sh\nexec {shlex.join(self._java(main))} "$@"\n')
            tool.chmod(0o755)
        return folder

    def run_access_script(self, script: str, passwords: Mapping[str, str]) -> None:
        """Run an :func:`access_script` against this broker (``passwords``: its variables).

        One JVM per user and per grant (about a second and a half each), so a script this
        broker has already run with these passwords is not run again.
        """
        done = self.home / "access-granted"
        digest = hashlib.sha256(json.dumps([script, dict(passwords)]).encode()).hexdigest()
        if done.exists() and done.read_text() == digest:
            return
        result = self.run_script(script, passwords)
        if result.returncode != 0:
            raise StackError(f"granting Kafka access failed: {result.stderr[-2000:]}")
        done.write_text(digest)

    def run_script(
        self, script: str, variables: Mapping[str, str], tools: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run an :func:`access_script` against this broker as its superuser, every time, with
        Kafka's tools from ``tools`` (this broker's own unless given), and say how it went."""
        return subprocess.run(
            ["sh", "-c", script],
            env={
                "PATH": os.environ["PATH"],
                "KAFKA_BIN": str(tools or self.tools()),
                "KAFKA_BOOTSTRAP": self.bootstrap,
                "KAFKA_SUPERUSER_PASSWORD": self.password,
                **variables,
            },
            capture_output=True,
            text=True,
            check=False,
        )

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def start(self, timeout: float = 90) -> None:
        if self.running():
            return
        self.launch()
        self.wait_listening(timeout)

    def launch(self) -> None:
        """Format the node's storage if new, and start its process without waiting: a
        cluster's nodes listen for clients only once a majority of them are running."""
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise StackError(
                    f"port {port} is taken by another program; set LEDGER_KAFKA_BOOTSTRAP "
                    "(and LEDGER_KAFKA_CONTROLLER_PORT) to free ports"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        formatted = (self.home / "data" / "meta.properties").exists()
        if formatted and not (self.home / "authenticated").exists():
            raise StackError(
                f"{self.home} holds a Kafka made before the ledger's broker authenticated its "
                "clients: delete it (make clean deletes the whole local stack) and start again"
            )
        if not formatted:
            command, arguments = self.format_command(self.cluster_id or new_cluster_id(), config)
            try:
                subprocess.run(command, capture_output=True, text=True, check=True)
            finally:
                arguments.unlink(missing_ok=True)
            (self.home / "authenticated").touch()
        spawn(self._java("kafka.Kafka", str(config)), self.log, self.pid_file)

    def wait_listening(self, timeout: float = 90) -> None:
        wait_until(
            lambda: port_open(self.port) or not self.running(),
            timeout,
            f"Kafka listening on {self.port}",
        )
        if not self.running():
            raise StackError(f"Kafka exited at start; see {self.log}")

    def stop(self, grace: float = 30) -> None:
        """Stop the broker, killing it after ``grace`` seconds (0: at once, for throwaway data)."""
        stop_pid(self.pid_file, timeout=grace)

    def pid(self) -> int | None:
        return read_pid(self.pid_file)


def new_cluster_id() -> str:
    """A Kafka cluster id as Kafka's own ``random-uuid`` makes one: 16 random bytes in
    URL-safe base64 without padding, never starting with "-" (Kafka would read an option)."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


@dataclass
class KafkaCluster:
    """Kafka nodes that form one KRaft cluster (each a broker and a voting controller), every
    partition kept by ``replicas`` of them. Served where :class:`Kafka` is: the stack and the
    tools see one bootstrap list, the superuser's password and each node's process."""

    nodes: list[Kafka]

    @classmethod
    def of(
        cls,
        home: Path,
        ports: Sequence[tuple[int, int]],
        password: str,
        *,
        heap: str = "512m",
        partitions: int = 6,
    ) -> KafkaCluster:
        """Nodes 1… under ``home/node-N``, each on its (client, controller) port pair."""
        voters = ",".join(
            f"{number}@127.0.0.1:{controller}"
            for number, (_, controller) in enumerate(ports, start=1)
        )
        marker = home / "cluster-id"
        if not marker.exists():
            home.mkdir(parents=True, exist_ok=True)
            marker.write_text(new_cluster_id())
        return cls(
            [
                Kafka(
                    home / f"node-{number}",
                    port,
                    controller,
                    password=password,
                    heap=heap,
                    partitions=partitions,
                    node_id=number,
                    voters=voters,
                    replicas=len(ports),
                    cluster_id=marker.read_text(),
                )
                for number, (port, controller) in enumerate(ports, start=1)
            ]
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def password(self) -> str:
        return self.nodes[0].password

    @property
    def log(self) -> Path:
        return self.nodes[0].log.parent.parent  # each node's kafka.log is in its folder

    @property
    def replicas(self) -> int:
        return len(self.nodes)

    def running(self) -> bool:
        return all(node.running() for node in self.nodes)

    def start(self, timeout: float = 120) -> None:
        waiting = [node for node in self.nodes if not node.running()]
        for node in waiting:
            node.launch()
        for node in waiting:
            node.wait_listening(timeout)

    def stop(self, grace: float = 30) -> None:
        for node in self.nodes:
            node.stop(grace)

    def run_access_script(self, script: str, passwords: Mapping[str, str]) -> None:
        self.nodes[0].run_access_script(script, {**passwords, "KAFKA_BOOTSTRAP": self.bootstrap})

    def active_controller(self) -> Kafka:
        """The node that leads the controllers' quorum now, as Kafka's own
        ``kafka-metadata-quorum.sh describe --status`` reports it."""
        first = self.nodes[0]
        config = _private_file(
            first.home / "superuser.properties",
            f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={KAFKA_SASL_MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
            f'required username="{KAFKA_SUPERUSER}" password="{self.password}";\n',
        )
        described = subprocess.run(
            [
                str(first.tools() / "kafka-metadata-quorum.sh"),
                *("--bootstrap-server", self.bootstrap, "--command-config", str(config)),
                *("describe", "--status"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r"^LeaderId:\s+(\d+)$", described, re.MULTILINE)
        if found is None:
            raise StackError(f"no quorum leader in:\n{described}")
        return self.nodes[int(found[1]) - 1]


# The developer stack behind make up / make down.


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def local_postgres() -> Postgres:
    password = _secret("postgres-password", lambda: secrets.token_urlsafe(32))
    wal = os.environ.get("LEDGER_PG_WAL_DIR")
    archive = os.environ.get("LEDGER_PG_ARCHIVE_DIR")
    return Postgres(
        LOCAL / "postgres",
        _env_port("LEDGER_PG_PORT", 5432),
        password=password,
        wal=Path(wal) if wal else None,
        archive=Path(archive).absolute() if archive else None,
    )


def local_kafka() -> Kafka | KafkaCluster:
    """The local stack's broker: one node, or with LEDGER_KAFKA_BROKERS=3 a cluster of three
    (each partition on all three, written to two before it counts) on the bootstrap port and
    the five after it (client and controller port of each node in turn). Without the
    variable, a cluster that is running is the one (make down and make status find it)."""
    bootstrap = os.environ.get("LEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    pid_files = list((LOCAL / "kafka-cluster").glob("node-*/kafka.pid"))
    running = len(pid_files) if any(read_pid(path) for path in pid_files) else 1
    brokers = int(os.environ.get("LEDGER_KAFKA_BROKERS") or running)
    if brokers != 1:
        first = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
        return KafkaCluster.of(
            LOCAL / "kafka-cluster",
            [(first + 2 * node, first + 2 * node + 1) for node in range(brokers)],
            password=_kafka_password(KAFKA_SUPERUSER),
        )
    return Kafka(
        LOCAL / "kafka",
        int(bootstrap.rsplit(":", 1)[1]),
        _env_port("LEDGER_KAFKA_CONTROLLER_PORT", 9093),
        password=_kafka_password(KAFKA_SUPERUSER),
    )


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL keeps of a password (SCRAM-SHA-256, RFC 7677): given in its place, the
    password itself is never in a statement a server could log."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client = hmac.digest(salted, b"Client Key", "sha256")
    server = hmac.digest(salted, b"Server Key", "sha256")
    stored = hashlib.sha256(client).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def _private_file(path: Path, text: str) -> Path:
    """Write a file only its owner can read (it holds a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def _secret(name: str, make: Callable[[], str]) -> str:
    """A secret of the local stack, made once and kept in .local (git-ignored, mode 600)."""
    path = LOCAL / name
    if not path.exists():
        _private_file(path, make())
    return path.read_text().strip()


def _kafka_password(principal: str) -> str:
    """The local stack's password for one of the broker's users."""
    return _secret(f"kafka-passwords/{principal}", lambda: secrets.token_urlsafe(32))


def _new_kek() -> str:
    """A key-encryption key as LEDGER_KEY_ENCRYPTION_KEYS lists it (`ledger keys new-kek`)."""
    return f"local-1={base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def stack_variables(pg: Postgres, kafka: Kafka | KafkaCluster, principal: str) -> dict[str, str]:
    """The settings the local stack gives a service or the CLI (connecting to Kafka as
    ``principal``), over the caller's own."""
    keks: dict[str, str] = {}
    if os.environ.get("LEDGER_KEY_ENCRYPTION_KEYS"):
        keks["LEDGER_KEY_ENCRYPTION_KEYS"] = os.environ["LEDGER_KEY_ENCRYPTION_KEYS"]
    else:
        # Outside every database and topic, as in production, in a file the services read
        # again when it changes: `ledger keys new-kek --add` and `retire` rotate in place.
        _secret("key-encryption-keys", _new_kek)
        keks["LEDGER_KEY_ENCRYPTION_KEYS_FILE"] = str(LOCAL / "key-encryption-keys")
    password = {"LEDGER_PG_PASSWORD": pg.password} if pg.password else {}
    return {
        "LEDGER_JWT_SECRET": os.environ.get("LEDGER_JWT_SECRET")
        or _secret("jwt-secret", lambda: secrets.token_urlsafe(48)),
        **keks,
        "LEDGER_PG_PORT": str(pg.port),
        "LEDGER_PG_USER": pg.user,
        **password,
        "LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "LEDGER_TOPIC_REPLICAS": str(kafka.replicas),
        "LEDGER_KAFKA_USERNAME": principal,
        "LEDGER_KAFKA_PASSWORD": _kafka_password(principal),
        "LEDGER_LOG_FORMAT": os.environ.get("LEDGER_LOG_FORMAT", "json"),
    }


def service_env(pg: Postgres, kafka: Kafka | KafkaCluster, principal: str) -> dict[str, str]:
    """The environment a service or the CLI runs with in the local stack (with the commit
    checked out, for ledger_service_info)."""
    return {"LEDGER_REVISION": revision(), **os.environ, **stack_variables(pg, kafka, principal)}


def revision() -> str:
    """The commit checked out (short), or "unknown" outside a git checkout."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # not a git checkout
    return found.stdout.strip()


def ledger_access_script() -> str:
    """The access script for the installed services (imported here for the reason given in
    installed_services)."""
    from shared.core.settings import Settings  # noqa: PLC0415
    from shared.web.registry import KAFKA_ADMIN, kafka_grants  # noqa: PLC0415

    grants = kafka_grants(Settings(topic_prefix=TOPIC_PREFIX_MARK))
    return access_script((KAFKA_ADMIN, *installed_services()), grants)


def _topic_prefix() -> str:
    return os.environ.get("LEDGER_TOPIC_PREFIX", "")


def write_access_script() -> None:
    """Bring deploy/kafka/access.sh (which compose runs) up to date with the installed services."""
    ACCESS_SCRIPT.write_text(ledger_access_script())
    print(f"wrote {ACCESS_SCRIPT.relative_to(ROOT)}")


def installed_services() -> dict[str, int]:
    """Each installed service's name and default port, as the ledger's registry finds them.

    Imported here, not at the top: ``make down`` runs this file without the ledger installed.
    """
    from shared.web.registry import services  # noqa: PLC0415

    return {definition.name: definition.default_port for definition in services()}


def _started() -> list[str]:
    """The services `make up` started and has a pid file of."""
    return sorted(path.stem for path in (LOCAL / "run").glob("*.pid"))


# What `make up` runs, as `ledger` arguments; docker-compose.yml runs the same (tested).
SETUP_COMMANDS = (("topics",), ("migrate",))


def serve_command(service: str) -> list[str]:
    """The ``ledger`` arguments that run one service."""
    return ["serve", service]


def _ledger() -> str:
    return str(Path(sys.executable).parent / "ledger")


def _readiness(port: int) -> dict[str, Any] | None:
    """What a service's /readyz says (its 503 too), or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            found: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:  # 503: not ready, and why
        found = json.loads(error.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return found


def _ready(port: int) -> bool:
    """Ready: every check passes (a degraded service answers 200 too, but is not yet all
    there: its relay may still be connecting to Kafka)."""
    readiness = _readiness(port)
    return readiness is not None and readiness.get("status") == "ready"


def up() -> None:
    """Start everything, or stop what this run started and say why: a half-started stack
    (a port taken, a service that cannot start) is left behind by nothing."""
    pg, kafka = local_postgres(), local_kafka()
    started: list[tuple[str, Callable[[], object]]] = []
    try:
        _up(pg, kafka, started)
    except (StackError, subprocess.CalledProcessError, OSError):
        for what, stop in reversed(started):
            stop()
            print(f"stopped {what}, which this run had started", file=sys.stderr)
        raise


def _up(
    pg: Postgres,
    kafka: Kafka | KafkaCluster,
    started: list[tuple[str, Callable[[], object]]],
) -> None:
    print("• PostgreSQL …", flush=True)
    if not pg.running():
        pg.start()
        started.append(("PostgreSQL", pg.stop))
    print("• Apache Kafka (first run fetches its jars from Maven Central) …", flush=True)
    ensure_kafka_jars()
    if not kafka.running():
        kafka.start()
        started.append(("Kafka", kafka.stop))
    print("• Kafka users and ACLs (each service may touch only its own topics) …", flush=True)
    script = ledger_access_script()
    principals = re.findall(r"^user (\S+) ", script, re.MULTILINE)
    passwords = {password_variable(name): _kafka_password(name) for name in principals}
    kafka.run_access_script(script, {**passwords, "LEDGER_TOPIC_PREFIX": _topic_prefix()})
    from shared.web.registry import KAFKA_ADMIN  # noqa: PLC0415 - see installed_services

    env = service_env(pg, kafka, KAFKA_ADMIN)
    print("• topics and migrations …", flush=True)
    for command in SETUP_COMMANDS:
        subprocess.run([_ledger(), *command], env=env, check=True, stdout=subprocess.DEVNULL)
    ports = {}
    for name, default_port in installed_services().items():
        port = _env_port(f"LEDGER_{name.upper()}_PORT", default_port)
        ports[name] = port
        pid_file = LOCAL / "run" / f"{name}.pid"
        if read_pid(pid_file) is not None:
            continue
        if port_open(port):
            raise StackError(f"port {port} for {name} is taken; set LEDGER_{name.upper()}_PORT")
        spawn(
            [_ledger(), *serve_command(name)],
            LOCAL / "logs" / f"{name}.log",
            pid_file,
            service_env(pg, kafka, name),
        )
        started.append((name, functools.partial(stop_pid, pid_file)))
    for name, port in ports.items():
        wait_until(lambda port=port: _ready(port), 120, f"{name} /readyz saying ready on {port}")
    service_ports = "".join(f"export LEDGER_{n.upper()}_PORT={p}\n" for n, p in ports.items())
    secrets_of = "".join(
        f"export {name}={shlex.quote(env[name])}\n"
        for name in (
            "LEDGER_JWT_SECRET",
            "LEDGER_KEY_ENCRYPTION_KEYS",
            "LEDGER_KEY_ENCRYPTION_KEYS_FILE",
            "LEDGER_PG_PASSWORD",
            "LEDGER_KAFKA_PASSWORD",
        )
        if env.get(name)
    )
    _private_file(  # it holds the stack's secrets: its owner alone may read it
        LOCAL / "env",
        f"{secrets_of}export LEDGER_PG_PORT={pg.port}\n"
        f"export LEDGER_KAFKA_BOOTSTRAP={kafka.bootstrap}\n"
        f"export LEDGER_TOPIC_REPLICAS={kafka.replicas}\n"
        f"export LEDGER_KAFKA_USERNAME={KAFKA_ADMIN}\n"
        f"{service_ports}export PATH={Path(sys.executable).parent}:$PATH\n",
    )
    print(f"\nPostgreSQL  127.0.0.1:{pg.port}  (user {pg.user}; logs {pg.log})")
    print(f"Kafka       {kafka.bootstrap}  (logs {kafka.log})")
    for name, port in ports.items():
        print(f"{name:<11} http://127.0.0.1:{port}  (logs .local/logs/{name}.log)")
    print("\nA token:   source .local/env && ledger token --role admin --pilot demo --sub me")
    print("Stop with: make down   (data kept; make clean deletes it)")


def down() -> None:
    for name in _started():
        if stop_pid(LOCAL / "run" / f"{name}.pid"):
            print(f"stopped {name}")
    kafka = local_kafka()
    if kafka.running():
        kafka.stop()
        print("stopped Kafka")
    pg = local_postgres()
    if pg.running():
        pg.stop()
        print("stopped PostgreSQL")


def status() -> int:
    """Each part of the stack `make up` started: running or not, where, and for a service
    what /readyz and /metrics say (readiness, what fails, relay and consumer lag). Exit 0
    when everything runs and is ready, 1 otherwise."""
    pg, kafka = local_postgres(), local_kafka()
    ports = _stack_ports()
    rows = [
        ("postgres", str(pg.port), "running" if pg.running() else "stopped", ""),
        ("kafka", str(kafka.port), "running" if kafka.running() else "stopped", ""),
    ]
    for name in installed_services():
        served = ports.get(name)
        if read_pid(LOCAL / "run" / f"{name}.pid") is None or served is None:
            rows.append((name, str(served or "-"), "stopped", ""))
            continue
        rows.append((name, str(served), *_service_state(served)))
    width = max(len(row[0]) for row in rows)
    for component, where, state, detail in rows:
        print(f"{component:<{width}}  {where:>5}  {state:<9}  {detail}".rstrip())
    return 0 if all(row[2] in {"running", "ready"} for row in rows) else 1


def _stack_ports() -> dict[str, int]:
    """The services' ports `make up` wrote to .local/env."""
    try:
        text = (LOCAL / "env").read_text()
    except OSError:
        return {}
    found = re.findall(r"^export LEDGER_([A-Z0-9_]+)_PORT=(\d+)$", text, re.MULTILINE)
    return {name.lower(): int(port) for name, port in found}


def _service_state(port: int) -> tuple[str, str]:
    """A running service's readiness and, from its metrics, its lags."""
    ready = _readiness(port)
    if ready is None:
        return "unreachable", ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            lags = lags_of(response.read().decode())
    except (urllib.error.URLError, OSError):
        lags = {}
    detail = [f"failing: {', '.join(ready['failing'])}"] if ready.get("failing") else []
    if "relay" in lags:
        detail.append(f"relay lag {lags['relay']:.1f} s")
    if "consumers" in lags:
        detail.append(f"consumer lag {lags['consumers']:.0f}")
    return str(ready.get("status", "unknown")), "; ".join(detail)


def lags_of(metrics: str) -> dict[str, float]:
    """From Prometheus text: the relay's lag in seconds and the consumers' in records (summed
    over their partitions), where the service has them."""
    lags: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("ledger_relay_lag_seconds "):
            lags["relay"] = float(line.split()[-1])
        elif line.startswith("ledger_consumer_lag{"):
            lags["consumers"] = lags.get("consumers", 0.0) + float(line.split()[-1])
    return lags


def clean() -> None:
    down()
    for folder in ("postgres", "kafka", "kafka-cluster", "logs", "run"):
        shutil.rmtree(LOCAL / folder, ignore_errors=True)
    for name in ("env", "jwt-secret"):
        (LOCAL / name).unlink(missing_ok=True)
    shutil.rmtree(LOCAL / "kafka-passwords", ignore_errors=True)
    print("deleted the local stack's data")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands: dict[str, Callable[[], int | None]] = {
        "up": up,
        "down": down,
        "status": status,
        "clean": clean,
        "access-script": write_access_script,
    }
    parser.add_argument("command", choices=tuple(commands))
    command = parser.parse_args().command
    try:
        code = commands[command]()
    except (StackError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None)
        print(f"error: {error}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
        return 1
    return code or 0


def unique_name() -> str:
    """A short unique suffix for throwaway resources."""
    return uuid.uuid4().hex[:8]


if __name__ == "__main__":
    sys.exit(main())
