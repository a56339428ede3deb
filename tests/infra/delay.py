#!/usr/bin/env python3
"""Holds every packet of an NFQUEUE queue for a fixed time, then accepts it: netem's `delay` for
kernels built without sch_netem (CONFIG_NET_SCH_NETEM unset), which tests/infra/nodes.sh falls
back to. Standard library only: it speaks nfnetlink_queue over a raw netlink socket.

Packets are copied as metadata only (no payload), and released in arrival order with one batch
verdict per due prefix: ids grow with arrival and the delay is the same for all, so the packets due
at any moment are exactly those up to some id, and a verdict lost to a full socket buffer is
covered by the next one.

    delay.py --queue N --ms MS [--ready FILE]
"""
import argparse
import os
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

NETLINK_NETFILTER = 12
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQA_CFG_F_GSO = 1 << 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def message(msg, queue, attrs, flags=NLM_F_REQUEST):
    # nfgenmsg: family AF_UNSPEC, version 0, resource id (the queue) big-endian.
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + b"".join(attrs)
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def configure(sock, queue, attrs):
    sock.send(message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK))
    data = sock.recv(65536)
    length, kind = struct.unpack_from("=IH", data)
    if kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", data, 16)
        if err != 0:
            raise OSError(-err, f"nfqueue config of queue {queue}: {os.strerror(-err)}")


def packet_ids(data):
    """The packet ids of every NFQNL_MSG_PACKET message in one receive."""
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20  # nlmsghdr (16) + nfgenmsg (4)
            while a + 4 <= off + length:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, a + 4)[0]
                    break
                a += (alen + 3) & ~3
        off += (length + 3) & ~3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--ms", type=float, required=True)
    ap.add_argument("--ready", help="file to create once the queue is bound")
    args = ap.parse_args()
    delay = args.ms / 1000.0

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    sock.bind((0, 0))
    q = args.queue
    configure(sock, q, [attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))])
    configure(sock, q, [attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))])
    # Room for what arrives within the delay at full speed; beyond it the kernel would drop.
    configure(sock, q, [attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))])
    # GSO packets stay whole (we never look at the payload).
    configure(sock, q, [attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO)),
                        attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO))])
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    held = deque()  # (due time, packet id), in arrival order
    while True:
        timeout = None
        if held:
            timeout = max(0.0, held[0][0] - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        now = time.monotonic()
        while ready:
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            for pid in packet_ids(data):
                held.append((now + delay, pid))
        last = None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            verdict = attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))
            sock.send(message(NFQNL_MSG_VERDICT_BATCH, q, [verdict]))


if __name__ == "__main__":
    main()
