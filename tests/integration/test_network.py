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

# One request (default "ping"), retried every 100 ms for up to 2 s; prints the answer or nothing.
CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    addr, port = sys.argv[1], int(sys.argv[2])
    payload = sys.argv[3].encode() if len(sys.argv) > 3 else b"ping"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        s.sendto(payload, (addr, port))
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
    """The name of the echo server answering at ``address`` to the consumer, or None."""
    out = request(consumer, address, "ping")
    return out.split()[0] if out else None


def request(consumer: Node, address: str, payload: str) -> str:
    """The answer at ``address`` to ``payload`` sent from the consumer ("" if none in 2 s)."""
    return subprocess.run(
        in_ns(consumer, CLIENT, address, str(PORT), payload),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.strip()


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
    assert net.neighbour_mac(consumer, VIP) == a.mac

    release_a = net.release(a, VIP)
    assert release_a.changed and net.holder(VIP) is None
    claim_b = net.claim(b, VIP)
    assert claim_b.others == []
    # The consumer's entry for the VIP was fresh (REACHABLE, A's MAC): only the gratuitous ARP
    # can change it now; ARP's own timeouts are tens of seconds.
    deadline = time.monotonic() + 1.0
    while net.neighbour_mac(consumer, VIP) != b.mac and time.monotonic() < deadline:
        time.sleep(0.01)
    assert net.neighbour_mac(consumer, VIP) == b.mac
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


def carrier(node: Node) -> bool:
    with network._rtnl(node.netns) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=node.ifname)[0])[0]
        return bool(link.get("IFLA_CARRIER"))


def test_cut_and_heal_a_link(net: ProviderNetwork, servers: list) -> None:
    a, b, consumer = net.add_node("a"), net.add_node("b"), net.add_node("consumer")
    assert (a.port, b.port, consumer.port) == ("v1", "v2", "v3")
    serve(servers, a, a.address)
    serve(servers, b, b.address)
    assert ask(consumer, a.address) == "a"
    cut = net.cut(a)
    # The node sees what a pulled cable looks like: no carrier; its address and server stay.
    assert not carrier(a) and carrier(b)
    assert ask(consumer, a.address) is None
    assert ask(consumer, b.address) == "b"
    assert servers[0].poll() is None
    healed = net.heal(a)
    assert cut < healed
    assert carrier(a)
    assert ask(consumer, a.address) == "a"


def test_sampler_sees_what_holders_sees(net: ProviderNetwork) -> None:
    a, b = net.add_node("a"), net.add_node("b")
    with net.sampler(VIP) as sample:
        assert sample() == []
        net.claim(a, VIP)
        assert sample() == ["a"]
        net.claim(b, VIP)
        assert sample() == ["a", "b"] == [n.name for n in net.holders(VIP)]
        net.release(a, VIP)
        assert sample() == ["b"]
    with network.holder_sampler([a], VIP) as sample_a:
        assert sample_a() == []


def test_a_plain_responder_serves_whoever_holds_the_vip(
    net: ProviderNetwork, servers: list
) -> None:
    """The example responder (no SDK) prestarted on the VIP in both nodes: only the holder
    answers, in the probe's counter format, under its own name."""
    a, b, consumer = net.add_node("a"), net.add_node("b"), net.add_node("consumer")
    for node in (a, b):
        p = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, sys.executable, "-m", "nfvha.examples.responder"]
            + ["--name", node.name, "--address", f"{VIP}:{PORT}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    net.claim(a, VIP)
    assert request(consumer, VIP, "GET 7") == "OK 7 0 a"
    assert request(consumer, VIP, "PUT 7") == "ERR unknown request"
    net.release(a, VIP)
    net.claim(b, VIP)
    assert request(consumer, VIP, "INC 8") == "OK 8 0 b"


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
