"""A network namespace of the suite's own, joined to the host by a pair of virtual Ethernet
devices, for a service whose network the suite breaks: ``ip netns`` and ``tc`` (iproute2)
on the link and ``iptables`` inside the namespace, which leave the host's own network as
they found it. The host end has ``host`` (PostgreSQL and Kafka listen there too), the
namespace's end ``inside``; nothing is routed or forwarded anywhere else.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Namespace", "namespace"]

_QUEUE = 7  # the netfilter queue the delayer reads; queues are per namespace


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Namespace:
    name: str
    host_device: str
    inside_device: str
    host: str  # the host's address on the link
    inside: str  # the namespace's address on the link

    @property
    def wrapper(self) -> list[str]:
        """What runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _inside(self, *command: str) -> None:
        subprocess.run([*self.wrapper, *command], check=True, capture_output=True, text=True)

    def cut(self, port: int) -> None:
        """Partition the namespace from the host's ``port``: every packet to it dropped,
        as a firewall or a dead switch port would (no reset: connections hang)."""
        self._inside("iptables", "-A", "OUTPUT", "-d", self.host, "-p", "tcp",
                     "--dport", str(port), "-j", "DROP")  # fmt: skip

    def impair(self, loss: float, rate: str) -> None:
        """A poor link, both ways: each packet lost with probability ``loss`` (iptables'
        statistic match), and the link slowed to ``rate`` with up to 300 ms of queue (a
        token bucket, ``tc tbf``). Fixed delay and reordering: :meth:`delayed`."""
        for chain in ("INPUT", "OUTPUT"):
            self._inside("iptables", "-A", chain, "-m", "statistic", "--mode", "random",
                         "--probability", str(loss), "-j", "DROP")  # fmt: skip
        shaping = ["root", "tbf", "rate", rate, "burst", "16kbit", "latency", "300ms"]
        self._inside("tc", "qdisc", "add", "dev", self.inside_device, *shaping)
        subprocess.run(
            ["tc", "qdisc", "add", "dev", self.host_device, *shaping],
            check=True,
            capture_output=True,
        )

    @contextmanager
    def delayed(self, delay_ms: float, reorder: float) -> Iterator[None]:
        """A slow link that reorders, both ways: each packet crossing it held ``delay_ms``
        but the ``reorder`` share, which overtakes them (tests/faults/delay.py, since this
        machine's kernel has no netem). Undone on the way out."""
        rules = (("INPUT", "-i"), ("OUTPUT", "-o"))
        for chain, direction in rules:
            self._inside("iptables", "-A", chain, direction, self.inside_device, "-j",
                         "NFQUEUE", "--queue-num", str(_QUEUE), "--queue-bypass")  # fmt: skip
        try:
            with subprocess.Popen(
                [*self.wrapper, sys.executable, str(Path(__file__).with_name("delay.py")),
                 "--queue", str(_QUEUE), "--delay-ms", str(delay_ms), "--reorder", str(reorder)],
                stdout=subprocess.PIPE,
                text=True,
            ) as delayer:  # fmt: skip
                try:
                    # Until it holds the queue, the rules let packets by (--queue-bypass).
                    assert delayer.stdout is not None
                    assert delayer.stdout.readline().strip() == "holding"
                    yield
                finally:
                    delayer.terminate()
        finally:
            for chain, direction in rules:
                self._inside("iptables", "-D", chain, direction, self.inside_device, "-j",
                             "NFQUEUE", "--queue-num", str(_QUEUE), "--queue-bypass")  # fmt: skip

    def heal(self) -> None:
        """Every cut and impairment undone."""
        for chain in ("INPUT", "OUTPUT"):
            self._inside("iptables", "-F", chain)
        for wrapper, device in ((self.wrapper, self.inside_device), ([], self.host_device)):
            subprocess.run(
                [*wrapper, "tc", "qdisc", "del", "dev", device, "root"],
                check=False,  # none was added
                capture_output=True,
            )


@contextmanager
def namespace(subnet: int) -> Iterator[Namespace]:
    """A namespace on link 10.231.``subnet``.0/30; deleted, with its link, on the way out."""
    suffix = uuid.uuid4().hex[:6]
    made = Namespace(
        name=f"ledger-faults-{suffix}",
        host_device=f"lfh{suffix}",
        inside_device=f"lfn{suffix}",
        host=f"10.231.{subnet}.1",
        inside=f"10.231.{subnet}.2",
    )
    _ip("netns", "add", made.name)
    try:
        _ip("link", "add", made.host_device, "type", "veth", "peer", "name", made.inside_device)
        _ip("link", "set", made.inside_device, "netns", made.name)
        _ip("addr", "add", f"{made.host}/30", "dev", made.host_device)
        _ip("link", "set", made.host_device, "up")
        for command in (
            ["addr", "add", f"{made.inside}/30", "dev", made.inside_device],
            ["link", "set", made.inside_device, "up"],
            ["link", "set", "lo", "up"],
        ):
            _ip("-n", made.name, *command)
        yield made
    finally:
        subprocess.run(["ip", "link", "del", made.host_device], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", made.name], check=False, capture_output=True)
