"""A Docker engine of the project's own, for ``make compose-test``: Debian's ``dockerd`` with
its data, socket and state under ``.local/engine``, Compose v2 built from its Go module, and
the images the compose file names, made locally from Debian's packages and Maven Central's
Kafka jars where no registry can be reached.

``python deploy/engine.py start|stop|env``. ``start`` also builds what is missing;
``env`` prints the variables that point ``docker`` at this engine. Standard library only.

The engine changes the host's firewall and forwarding (bridges, NAT, a FORWARD policy of
DROP); ``start`` keeps what they were and ``stop`` puts them back. Containers reach each
other, and the host reaches the ports they publish on loopback; nothing they send is
forwarded to any other address (a rule in DOCKER-USER), so an image build needs no network:
its Python packages come from a wheelhouse made on the host (deploy/build/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.stack import (
    KAFKA_LOG4J,
    KAFKA_TOOLS,
    LOCAL,
    ROOT,
    StackError,
    ensure_kafka_jars,
    read_pid,
    stop_pid,
)

ENGINE = LOCAL / "engine"
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"
COMPOSE = LOCAL / "tools" / f"docker-compose-{COMPOSE_VERSION}"
WHEELHOUSE = ROOT / "deploy" / "build" / "wheels"
DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseImage:
    """An image the compose file names by ``variable``, defaulting to ``official``; where no
    registry serves it, ``local`` is made from Debian's ``packages`` (and, for Kafka, its
    jars laid out as the official image lays them out)."""

    variable: str
    official: str
    local: str
    packages: tuple[str, ...]


BASE_IMAGES = (
    # deploy/Dockerfile's base: Debian's own Python 3.11 (3.11.2 on bookworm, the oldest
    # the project supports) with venv, and useradd.
    BaseImage(
        "PYTHON_IMAGE",
        "python:3.11-slim-bookworm",
        "ledger-local/python:3.11-bookworm",
        ("python3", "python3-venv", "passwd"),
    ),
    BaseImage(
        "POSTGRES_IMAGE",
        "postgres:15-bookworm",
        "ledger-local/postgres:15-bookworm",
        ("postgresql-15",),
    ),
    BaseImage(
        "KAFKA_IMAGE",
        "apache/kafka:4.1.1",
        "ledger-local/kafka:4.1.1",
        ("openjdk-17-jre-headless", "passwd"),
    ),
    BaseImage("PROXY_IMAGE", "nginx:1.26-bookworm", "ledger-local/nginx:bookworm", ("nginx",)),
)

KAFKA_IMAGE_RECIPE = """\
# Apache Kafka laid out as the apache/kafka image is (/opt/kafka/libs, /opt/kafka/bin/<tool>.sh,
# user 1000, the same volumes), from Kafka's Maven Central jars (deploy/kafka/pom.xml) on
# Debian's Java 17. Made by deploy/engine.py where no registry can be reached.
ARG BASE
FROM ${BASE}
COPY libs/ /opt/kafka/libs/
COPY bin/ /opt/kafka/bin/
COPY log4j2.properties /opt/kafka/config/log4j2.properties
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /opt/kafka appuser \\
    && install -d -o appuser -g appuser /var/lib/kafka/data /etc/kafka/secrets /mnt/shared/config
USER 1000:1000
VOLUME ["/etc/kafka/secrets", "/var/lib/kafka/data", "/mnt/shared/config"]
"""


def run(
    command: list[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - subprocess's own name for it
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """A command that must succeed (unless ``check`` is false); its output is shown if it
    fails."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        input=input,
        timeout=timeout,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise StackError(f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}")
    return result


