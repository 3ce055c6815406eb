"""Consumers of the counter from inside a test: one request at a time, or a steady stream
in the test's event loop (beside an in-process engine)."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.integration.support.waiting import PATIENCE_S


def parse_answer(data: bytes) -> tuple[int, int, str] | None:
    parts = data.split()
    if len(parts) == 4 and parts[0] == b"OK" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2]), parts[3].decode()
    return None


class UdpClient:
    """A consumer inside the test's event loop (the in-process engine shares that loop)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.addr = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    async def request(self, op: str, timeout_s: float = 5.0) -> tuple[int, str] | None:
        """(total, vnfc) of the answer to one request, None if none came (a lost datagram)."""
        loop = asyncio.get_running_loop()
        self.seq += 1
        seq = self.seq
        try:
            await loop.sock_sendto(self.sock, f"{op} {seq}".encode(), self.addr)
        except OSError:
            return None
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), remaining)
            except TimeoutError:
                return None
            except OSError:  # ICMP port unreachable from an earlier datagram: nobody serves
                await asyncio.sleep(0.01)
                continue
            answer = parse_answer(data)
            if answer and answer[0] == seq:
                return answer[1], answer[2]
        return None

    async def get_until_answered(self, timeout_s: float = PATIENCE_S) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = await self.request("GET", timeout_s=0.5)
            if answer is not None:
                return answer
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer to GET from {self.addr}")


def udp_request(
    address: str, op: str, seq: int = 1, timeout_s: float = 0.5
) -> tuple[int, str] | None:
    """One blocking ``OP seq`` for tests without an event loop: (total, vnfc) of an OK answer,
    None for no answer or an ERR."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout_s)
        try:
            s.sendto(f"{op} {seq}".encode(), (host, int(port)))
            answer = parse_answer(s.recv(2048))
        except OSError:
            return None
    return (answer[1], answer[2]) if answer else None


def udp_get(address: str, timeout_s: float = 0.5) -> tuple[int, str] | None:
    return udp_request(address, "GET", 1, timeout_s)


class Consumer:
    """Sends INC requests one after another (a few ms apart) from inside the test's event loop
    and records every good answer as (t_ns, total, vnfc); t_ns is on the trace's clock."""

    def __init__(self, address: str, pause_s: float = 0.002) -> None:
        self.client = UdpClient(address)
        self.pause_s = pause_s
        self.answers: list[tuple[int, int, str]] = []
        self.sent = 0
        self._stop = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            self.sent += 1
            answer = await self.client.request("INC", timeout_s=0.2)
            if answer is not None:
                self.answers.append((time.monotonic_ns(), answer[0], answer[1]))
            await asyncio.sleep(self.pause_s)

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        self.client.close()

    def answered_after(self, t_ns: int) -> int:
        return sum(1 for t, _, _ in self.answers if t > t_ns)

    def lost(self) -> int:
        """Acknowledged increments lost: answers whose total is not above every total
        acknowledged before them (each INC adds one, answered once durable)."""
        lost, best = 0, 0
        for _, total, _ in self.answers:
            if total <= best:
                lost += 1
            best = max(best, total)
        return lost

    def runs(self) -> list[str]:
        """Who answered, consecutive answers of one VNFC collapsed: [a, b] is one failover;
        [a, b, a] would mean two VNFCs served at once (or one failover too many)."""
        out: list[str] = []
        for _, _, vnfc in self.answers:
            if not out or out[-1] != vnfc:
                out.append(vnfc)
        return out
