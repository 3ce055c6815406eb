"""The consumer (`nfvha probe`) measures what it sees: answers, outage, lost increments."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading

import pytest

from tests.integration.support.consumers import udp_get
from tests.integration.support.deployments import free_udp_port
from tests.integration.support.processes import kill_and_reap
from tests.integration.support.runs import NFVHA_COUNTER, cli
from tests.integration.support.waiting import wait_for_sync


@pytest.fixture
def standalone_counter(runtime_dir):
    address = f"127.0.0.1:{free_udp_port()}"
    proc = subprocess.Popen(
        [NFVHA_COUNTER, "--standalone", "--address", address],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_sync(lambda: proc.poll() is not None or udp_get(address), "the standalone counter")
        assert proc.poll() is None, f"nfvha-counter exited with {proc.returncode}"
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_and_reap([proc.pid])
            proc.wait()


def probe_json(target: str, *args: str) -> dict:
    done = cli("probe", target, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(60)
def test_probe_against_standalone_counter(standalone_counter) -> None:
    duration_ms = 1500.0
    result = probe_json(
        f"udp://{standalone_counter}", "--interval-ms", "2", "--duration", str(duration_ms / 1000)
    )
    assert result["sent"] > 0
    assert result["answered"] > 0
    assert result["answered"] <= result["sent"]
    assert result["lost"] == 0
    assert not result["interleaved"]
    assert [r["vnfc"] for r in result["runs"]] == ["standalone"]
    # Totals only grow, one per INC the counter received.
    assert result["max_total"] >= result["answered"]
    # An outage is a gap between answers; with one healthy server it is a small part of the run.
    assert 0 < result["outage_ms"] < duration_ms / 2, result


@pytest.mark.timeout(60)
def test_probe_get_does_not_count(standalone_counter) -> None:
    before = udp_get(standalone_counter)
    result = probe_json(
        f"udp://{standalone_counter}", "--op", "GET", "--interval-ms", "5", "--duration", "0.3"
    )
    after = udp_get(standalone_counter)
    assert result["answered"] > 0 and result["lost"] == 0
    assert before is not None and after is not None
    assert after[0] == before[0] == result["max_total"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["udp", "tcp", "http", "dns"])
def test_probe_against_nothing_fails(kind: str) -> None:
    """Nobody answered at all: exit 1 and say so, whatever the JSON says."""
    port = free_udp_port()
    target = {"http": f"http://127.0.0.1:{port}/", "dns": f"dns://127.0.0.1:{port}/a.test"}.get(
        kind, f"{kind}://127.0.0.1:{port}"
    )
    done = cli("probe", target, "--json", "--interval-ms", "5", "--duration", "0.3")
    assert done.returncode == 1, done.stderr
    assert f"nobody answered at {target}" in done.stderr
    result = json.loads(done.stdout)
    assert result["kind"] == kind
    assert result["sent"] > 0
    assert result["answered"] == 0
    assert result["runs"] == []
    assert result["lost"] == 0 and result["max_total"] == 0
    if kind in ("tcp", "http"):  # a connection to a closed port is refused, and counted
        assert result["error_kinds"] == {"refused": result["errors"]} and result["errors"] > 0


@pytest.mark.timeout(60)
def test_probe_tcp_one_request_per_connection() -> None:
    """A line server that answers each connection's request: every answer is good."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        stop = threading.Event()
        seen: list[bytes] = []

        def serve() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    seen.append(conn.recv(100))
                    conn.sendall(b"hello\n")

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            port = server.getsockname()[1]
            result = probe_json(
                f"tcp://127.0.0.1:{port}", "--interval-ms", "10", "--duration", "0.5"
            )
        finally:
            stop.set()
            thread.join()
    assert result["kind"] == "tcp" and result["errors"] == 0
    assert 0 < result["answered"] == len(seen) <= result["sent"]
    assert all(req.startswith(b"INC ") and req.endswith(b"\n") for req in seen)
    assert [r["vnfc"] for r in result["runs"]] == [f"127.0.0.1:{port}"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "target", ["bad-url", "ftp://127.0.0.1:7000", "http://127.0.0.1/", "dns://127.0.0.1:53"]
)
def test_probe_bad_target(target: str) -> None:
    done = cli("probe", target, "--duration", "0.1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "udp://HOST:PORT" in done.stderr
    assert repr(target) in done.stderr


@pytest.mark.timeout(60)
def test_probe_port_out_of_range() -> None:
    done = cli("probe", "udp://127.0.0.1:99999", "--duration", "0.1")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