class Engine:
    """``dockerd`` under ``home``, started and stopped by this process's caller."""

    def __init__(self, home: Path = ENGINE) -> None:
        self.home = home
        self.socket = home / "docker.sock"
        self.pid_file = home / "dockerd.pid"
        self.daemon_pid_file = home / "dockerd.daemon.pid"  # dockerd's own
        self.log = home / "dockerd.log"
        self.config = home / "config"  # DOCKER_CONFIG: Compose is its CLI plug-in
        self.host_state = home / "host-network-state.json"

    def environment(self) -> dict[str, str]:
        """What points ``docker`` and ``docker compose`` at this engine."""
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.config)}

    def docker(
        self, *arguments: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker", *arguments], env={**os.environ, **self.environment()}, timeout=timeout
        )

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def start(self) -> None:
        if self.running():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.host_state.exists():  # else a run that died left it: that is the truth
            self.host_state.write_text(json.dumps(_host_network_state()))
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={self.home / 'data'}",
                    f"--exec-root={self.home / 'exec'}",
                    f"--pidfile={self.daemon_pid_file}",
                    f"--host=unix://{self.socket}",
                    # No default bridge and no NAT: compose's networks are bridges of their
                    # own, and nothing leaves them but to the host.
                    "--bridge=none",
                    "--ip-masq=false",
                    "--log-level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + 60
        while subprocess.run(
            ["docker", "version"],
            env={**os.environ, **self.environment()},
            capture_output=True,
            check=False,
        ).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"dockerd did not start: see {self.log}")
            time.sleep(0.2)
        # Forwarded traffic may go into the engine's bridges, never out of the host. The
        # engine makes DOCKER-USER, and FORWARD's jump to it, when it creates a network: a
        # first start does (its "host" and "none"), a restart loads them and does not.
        if run(["iptables", "-L", "DOCKER-USER"], check=False).returncode != 0:
            run(["iptables", "-N", "DOCKER-USER"])
        if run(["iptables", "-C", "FORWARD", "-j", "DOCKER-USER"], check=False).returncode != 0:
            run(["iptables", "-I", "FORWARD", "1", "-j", "DOCKER-USER"])
        run(["iptables", "-I", "DOCKER-USER", "1", "-j", "DROP"])
        run(["iptables", "-I", "DOCKER-USER", "1", "-o", "br-+", "-j", "RETURN"])
        self.config.mkdir(parents=True, exist_ok=True)
        plugins = self.config / "cli-plugins"
        plugins.mkdir(exist_ok=True)
        shutil.copy2(ensure_compose(), plugins / "docker-compose")

    def stop(self) -> None:
        """Stop the engine (its containers with it) and give the host back its network."""
        stop_pid(self.pid_file, timeout=60)
        try:
            # What a dockerd killed leaves (a run cut short): its own pid file and its
            # containerd's, each naming a process that no longer runs (or a zombie no one
            # reaps), which kept the next one from starting ("pid file found, ensure docker
            # is not running", "timeout waiting for containerd to start"); and its mounts
            # (its data root bound over itself, the host's network namespace), which made
            # the checkout impossible to delete ("Device or resource busy").
            for pid_file in (self.daemon_pid_file, self.home / "exec/containerd/containerd.pid"):
                if read_pid(pid_file) is None:
                    pid_file.unlink(missing_ok=True)
            for point in reversed(mounts_under(self.home)):
                run(["umount", str(point)])
        finally:  # the host's network is put back whatever a mount says
            if self.host_state.exists():
                _restore_host_network_state(json.loads(self.host_state.read_text()))
                self.host_state.unlink()


def mounts_under(folder: Path) -> list[Path]:
    """The mount points inside ``folder``, outermost first."""
    # /proc/self/mounts escapes space, tab, newline and backslash in octal.
    points = [
        Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1]))
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    return [p for p in points if p.is_relative_to(folder.resolve())]


