"""The probe's long-lived tcp connections (``--long-lived``: resets, reconnects, the outage
across a server's death and restart) and its sockets in a network namespace (``--netns``).

The server is a real process: killed, its connections end as the kernel closes them; started
again on the same port, the probe's reopened connections reach it. Every test stops what it
started; the namespace test removes its provider network and checks nothing of it is left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from nfvha.drivers import network
from nfvha.drivers.network import ProviderNetwork
from tests.integration.support.deployments import free_udp_port
from tests.integration.support.networks import provider_network
from tests.integration.support.processes import kill_and_reap
from tests.integration.support.runs import NFVHA, cli
from tests.integration.support.waiting import wait_for_sync

# Answers each request line "OP SEQ" with the counter's "OK SEQ 0 NAME" (NAME "peer" means
# the client's address as the server sees it), on tcp (any number of connections) and udp,
# on the same port. Prints "ready" once listening, "served N" once N answers are sent, and
# "connection K served N" once its Kth tcp connection (from 1, in accept order) sent N.
SERVER = textwrap.dedent(
    """
    import selectors, socket, sys
    host, port, name, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sel = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    sel.register(listener, selectors.EVENT_READ)
    sel.register(udp, selectors.EVENT_READ)
    total = 0

    def answer(line, peer):
        seq = line.split()[1].decode()
        who = peer[0] if name == "peer" else name
        return f"OK {seq} 0 {who}".encode()

    def served(count, k=None):
        global total
        total += count
        if total - count < report <= total:
            print(f"served {report}", flush=True)
        if k is not None:
            counts[k] += count
            if counts[k] - count < report <= counts[k]:
                print(f"connection {k} served {report}", flush=True)

    print("ready", flush=True)
    buffers, counts = {}, {}
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is listener:
                conn, peer = listener.accept()
                buffers[conn] = (b"", peer, len(counts) + 1)
                counts[len(counts) + 1] = 0
                sel.register(conn, selectors.EVENT_READ)
            elif sock is udp:
                data, peer = udp.recvfrom(512)
                udp.sendto(answer(data, peer), peer)
                served(1)
            else:
                pending, peer, k = buffers[sock]
                try:
                    data = sock.recv(4096)
                    *lines, rest = (pending + data).split(b"\\n")
                    buffers[sock] = (rest, peer, k)
                    sock.sendall(b"".join(answer(line, peer) + b"\\n" for line in lines))
                except OSError:  # the client gave up on this connection
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    del buffers[sock]
                    continue
                served(len(lines), k)
    """
)

REPORT_AFTER = 20  # answers a server gives before it says so


class Servers:
    """The servers a test started; all stopped at its end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, host: str, port: int, name: str, netns: str | None = None) -> Server:
        cmd = [sys.executable, "-c", SERVER, host, str(port), name, str(REPORT_AFTER)]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        server = Server(proc)
        server.expect("ready")
        return server

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kill_and_reap([proc.pid])
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


