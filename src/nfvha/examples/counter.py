"""The counter: a small stateful UDP service, the example VNFC.

    INC <seq>   add 1; answered ``OK <seq> <total> <vnfc>`` only once the increment is durable,
                ``ERR <reason>`` when it could not be made durable (it is then not counted)
    GET <seq>   answered ``OK <seq> <total> <vnfc>`` with the last durable total
    else        ``ERR <reason>``

Managed by nfvha it binds the service port only when it is made active, reads the state it is
given before it serves, and checkpoints every increment. It outlives its manager: while the
manager is away it goes on serving (increments too, unless its VNF's ``state_sync`` is
``manager``: ``ERR no manager`` then) as long as its role lease holds, and unbinds the port
once it expires. It runs until SIGTERM or SIGINT. ``--stateless`` keeps no counter (the total
is always 0): the stateless VNF of use cases 5 and 7. ``--standalone`` runs it without a
manager (used to measure its own start-up time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import cast

from nfvha.sdk import ENV_ADDRESS, ENV_VNFC, Assignment, CheckpointRefused, Component


class Counter(asyncio.DatagramProtocol):
    def __init__(self, name: str, component: Component | None, stateless: bool) -> None:
        self.name, self.component, self.stateless = name, component, stateless
        self.total = 0  # counted, including increments still on their way to durability
        self.durable = 0  # acknowledged: what GET answers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a UDP endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        parts = data.split()
        if len(parts) != 2 or parts[0] not in (b"INC", b"GET") or not parts[1].isdigit():
            self._reply(b"ERR expected 'INC <seq>' or 'GET <seq>'", addr)
        elif parts[0] == b"GET" or self.stateless:
            self._reply(self._ok(parts[1], self.durable), addr)
        else:
            self.total += 1
            if self.component is None:
                self.durable = self.total
                self._reply(self._ok(parts[1], self.total), addr)
            else:
                asyncio.ensure_future(self._durable_inc(parts[1], self.total, addr))

    async def _durable_inc(self, seq: bytes, total: int, addr: tuple[str, int]) -> None:
        try:
            await self.component.checkpoint({"total": total})
        except CheckpointRefused as exc:
            # Count on from what is durable: a refused increment was never acknowledged.
            if exc.state is not None:
                self.durable = int(exc.state.get("total", 0))
            self.total = self.durable
            self._reply(f"ERR {exc}".encode(), addr)
            return
        self.durable = max(self.durable, total)
        self._reply(self._ok(seq, total), addr)

    def _ok(self, seq: bytes, total: int) -> bytes:
        return b"OK %s %d %s" % (seq, total, self.name.encode())

    def _reply(self, payload: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(payload, addr)


async def serve(host: str, port: int, counter: Counter, reuse_port: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))  # fails while another process holds the address: never two actives
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: counter, sock=sock)


async def run_managed(stateless: bool) -> None:
    """Serve until SIGTERM or SIGINT: the manager going away does not stop the service (the SDK
    reconnects), only a lease that expires does (``stop_serving``)."""
    counter = Counter(os.environ.get(ENV_VNFC, "counter"), None, stateless)

    async def take_role(assignment: Assignment) -> None:
        counter.total = counter.durable = int(component.state.get("total", 0))
        if assignment.role == "active" and counter.transport is None:
            await serve(assignment.host, assignment.port, counter, assignment.reuse_port)
        elif assignment.role != "active":  # stepping down (a switchover): serve no more
            await stop_serving()

    async def stop_serving() -> None:
        """Fenced: no longer active. Unbind the port, so that the next active can bind it (and
        this one again, if it is made active later)."""
        if counter.transport is not None:
            counter.transport.close()
            counter.transport = None
            await asyncio.sleep(0)  # the socket is closed in the callback close() scheduled

    component = Component.from_env(on_role=take_role, on_fence=stop_serving)
    counter.component = None if stateless else component
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, component.close)
    await component.connect()
    await component.closed  # resolved by close(): on SIGTERM or SIGINT
    if counter.transport is not None:
        counter.transport.close()


async def run_standalone(address: str, stateless: bool) -> None:
    host, _, port = address.rpartition(":")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(host, int(port), Counter("standalone", None, stateless), reuse_port=False)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nfvha-counter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stateless", action="store_true", help="keep no counter")
    parser.add_argument("--standalone", action="store_true", help="run without a manager")
    parser.add_argument("--address", default=os.environ.get(ENV_ADDRESS, "127.0.0.1:7700"))
    args = parser.parse_args(argv)
    try:
        if args.standalone:
            asyncio.run(run_standalone(args.address, args.stateless))
        else:
            asyncio.run(run_managed(args.stateless))
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"nfvha-counter: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
