"""HAProxy driven through its runtime API (nfvha.drivers.loadbalancer): one real HAProxy in
front of small HTTP servers (subprocesses on free loopback ports). Requests are spread over
the pool; a server put in maintenance leaves the pool with no request failing; a killed server
is seen by HAProxy's checks and reported by ``watch`` while requests go on through the other;
``set_addr`` moves a slot to a new server with the same HAProxy process; bad commands and an
unreachable socket raise clear errors. Every process and file is removed, also on failure."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfvha.drivers.loadbalancer import (
    HaproxyConfig,
    HaproxyError,
    HaproxyUnreachable,
    LoadBalancer,
    Server,
    ServerState,
    parse_servers_state,
)
from tests.integration.support.deployments import free_tcp_port

BACKEND = r"""
import asyncio, sys
name, port = sys.argv[1], int(sys.argv[2])

async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        body = name.encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        if os.geteuid() == 0:
            pytest.fail("haproxy is missing although we are root: `make daemons` installs it")
        pytest.skip("haproxy is not installed (Debian package haproxy; as root, `make daemons`)")
    return found


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"backend on port {port} exited ({proc.returncode})"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise AssertionError(f"backend on port {port} not listening after {timeout}s")


@dataclass
class Lab:
    runtime_dir: Path
    frontend: str = field(default_factory=lambda: f"127.0.0.1:{free_tcp_port()}")
    backends: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    lb: LoadBalancer | None = None

    def backend(self, name: str) -> int:
        port = free_tcp_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", BACKEND, name, str(port)], start_new_session=True
        )
        self.backends[name] = (proc, port)
        wait_listening(port, proc)
        return port

    def kill(self, name: str) -> None:
        proc, _ = self.backends[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def start(self, *names: str) -> LoadBalancer:
        servers = [Server(n, f"127.0.0.1:{self.backend(n)}") for n in names]
        self.lb = LoadBalancer(
            self.runtime_dir, self.frontend, servers, binary=haproxy_binary(), inter_ms=50
        )
        self.lb.start()
        return self.lb

    def close(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for name in self.backends:
            self.kill(name)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    haproxy_binary()
    # short: a Unix socket path must fit in 108 bytes
    lab = Lab(Path(tempfile.mkdtemp(prefix="nfvha-lb-")))
    try:
        yield lab
    finally:
        lab.close()
        assert not lab.runtime_dir.exists()


async def get(address: str, timeout: float = 2.0) -> str:
    """One HTTP request on one connection: the body of a 200, else raises."""
    host, port = address.rsplit(":", 1)

    async def exchange() -> str:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"answer {head[:40]!r}")
        return body.decode()

    return await asyncio.wait_for(exchange(), timeout)


@dataclass
class Client:
    """Requests one after another until stopped: (start time, answering server or None)."""

    address: str
    answers: list[tuple[float, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                self.answers.append((t, await get(self.address)))
            except (OSError, RuntimeError, TimeoutError) as e:
                self.answers.append((t, None))
                self.errors.append(repr(e))
            await asyncio.sleep(0.002)

    def since(self, t: float) -> list[str | None]:
        return [who for start, who in self.answers if start > t]


async def wait_state(lb: LoadBalancer, name: str, oper: str, timeout: float = 5.0) -> ServerState:
    """Until HAProxy's checks have seen ``name`` in ``oper`` (HAProxy counts a server up before
    its first check, and on leaving maintenance before the next one)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await lb.server(name)
        if state.oper == oper and state.check_passed == (oper == "up"):
            return state
        assert time.monotonic() < deadline, f"{name} not {oper} after {timeout}s: {state}"
        await asyncio.sleep(0.02)


def test_config_render_and_state_parsing(tmp_path: Path) -> None:
    config = HaproxyConfig(
        tmp_path, "127.0.0.1:8080", (Server("a", "127.0.0.1:9001"), Server("spare")), fall=3
    )
    text = config.render()
    assert f"stats socket {tmp_path}/admin.sock mode 600 level admin" in text
    assert "default-server check inter 100ms fall 3 rise 2" in text
    assert "option httpchk GET /" in text and "server spare 127.0.0.1:1 disabled" in text
    assert "httpchk" not in HaproxyConfig(tmp_path, "127.0.0.1:1", config.servers, "tcp").render()
    with pytest.raises(ValueError, match="server name"):
        Server("a b", "127.0.0.1:1")
    with pytest.raises(ValueError, match="IP:PORT"):
        Server("a", "localhost")
    with pytest.raises(ValueError, match="too long"):
        HaproxyConfig(tmp_path / ("x" * 120), "127.0.0.1:1", config.servers)
    answer = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight"
        " srv_iweight srv_time_since_last_change srv_check_status srv_check_result"
        " srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id"
        " srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr"
        " srv_agent_port\n"
        "3 pool 1 a 127.0.0.1 2 0 1 1 1 15 3 2 6 0 0 0 - 18081 - 0 0 - - 0\n"
        "3 pool 2 b 127.0.0.1 0 1 1 1 3 8 2 0 14 0 0 0 - 18082 - 0 0 - - 0\n"
        "3 pool 3 c 127.0.0.1 2 4 1 1 1 15 3 2 6 0 0 0 - 18083 - 0 0 - - 0\n\n"
    )
    a, b, c = parse_servers_state(answer)
    assert (a.name, a.address, a.admin, a.oper, a.check_status, a.up) == (
        "a", "127.0.0.1:18081", "ready", "up", "L7OK", True,
    )  # fmt: skip
    assert (b.admin, b.oper, b.check_status, b.up) == ("maint", "down", "L4CON", False)
    assert c.admin == "ready"  # CMAINT alone (configured disabled, since set ready)
    with pytest.raises(HaproxyError, match="unexpected answer"):
        parse_servers_state("No such backend.\n")


def test_requests_spread_over_both(lab: Lab) -> None:
    lb = lab.start("a", "b")

    async def scenario() -> tuple[list[ServerState], list[str]]:
        await wait_state(lb, "a", "up")
        await wait_state(lb, "b", "up")
        return await lb.servers(), [await get(lab.frontend) for _ in range(40)]

    states, answers = asyncio.run(scenario())
    assert [(s.name, s.admin, s.oper, s.check_status) for s in states] == [
        ("a", "ready", "up", "L7OK"),
        ("b", "ready", "up", "L7OK"),
    ]
    assert states[0].address == f"127.0.0.1:{lab.backends['a'][1]}"
    assert answers.count("a") >= 15 and answers.count("b") >= 15, answers


def test_maint_takes_server_out_with_no_failed_request(lab: Lab) -> None:
    lb = lab.start("a", "b")

    async def scenario() -> tuple[Client, float, ServerState, float]:
        await wait_state(lb, "b", "up")
        client, stop = Client(lab.frontend), asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await asyncio.sleep(0.3)
        await lb.set_state("b", "maint")
        t_maint = time.monotonic()
        await asyncio.sleep(0.5)
        b = await lb.server("b")
        await lb.set_state("b", "ready")
        t_ready = time.monotonic()
        await asyncio.sleep(0.3)
        stop.set()
        await task
        return client, t_maint, b, t_ready

    client, t_maint, b, t_ready = asyncio.run(scenario())
    assert client.errors == [], client.errors
    during = [who for t, who in client.answers if t_maint < t < t_ready]
    assert len(during) > 20 and set(during) == {"a"}, during
    assert (b.admin, b.oper) == ("maint", "down")
    assert "b" in client.since(t_ready)  # back in the pool


def test_killed_server_seen_by_checks_and_reported_by_watch(lab: Lab) -> None:
    lb = lab.start("a", "b")
    events: list[tuple[float, ServerState, ServerState | None]] = []

    async def scenario() -> tuple[Client, float, float]:
        await wait_state(lb, "a", "up")
        await wait_state(lb, "b", "up")
        watcher = asyncio.create_task(
            lb.watch(0.02, lambda s, p: events.append((time.monotonic(), s, p)))
        )
        client, stop = Client(lab.frontend), asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await asyncio.sleep(0.3)
        lab.kill("a")
        t_kill = time.monotonic()
        deadline = t_kill + 5
        while not any(s.name == "a" and s.oper == "down" for _, s, _ in events):
            assert time.monotonic() < deadline, f"no 'a down' from watch: {events}"
            await asyncio.sleep(0.01)
        t_down = time.monotonic()
        await asyncio.sleep(1.0)  # a request retried before t_down waits min(connect, 1 s)
        stop.set()
        await task
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        return client, t_kill, t_down

    client, t_kill, t_down = asyncio.run(scenario())
    first = {s.name: (s.oper, p) for _, s, p in events[:2]}
    assert first == {"a": ("up", None), "b": ("up", None)}
    changes = [(s.name, p.oper if p else None, s.oper, s.check_status) for _, s, p in events[2:]]
    assert changes == [("a", "up", "down", "L4CON")], changes
    seen_after = next(t for t, s, _ in events[2:]) - t_kill
    assert seen_after < 2.0, seen_after  # inter 50 ms x fall 2, plus the poll
    after = client.since(t_down)
    assert len(after) > 20 and set(after) == {"b"}, after
    # the retries (option redispatch) hid the dead server from the consumer before the checks saw it
    assert client.errors == [], client.errors


def test_set_addr_moves_a_slot_without_restart(lab: Lab) -> None:
    lb = lab.start("a", "b")
    pid = lb.pid
    c_port = lab.backend("c")

    async def scenario() -> tuple[ServerState, list[str]]:
        await wait_state(lb, "a", "up")
        lab.kill("a")
        await wait_state(lb, "a", "down")
        await lb.set_state("a", "maint")
        await lb.set_addr("a", "127.0.0.1", c_port)
        await lb.set_state("a", "ready")
        moved = await wait_state(lb, "a", "up")
        return moved, [await get(lab.frontend) for _ in range(20)]

    moved, answers = asyncio.run(scenario())
    assert moved.address == f"127.0.0.1:{c_port}" and moved.check_status == "L7OK"
    assert set(answers) == {"b", "c"}, answers
    assert lb.pid == pid and lb.process is not None and lb.process.poll() is None


def test_bad_commands_and_unreachable_socket(lab: Lab) -> None:
    lb = lab.start("a")
    socket_path = lb.socket

    async def scenario() -> None:
        with pytest.raises(HaproxyError, match="Unknown command"):
            await lb.command("show nonsense")
        with pytest.raises(HaproxyError, match="No such server"):
            await lb.set_state("nosuch", "maint")
        with pytest.raises(HaproxyError, match="No such server"):
            await lb.set_addr("nosuch", "127.0.0.1", 1)
        with pytest.raises(ValueError, match="expected 'ready'"):
            await lb.set_state("a", "sleep")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="one runtime API command"):
            await lb.command("show info; show stat")
        with pytest.raises(ValueError):
            await lb.set_addr("a", "not-an-ip", 1)
        with pytest.raises(ValueError, match="server name"):
            await lb.set_state("a/../b", "maint")
        assert (await lb.server("a")).admin == "ready"  # nothing was changed by the above

    asyncio.run(scenario())
    lb.stop()
    assert not socket_path.exists()
    with pytest.raises(HaproxyUnreachable, match=str(socket_path)):
        asyncio.run(lb.servers())