def _host_network_state() -> dict[str, str]:
    return {
        "iptables": run(["iptables-save"]).stdout,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def _restore_host_network_state(state: dict[str, str]) -> None:
    run(["iptables-restore"], input=state["iptables"])
    Path("/proc/sys/net/ipv4/ip_forward").write_text(state["ip_forward"])
    # Bridges of networks that compose did not take down (a run that was killed).
    links = json.loads(run(["ip", "-json", "link", "show", "type", "bridge"]).stdout)
    for link in links:
        if link["ifname"].startswith("br-"):
            run(["ip", "link", "delete", link["ifname"]])
    if _rules(run(["iptables-save"]).stdout) != _rules(state["iptables"]):
        raise StackError(
            "the host's firewall is not as it was before the engine started:\n"
            + run(["iptables-save"]).stdout
        )


def _rules(saved: str) -> list[str]:
    """An iptables-save dump without its comments and packet counters."""
    return [
        re.sub(r" \[\d+:\d+\]$", "", line)
        for line in saved.splitlines()
        if not line.startswith("#")
    ]


def ensure_compose() -> Path:
    """Compose v2, built once from its Go module (``go install`` refuses a module whose
    go.mod has exclude directives, as compose's has)."""
    if COMPOSE.exists():
        return COMPOSE
    print(f"• Docker Compose {COMPOSE_VERSION}, built from its Go module (minutes, once) …")
    found = run(["go", "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"])
    module = json.loads(found.stdout)["Dir"]
    COMPOSE.parent.mkdir(parents=True, exist_ok=True)
    version = f"-X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}"
    run(
        ["go", "build", "-trimpath", "-ldflags", f"-s -w {version}", "-o", str(COMPOSE), "./cmd"],
        cwd=module,
    )
    return COMPOSE


def ensure_images(engine: Engine) -> dict[str, str]:
    """Each base image's variable and the image to use: the official one where it is here or
    can be pulled, else one made locally (once)."""
    chosen = {}
    for image in BASE_IMAGES:
        if _present(engine, image.official) or _pulled(engine, image.official):
            chosen[image.variable] = image.official
            continue
        kafka = image.variable == "KAFKA_IMAGE"
        # Kafka's is made again when what goes into it changes (a tool added, say).
        stale = kafka and _label(engine, image.local, RECIPE_LABEL) != _kafka_recipe()
        if not _present(engine, image.local) or stale:
            print(f"• {image.local} (no registry serves {image.official}) …", flush=True)
            if kafka:
                _make_kafka_image(engine, image)
            else:
                _debian_image(engine, image.local, image.packages)
        chosen[image.variable] = image.local
    return chosen


RECIPE_LABEL = "org.devolved-budgets-ledger.recipe"


def _kafka_tools() -> dict[str, str]:
    return {
        **KAFKA_TOOLS,
        "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    }


def _kafka_recipe() -> str:
    """A digest of everything the local Kafka image is made from."""
    made_from = [KAFKA_IMAGE_RECIPE, json.dumps(_kafka_tools()), KAFKA_LOG4J.read_text()]
    made_from.append((ROOT / "deploy" / "kafka" / "pom.xml").read_text())
    return hashlib.sha256("\0".join(made_from).encode()).hexdigest()


def _label(engine: Engine, name: str, label: str) -> str | None:
    if not _present(engine, name):
        return None
    labels = engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", name)
    found: dict[str, str] | None = json.loads(labels.stdout)
    return (found or {}).get(label)


def _present(engine: Engine, name: str) -> bool:
    return engine.docker("image", "ls", "--quiet", name).stdout.strip() != ""


def _pulled(engine: Engine, name: str) -> bool:
    try:
        engine.docker("pull", "--quiet", name, timeout=120)
    except (StackError, subprocess.TimeoutExpired):
        return False
    return True


def _debian_image(engine: Engine, name: str, packages: tuple[str, ...]) -> None:
    """Debian (minimal, with ``packages``) made by mmdebstrap and imported as ``name``; made
    into a file first, so that a failed bootstrap imports nothing."""
    tarball = ENGINE / f"{name.replace('/', '_').replace(':', '_')}.tar"
    try:
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                # Documentation and manuals are no use in a container.
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                # Java's packages register manual pages as alternatives, in a folder that must be.
                '--essential-hook=mkdir -p "$1/usr/share/man/man1"',
                DEBIAN_SUITE,
                str(tarball),
                *DEBIAN_SOURCES,
            ]
        )
        engine.docker("import", "--change", f"ENV PATH={PATH}", str(tarball), name)
    finally:
        tarball.unlink(missing_ok=True)


def _make_kafka_image(engine: Engine, image: BaseImage) -> None:
    java = f"{image.local}-java"
    if not _present(engine, java):
        _debian_image(engine, java, image.packages)
    context = LOCAL / "engine" / "kafka-image"
    shutil.rmtree(context, ignore_errors=True)
    (context / "bin").mkdir(parents=True)
    shutil.copytree(ensure_kafka_jars(), context / "libs")
    shutil.copy2(KAFKA_LOG4J, context / "log4j2.properties")
    log4j = "-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
    for name, main in _kafka_tools().items():
        quick = "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
        _script(context / "bin" / name, f"java {quick} {log4j} -cp '/opt/kafka/libs/*' {main}")
    heap = "${KAFKA_HEAP_OPTS:--Xmx1g}"
    _script(
        context / "bin" / "kafka-server-start.sh",
        f"java {heap} -XX:+UseG1GC {log4j} -cp '/opt/kafka/libs/*' kafka.Kafka",
    )
    (context / "Dockerfile").write_text(KAFKA_IMAGE_RECIPE)
    engine.docker(
        "build", "--quiet", "--build-arg", f"BASE={java}", "--label",
        f"{RECIPE_LABEL}={_kafka_recipe()}", "-t", image.local, str(context),
    )  # fmt: skip
    shutil.rmtree(context)


def _script(path: Path, command: str) -> None:
    path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    path.chmod(0o755)


def ensure_wheelhouse(pip: Path) -> None:
    """Every wheel the image installs, made on the host (which can reach an index), so that
    the image builds with no network (deploy/build/README.md)."""
    inputs = (ROOT / "constraints.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    stamp = WHEELHOUSE / ".made-from"
    digest = hashlib.sha256(inputs).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("• the image's wheels, made on the host …", flush=True)
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    run(
        [
            str(pip),
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(WHEELHOUSE),
            "--constraint",
            str(ROOT / "constraints.txt"),
            str(ROOT),
            "setuptools>=77",
        ]
    )
    stamp.write_text(digest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("start", "stop", "env"))
    command = parser.parse_args().command
    engine = Engine()
    try:
        if command == "start":
            engine.start()
            images = ensure_images(engine)
            ensure_wheelhouse(Path(sys.executable).parent / "pip")
            (ENGINE / "images.env").write_text(
                "".join(f"{name}={value}\n" for name, value in images.items())
            )
        elif command == "stop":
            engine.stop()
        else:
            for name, value in engine.environment().items():
                print(f"export {name}={shlex.quote(value)}")
    except (StackError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
