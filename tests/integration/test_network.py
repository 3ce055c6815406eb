"""The network driver on real network namespaces: a provider network (a bridge in its own
namespace), nodes and a consumer on it, a virtual IP moving between nodes with gratuitous ARP.

Every test builds its own network, named from a deployment name with a unique tag, and its
teardown removes it and asserts that nothing is left: no namespace of that deployment, no new
link in the root namespace, no process inside. Skipped only when this machine cannot make
network namespaces (not root, no netns)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from nfvha.drivers import network
from nfvha.drivers.network import Node, ProviderNetwork

OK, WHY = network.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

PORT = 7790
VIP = "10.77.0.200"

# A UDP echo server bound with IP_FREEBIND, so it can start before its address exists (a
# standby prestarted on the VIP); it answers "<name> <payload>".
SERVER = textwrap.dedent(
    """
    import socket, sys
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
    s.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(name.encode() + b" " + data, peer)
    """
)

# One request, retried every 100 ms for up to 2 s; prints the answer or nothing.
CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    addr, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        s.sendto(b"ping", (addr, port))
        try:
            print(s.recv(512).decode())
            break
        except OSError:
            pass
    """
)


def root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def in_ns(node: Node, script: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", node.netns, sys.executable, "-c", script, *args]


def ask(consumer: Node, address: str) -> str | None:
    """The answer of the echo server at ``address`` to the consumer, or None."""
    out = subprocess.run(
        in_ns(consumer, CLIENT, address, str(PORT)),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.strip()
    return out.split()[0] if out else None


@pytest.fixture
def deployment() -> Iterator[str]:
    """A deployment name unique to this test; at teardown nothing of it may be left."""
    name = f"nettest-{uuid.uuid4().hex[:8]}"
    before = root_links()
    yield name
    left = network.namespaces_of(name)
    network.remove_leftovers(name)
    assert left == [], f"namespaces left behind (removed now): {left}"
    assert root_links() - before == set(), "links left in the root namespace"


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def net(deployment: str) -> Iterator[ProviderNetwork]:
    n = ProviderNetwork(deployment)
    try:
        yield n
    finally:
        made = n.namespaces()
        n.remove()
        assert not set(made) & set(network._listnetns())


def serve(servers: list[subprocess.Popen[str]], node: Node, address: str) -> None:
    p = subprocess.Popen(
        in_ns(node, SERVER, address, str(PORT), node.name), stdout=subprocess.PIPE, text=True
    )
    servers.append(p)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"


def neighbour_mac(consumer: Node, ip: str) -> str | None:
    with network._rtnl(consumer.netns) as ipr:
        for n in ipr.get_neighbours(family=2):
            if n.get("NDA_DST") == ip:
                mac: str | None = n.get("NDA_LLADDR")
                return mac
    return None


def test_nodes_and_consumer_reach_each_other(net: ProviderNetwork, servers: list) -> None:
    a, b, consumer = net.add_node("a"), net.add_node("b"), net.add_node("consumer")
    assert [a.address, b.address, consumer.address] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (net.netns, a.netns, b.netns, consumer.netns):
        assert ns in listed
    for node in (a, b, consumer):
        assert len(node.ifname) <= 15
    serve(servers, a, a.address)
    serve(servers, b, b.address)
    assert ask(consumer, a.address) == "a"
    assert ask(consumer, b.address) == "b"


def test_vip_moves_and_the_consumer_follows_at_once(net: ProviderNetwork, servers: list) -> None:
    a, b, consumer = net.add_node("a"), net.add_node("b"), net.add_node("consumer")
    # Both servers prestarted on the VIP before anyone holds it: only the holder gets traffic.
    serve(servers, a, VIP)
    serve(servers, b, VIP)
    assert net.holder(VIP) is None
    assert ask(consumer, VIP) is None

    claim_a = net.claim(a, VIP)
    assert claim_a.changed and len(claim_a.garp) == network.GARP_COUNT
    assert net.holder(VIP) == a
    assert ask(consumer, VIP) == "a"
    assert neighbour_mac(consumer, VIP) == a.mac

    release_a = net.release(a, VIP)
    assert release_a.changed and net.holder(VIP) is None
    claim_b = net.claim(b, VIP)
    assert claim_b.others == []
    # The consumer's entry for the VIP was fresh (REACHABLE, A's MAC): only the gratuitous ARP
    # can change it now; ARP's own timeouts are tens of seconds.
    deadline = time.monotonic() + 1.0
    while neighbour_mac(consumer, VIP) != b.mac and time.monotonic() < deadline:
        time.sleep(0.01)
    assert neighbour_mac(consumer, VIP) == b.mac
    assert ask(consumer, VIP) == "b"
    assert net.holder(VIP) == b
    assert [c.action + ":" + c.node for c in net.changes] == ["claim:a", "release:a", "claim:b"]
    assert claim_b.as_dict()["mac"] == b.mac

    # Idempotent and honest: claiming again changes nothing, a second holder is reported.
    assert not net.claim(b, VIP).changed
    assert net.claim(a, VIP).others == ["b"]
    assert {n.name for n in net.holders(VIP)} == {"a", "b"}
    with pytest.raises(RuntimeError, match="held by 2 nodes"):
        net.holder(VIP)
    net.release(a, VIP)
    assert not net.release(a, VIP).changed


def test_remove_leaves_nothing(deployment: str, servers: list) -> None:
    net = ProviderNetwork(deployment)
    a = net.add_node("a")
    net.claim(a, VIP)
    serve(servers, a, VIP)
    made = net.namespaces()
    assert len(made) == 2
    removed = net.remove()
    assert sorted(removed) == sorted(made)
    assert network.namespaces_of(deployment) == []
    assert servers[0].wait(timeout=5) == -signal.SIGKILL  # nothing keeps a namespace alive
    assert net.remove() == []  # idempotent


def test_leftovers_of_a_dead_run_are_removed(deployment: str) -> None:
    # A run that builds its network, starts a server inside it, and dies without removing it.
    dead_run = textwrap.dedent(
        f"""
        import os, subprocess, sys
        from nfvha.drivers.network import ProviderNetwork
        net = ProviderNetwork({deployment!r})
        a = net.add_node("a")
        net.add_node("b")
        net.claim(a, {VIP!r})
        subprocess.Popen(["ip", "netns", "exec", a.netns, "sleep", "300"], start_new_session=True)
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", dead_run], check=True, timeout=30)
    left = network.namespaces_of(deployment)
    assert len(left) == 3
    with pytest.raises(FileExistsError, match="remove_leftovers"):
        ProviderNetwork(deployment)
    assert network._pids_in(left)  # the orphaned server
    assert sorted(network.remove_leftovers(deployment)) == left
    assert network.namespaces_of(deployment) == []
    with ProviderNetwork(deployment) as again:  # the new run starts clean
        assert again.add_node("a").address == "10.77.0.1"


def test_names_are_short_distinct_and_stable() -> None:
    assert network.tag("counter-2n") == network.tag("counter-2n")
    assert network.tag("counter-2n") != network.tag("counter-2N")
    assert len(network.tag("a-very-long-deployment-name-indeed")) <= 12
    frame = network.garp_frame("02:00:00:00:00:01", "10.77.0.200")
    assert len(frame) == 60 and frame[12:14] == b"\x08\x06"
    assert frame[28:32] == frame[38:42]  # sender IP == target IP: gratuitous


def test_unavailable_says_why_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe's first question; as a real unprivileged user it would be the same answer, but
    # the venv may not be readable by one.
    monkeypatch.setattr(network.os, "geteuid", lambda: 1000)
    ok, why = network._probe()
    assert not ok and why.startswith("not root (uid 1000)")
    monkeypatch.setattr(network, "_available", (False, why))
    with pytest.raises(network.NetworkUnavailable, match="not root"):
        ProviderNetwork("nettest-unavailable")
