"""A real 3-member etcd cluster on loopback ports, for the tests of the etcd state store.

Debian's etcd-server provides the ``etcd`` binary (``make etcd`` installs it as root). Every
member is killed and reaped and the data dirs removed at teardown, even after a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MEMBERS = 3
READY_WITHIN_S = 30.0  # a member that has not joined by then is reported with its log


def free_tcp_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (all held at once while choosing, so they differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        ports = free_tcp_ports(2 * MEMBERS)
        self.client_ports, self.peer_ports = ports[:MEMBERS], ports[MEMBERS:]
        self.endpoints = [f"127.0.0.1:{p}" for p in self.client_ports]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * MEMBERS
        self._token = f"nfvha-test-{os.getpid()}-{self.client_ports[0]}"

    def start(self, i: int) -> None:
        """Start member ``i`` (again: it rejoins with its data dir) and wait until it answers."""
        self._spawn(i)
        self.wait_healthy(i)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it."""
        proc, self.procs[i] = self.procs[i], None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def start_all(self) -> None:
        # A member answers only once a quorum has formed: start them all, then wait.
        for i in range(MEMBERS):
            self._spawn(i)
        for i in range(MEMBERS):
            self.wait_healthy(i)

    def stop_all(self) -> None:
        for i in range(MEMBERS):
            self.kill(i)

    def _spawn(self, i: int) -> None:
        assert self.procs[i] is None, f"member {i} is running"
        with open(self.workdir / f"m{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                self._command(i), stdout=log, stderr=log, env=_clean_env(), start_new_session=True
            )

    def wait_healthy(self, i: int) -> None:
        """Until member ``i`` says it is healthy (it sees a leader); fails with its log tail if
        it exits or does not within READY_WITHIN_S."""
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                pytest.fail(f"etcd member {i} exited:\n{self.log_tail(i)}")
            if self.healthy(i):
                return
            time.sleep(0.05)
        pytest.fail(f"etcd member {i} not healthy within {READY_WITHIN_S} s:\n{self.log_tail(i)}")

    def healthy(self, i: int) -> bool:
        try:
            return bool(self._get(i, "/health")["health"] == "true")
        except (OSError, ValueError, KeyError):
            return False

    def leader(self) -> int:
        """The index of the member that leads now (asked of a running member)."""
        ids = {}
        for i, proc in enumerate(self.procs):
            if proc is not None:
                status = self._get(i, "/v3/maintenance/status", b"{}")
                ids[status["header"]["member_id"]] = i
        return ids[status["leader"]]

    def value(self, key: str) -> bytes | None:
        """The value of ``key`` as the cluster has it (a linearizable read)."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                kvs = self._get(i, "/v3/kv/range", body).get("kvs", [])
                return base64.b64decode(kvs[0]["value"]) if kvs else None
        raise AssertionError("no etcd member is running")

    def _get(self, i: int, path: str, body: bytes | None = None) -> dict[str, Any]:
        """A JSON request to member ``i``'s HTTP side (no proxy: it is on loopback)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.endpoints[i]}{path}", data=body, timeout=2.0) as reply:
            return dict(json.loads(reply.read()))

    def log_tail(self, i: int, lines: int = 30) -> str:
        path = self.workdir / f"m{i}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _command(self, i: int) -> list[str]:
        peers = ",".join(f"m{j}=http://127.0.0.1:{p}" for j, p in enumerate(self.peer_ports))
        client, peer = self.client_ports[i], self.peer_ports[i]
        return [
            "etcd",
            f"--name=m{i}",
            f"--data-dir={self.workdir / f'm{i}.data'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster={peers}",
            f"--initial-cluster-token={self._token}",
            "--initial-cluster-state=new",  # ignored by a member that has its data dir
            # A killed leader is replaced within about a second, not the default's several.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=warn",
        ]


def _clean_env() -> dict[str, str]:
    # Without NFVHA_*: the runtime_dir fixture would take etcd for a leftover of the test that
    # happened to start it.
    return {k: v for k, v in os.environ.items() if not k.startswith("NFVHA_")}


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        if os.geteuid() != 0:
            pytest.skip("etcd not installed: apt-get install etcd-server")
        # As root (CI) `make test` installs it first: its absence is a broken setup, not a skip.
        pytest.fail("etcd not installed: `make etcd` installs Debian's etcd-server")
    workdir = Path(tempfile.mkdtemp(prefix="nfvha-etcd-"))
    cluster = EtcdCluster(workdir)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