class Server:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def expect(self, wanted: Callable[[str], bool] | str) -> str:
        """Blocks until the server prints a line that is (or satisfies) ``wanted``, skipping
        others (the test's timeout bounds the wait); that line."""
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            line = line.strip()
            if line == wanted or (callable(wanted) and wanted(line)):
                return line
        raise AssertionError(f"server exited ({self.proc.poll()}) without saying {wanted!r}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.stop_all()


class Probe:
    """``nfvha probe --json`` in the background, stopped by SIGTERM (it reports what it saw)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [NFVHA, "probe", "--json", "--duration", "120", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_and_reap([self.proc.pid])
        self.proc.communicate(timeout=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("connections", [1, 2])
def test_long_lived_connections_survive_a_server_restart(
    servers: Servers, connections: int
) -> None:
    port = free_udp_port()
    first = servers.start("127.0.0.1", port, "first")
    probe = Probe(
        f"tcp://127.0.0.1:{port}",
        "--long-lived",
        "--connections",
        str(connections),
        "--interval-ms",
        "5",
        "--timeout-ms",
        "10000",  # only the kill may end a connection, however slow this machine is
    )
    try:
        first.expect(f"served {REPORT_AFTER}")
        first.kill()
        second = servers.start("127.0.0.1", port, "second")
        second.expect(f"served {REPORT_AFTER}")
        result = probe.stop()
    finally:
        probe.kill()
    assert result["kind"] == "tcp" and result["connections"] == connections
    # Every connection was open when the server died; each saw it, and came back. A reopening
    # at once may still reach the dying server (the kernel completes the handshake while its
    # listener is not closed yet) and be reset again: more resets, each with its reconnect.
    assert result["resets"] >= connections, result
    assert result["reconnects"] == result["resets"], result
    assert set(result["error_kinds"]) <= {"closed", "reset", "broken pipe", "refused"}, result
    # Good answers from the first server, then only from the second: the outage is the gap
    # between the last answer of the first and the first answer of the second.
    runs = result["runs"]
    assert [r["vnfc"] for r in runs] == ["first", "second"], runs
    assert result["outage_from_ns"] == runs[0]["to_ns"] < runs[1]["from_ns"]
    assert result["outage_to_ns"] == runs[1]["from_ns"]
    assert result["outage_ms"] == pytest.approx((runs[1]["from_ns"] - runs[0]["to_ns"]) / 1e6)
    assert result["answered"] == runs[0]["count"] + runs[1]["count"] <= result["sent"]
    assert result["lost"] == 0 and not result["interleaved"]


def accept_queue(port: int) -> int:
    """Connections the kernel completed on the listener at 127.0.0.1:``port`` that are not
    accepted yet (/proc/net/tcp shows a listener's accept queue as its rx_queue)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            fields = row.split()
            if fields[1] == local and fields[3] == "0A":  # LISTEN
                return int(fields[4].split(":")[1], 16)
    return 0


def reopened_and_served(line: str) -> bool:
    """A connection after the first one has been answered REPORT_AFTER times."""
    said = re.fullmatch(rf"connection (\d+) served {REPORT_AFTER}", line)
    return said is not None and int(said[1]) > 1


@pytest.mark.timeout(60)
def test_a_hung_server_times_long_lived_connections_out(servers: Servers) -> None:
    """A stopped server answers nothing, but its kernel still completes connections: the
    probe's request times out (a reset), the connection is reopened (a reconnect) into the
    listener's queue; once the server goes on, a reopened connection is answered."""
    port = free_udp_port()
    server = servers.start("127.0.0.1", port, "only")
    # A connection given up unanswered carries at most timeout / interval + 1 requests: 11,
    # fewer than REPORT_AFTER, so only a connection the probe kept gets that many answers.
    probe = Probe(
        f"tcp://127.0.0.1:{port}", "--long-lived", "--interval-ms", "5", "--timeout-ms", "50"
    )
    try:
        server.expect(f"served {REPORT_AFTER}")
        server.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for_sync(lambda: accept_queue(port) >= 1, "the probe reopening its connection")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        server.expect(reopened_and_served)
        result = probe.stop()
    finally:
        probe.kill()
    assert result["resets"] >= 1 and result["reconnects"] >= 1, result
    assert result["error_kinds"].get("timeout", 0) >= 1, result
    assert [r["vnfc"] for r in result["runs"]] == ["only"]
    assert 0 < result["outage_from_ns"] < result["outage_to_ns"] < result["runs"][0]["to_ns"]


@pytest.mark.timeout(60)
def test_long_lived_to_nobody_is_refused_and_never_a_reset() -> None:
    """Never open, never lost: refusals are errors, not resets or reconnects."""
    done = cli(
        "probe",
        f"tcp://127.0.0.1:{free_udp_port()}",
        "--long-lived",
        "--json",
        "--interval-ms",
        "5",
        "--duration",
        "0.2",
    )
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["connections"] == 1 and result["answered"] == 0
    assert result["resets"] == result["reconnects"] == 0
    assert result["error_kinds"] == {"refused": result["errors"]} and result["errors"] > 0


@pytest.mark.timeout(60)
def test_other_modes_report_no_resets() -> None:
    done = cli("probe", f"udp://127.0.0.1:{free_udp_port()}", "--json", "--duration", "0.1")
    result = json.loads(done.stdout)
    assert result["connections"] == result["resets"] == result["reconnects"] == 0
    assert result["netns"] == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("udp://127.0.0.1:7000", "--long-lived"), "long-lived connections are for tcp://"),
        (("http://127.0.0.1:7000/", "--long-lived"), "long-lived connections are for tcp://"),
        (("tcp://127.0.0.1:7000", "--connections", "2"), "--connections applies to"),
        (("tcp://127.0.0.1:7000", "--netns", "nfvha-no-such-ns"), "no network namespace"),
        (("tcp://127.0.0.1:7000", "--netns", "../etc"), "bad network namespace name"),
    ],
)
def test_probe_refuses_what_it_cannot_do(args: tuple[str, ...], said: str) -> None:
    done = cli("probe", *args, "--duration", "0.1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert said in done.stderr


def test_help_describes_the_modes() -> None:
    done = cli("probe", "--help", env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for option in ("--long-lived", "--connections", "--netns", "resets", "reconnects"):
        assert option in done.stdout


# --- in a network namespace ---------------------------------------------------------------

OK, WHY = network.available()


@pytest.fixture
def net() -> Iterator[ProviderNetwork]:
    if not OK:
        pytest.skip(f"network namespaces unavailable: {WHY}")
    with provider_network("probetest") as n:
        yield n


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["tcp-long-lived", "tcp", "udp"])
def test_probe_sockets_live_in_the_namespace(
    net: ProviderNetwork, servers: Servers, mode: str
) -> None:
    """The server, on its own node, answers with the address the request came from: the
    consumer node's, so the probe's sockets were in the consumer's namespace."""
    node, consumer = net.add_node("server"), net.add_node("consumer")
    port = 7791
    server = servers.start(node.address, port, "peer", netns=node.netns)
    kind, *extra = mode.split("-", 1)
    probe = Probe(
        f"{kind}://{node.address}:{port}",
        "--netns",
        consumer.netns,
        "--interval-ms",
        "5",
        *(["--long-lived"] if extra else []),
    )
    try:
        server.expect(f"served {REPORT_AFTER}")
        result = probe.stop()
    finally:
        probe.kill()
    assert result["netns"] == consumer.netns
    assert result["answered"] > 0 and result["errors"] == 0, result
    assert [r["vnfc"] for r in result["runs"]] == [consumer.address]
    assert result["resets"] == result["reconnects"] == 0
