"""A slow, reordering link made in userspace, for a kernel without ``tc netem`` (this
machine's: "Specified qdisc kind is unknown"). iptables hands the link's packets to a
netfilter queue (``NFQUEUE``); this program, run inside the namespace, takes each packet's
metadata from that queue over nfnetlink and gives it its ACCEPT verdict ``--delay-ms``
later, or at once for the ``--reorder`` share, which thereby overtakes the packets still
held (as netem's ``reorder`` does). Only verdicts are sent: no packet is changed. The
rules carry ``--queue-bypass``, so that packets flow undelayed if this program is gone.

    ip netns exec NS python tests/faults/delay.py --queue 7 --delay-ms 50 --reorder 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1  # each packet's metadata, none of its bytes
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port
NFGEN_HEADER_LENGTH = 4


def _attribute(kind: int, payload: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(payload), kind) + payload
    return body + b"\0" * (-len(body) % 4)


def _request(kind: int, queue: int, attributes: bytes) -> bytes:
    """An nfnetlink_queue message: netlink's header, nfnetlink's (the queue, big-endian)."""
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attributes
    message_type = (NFNL_SUBSYS_QUEUE << 8) | kind
    return (
        NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), message_type, NLM_F_REQUEST, 0, 0) + body
    )


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    at = 0
    while at + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, at)
        if length < 4:
            break
        found[kind & 0x7FFF] = data[at + 4 : at + length]
        at += length + (-length % 4)
    return found


class Delayer:
    """Holds each queued packet ``delay`` seconds, but the ``reorder`` share."""

    def __init__(self, queue: int, delay: float, reorder: float) -> None:
        self._queue, self._delay, self._reorder = queue, delay, reorder
        self._random = random.Random(queue)  # a test's dice, not a secret
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._socket.bind((0, 0))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        command = struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)
        self._socket.send(_request(NFQNL_MSG_CONFIG, queue, _attribute(NFQA_CFG_CMD, command)))
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        self._socket.send(_request(NFQNL_MSG_CONFIG, queue, _attribute(NFQA_CFG_PARAMS, params)))
        self._socket.setblocking(False)  # noqa: FBT003 - the socket module's own signature

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.add_reader(self._socket.fileno(), self._readable, loop)
        loop.add_signal_handler(signal.SIGTERM, loop.stop)
        sys.stdout.write("holding\n")  # the queue is bound: packets wait for it from now on
        sys.stdout.flush()
        loop.run_forever()

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                data = self._socket.recv(1 << 16)
            except BlockingIOError:
                return
            at = 0
            while at + NLMSG_HEADER.size <= len(data):
                length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, at)
                if kind == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, at + NLMSG_HEADER.size)
                    if error:
                        raise OSError(-error, "nfnetlink_queue refused a request")
                elif kind & 0xFF == NFQNL_MSG_PACKET:
                    start = at + NLMSG_HEADER.size + NFGEN_HEADER_LENGTH
                    found = _attributes(data[start : at + length])
                    (packet,) = struct.unpack_from("!I", found[NFQA_PACKET_HDR])
                    if self._random.random() < self._reorder:
                        self._accept(packet)
                    else:
                        loop.call_later(self._delay, self._accept, packet)
                at += length + (-length % 4)

    def _accept(self, packet: int) -> None:
        verdict = _attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet))
        self._socket.send(_request(NFQNL_MSG_VERDICT, self._queue, verdict))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--reorder", type=float, default=0.0)
    args = parser.parse_args()
    Delayer(args.queue, args.delay_ms / 1000, args.reorder).run()


if __name__ == "__main__":
    main()
