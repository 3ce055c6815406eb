"""keepalived (VRRPv3, Debian's package) on the provider network, as the benchmark runs it: two
nodes with a plain responder prestarted on the VIP, a consumer, the master's processes killed.

Skipped only where this machine cannot make network namespaces or keepalived is not installed
(`make daemons` installs it as root)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.drivers import network
from nfvha.drivers.network import Node, ProviderNetwork
from nfvha.lab import keepalived
from tests.integration.support.networks import provider_network

OK, WHY = network.available()
EXE = keepalived.binary()
pytestmark = [
    pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}"),
    pytest.mark.skipif(EXE is None, reason="keepalived is not installed (make daemons, as root)"),
]

VIP = "10.77.0.200"
PORT = 7791
ADVERT_S = 0.01
PATIENCE_S = 10.0


@pytest.fixture
def net() -> Iterator[ProviderNetwork]:
    with provider_network("katest") as n:
        yield n


def responder(node: Node) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", node.netns, sys.executable, "-m", "nfvha.examples.responder"]
        + ["--name", node.name, "--address", f"{VIP}:{PORT}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def answered_by(consumer: Node) -> str | None:
    """Who answers a new request from the consumer (a new socket: a new source port)."""
    with network.socket_in(consumer.netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        try:
            s.sendto(b"GET 1", (VIP, PORT))
            parts = s.recv(512).split()
        except OSError:
            return None
    return parts[3].decode() if len(parts) == 4 and parts[0] == b"OK" else None


def eventually(check, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE_S
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {PATIENCE_S:g} s"
        time.sleep(0.01)
    return found


def test_vrrp_failover_when_the_master_dies(net: ProviderNetwork, tmp_path: Path) -> None:
    a, b, consumer = net.add_node("a"), net.add_node("b"), net.add_node("consumer")
    procs = [responder(a), responder(b)]
    daemons = {n.name: keepalived.Keepalived(n.name, n.netns, tmp_path) for n in (a, b)}
    try:
        for node, priority in ((a, 150), (b, 100)):
            config = keepalived.vrrp_config(
                node.name,
                interface=node.ifname,
                vip=VIP,
                prefixlen=node.prefixlen,
                priority=priority,
                advert_s=ADVERT_S,
                fifo=daemons[node.name].path("fifo"),
                master=node is a,
            )
            daemons[node.name].start(config, EXE)
        eventually(lambda: daemons["a"].state == "MASTER", "master a")
        eventually(lambda: daemons["b"].state == "BACKUP", "backup b")
        assert [n.name for n in net.holders(VIP)] == ["a"]
        assert eventually(lambda: answered_by(consumer), "answer") == "a"

        killed = daemons["a"].kill()
        keepalived.kill_together([procs[0].pid])
        assert len(killed) == 2  # keepalived's parent and its VRRP child

        eventually(lambda: daemons["b"].state == "MASTER", "takeover by b")
        assert eventually(lambda: answered_by(consumer), "answer after the kill") == "b"
        assert net.neighbour_mac(consumer, VIP) == b.mac
        # A killed keepalived leaves its VIP on a's interface; with b's the kernel shows both
        # (a's stale address is one the consumer's next ARP request may still be answered by).
        assert [n.name for n in net.holders(VIP)] == ["a", "b"]
        # Who serves: exactly one node has the VIP with a live keepalived and responder.
        alive = [n for n in net.holders(VIP) if daemons[n.name].pids()]
        assert [n.name for n in alive] == ["b"]
        assert [t.state for t in daemons["b"].transitions][-2:] == ["BACKUP", "MASTER"]
    finally:
        for d in daemons.values():
            d.stop()
        for p in procs:
            p.kill()
            p.wait()
