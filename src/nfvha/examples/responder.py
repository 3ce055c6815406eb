"""The responder: a plain UDP daemon without the SDK, for hot standby behind a virtual IP.

    GET <seq> | INC <seq>   answered ``OK <seq> 0 <name>`` (the probe's counter answer: good,
                            attributed to ``<name>``; total 0, it keeps no state)
    else                    ``ERR unknown request``

It binds its address with ``IP_FREEBIND``, so it can be prestarted on a virtual IP that its node
does not hold yet (keepalived's classic use): only the VIP's holder receives its traffic. It
knows nothing of any manager, role or peer, and runs until SIGTERM or SIGINT (exit 0) or
SIGKILL.

Configuration: ``--name`` (default ``$NFVHA_VNFC``, else the host name) and ``--address``
``HOST:PORT`` (default ``$NFVHA_SERVICE_ADDRESS``). ``ready`` is printed on stdout once bound.
Run it as ``python -m nfvha.examples.responder``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux's value; Python names it from 3.12


def answer(request: bytes, name: bytes) -> bytes:
    parts = request.split()
    if len(parts) == 2 and parts[0] in (b"GET", b"INC") and parts[1].isdigit():
        return b"OK %s 0 %s" % (parts[1], name)
    return b"ERR unknown request"


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((host, int(port)))
    return sock


def serve(sock: socket.socket, name: str) -> None:
    label = name.encode()
    while True:
        data, peer = sock.recvfrom(2048)
        # An unreachable peer (its node cut off) fails this answer only, not the daemon.
        with contextlib.suppress(OSError):
            sock.sendto(answer(data, label), peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=os.environ.get("NFVHA_VNFC") or socket.gethostname())
    parser.add_argument("--address", default=os.environ.get("NFVHA_SERVICE_ADDRESS"))
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("--address HOST:PORT (or NFVHA_SERVICE_ADDRESS) is required")
    if any(c.isspace() for c in args.name) or not args.name:
        parser.error(f"--name must be one word, got {args.name!r}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sock = bind(args.address)
    except (OSError, ValueError) as exc:
        print(f"responder: cannot bind {args.address}: {exc}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        serve(sock, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
