"""examples/three-hosts.yaml, for real: managers elected on etcd; each VM's guest agent lives
in its VM's namespace and dials the manager over TCP with mutual TLS (``nfvi.transport: tls``),
so cutting a VM's link is a real partition of its agent; with ``nfvi.fencing: watchdog`` the
guest holds a lease, renewed by every answer to its heartbeats.

- A cut active VM fences itself (its agent kills its VNFCs and exits) before the VNFC elsewhere
  is made active, and the VIM counts the VM isolated only after its lease: the order is read
  from both sides, the agent's log (CLOCK_MONOTONIC) and the manager's trace (the same clock).
  Nothing acknowledged is lost; the consumer, in its own namespace, is answered by the new
  active.
- A flapping link (cut, heal, cut) moves the role at most once: no ping-pong.
- A peer with another CA's certificate is refused at the handshake and traced; a member that
  says hello as a VM of another host is refused; the deployment serves on.

Only orderings and outcomes are asserted, never how fast. Skipped where this machine cannot
make network namespaces or cgroups."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha.drivers import network, tls
from nfvha.sdk.protocol import encode
from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.consumers import parse_answer
from tests.integration.support.deployments import unique_name
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.runs import NfvhaRun, cli, steady
from tests.integration.support.trace import dump_records, select
from tests.integration.support.waiting import wait_for_sync

OK, WHY = network.available()
pytestmark = [
    pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}"),
    pytest.mark.skipif(not cgroup_v2_writable(), reason="the NFVI needs a writable cgroup v2"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-hosts.yaml"
VIP, PORT, LEASE_MS = "10.79.0.100", 7740, 2000
SELF_FENCED = re.compile(r"nfvha event=self-fenced agent=(\S+) at_ns=(\d+)")


def deploy(tmp_path: Path, cluster: EtcdCluster, example: Path = EXAMPLE) -> tuple[str, Path]:
    """examples/three-hosts.yaml (or ``example``) as the README runs it: its own name, the
    tests' etcd cluster and a cluster CA made with `nfvha cluster init`."""
    name = unique_name("pt")
    members = ["--member", "manager"] + [f"--member=host-{i}" for i in (1, 2, 3)]
    result = cli("cluster", "init", str(tmp_path / "cluster"), *members)
    assert result.returncode == 0, result.stderr
    raw = yaml.safe_load(example.read_text())
    raw["name"] = name
    raw["coordination"]["endpoints"] = ",".join(cluster.endpoints)
    assert raw["nfvi"]["agent_lease_ms"] == LEASE_MS
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return name, path


def ask(status: dict[str, Any], op: str, seq: int) -> tuple[int, str] | None:
    """One request from the consumers' namespace to the VIP: (total, VNFC), or None."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    with network.in_namespace(status["network"]["consumer_netns"], make) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(f"{op} {seq}".encode(), (VIP, PORT))
            answer = parse_answer(sock.recv(256))
        except OSError:
            return None
    return (answer[1], answer[2]) if answer else None


def active(status: dict[str, Any]) -> str | None:
    actives = status["vnfs"][0]["service"]["active"]
    return actives[0] if len(actives) == 1 else None


def link(status: dict[str, Any], vnfc: str, state: str) -> int:
    """Set the bridge port of the VNFC's VM down or up: a real cut. CLOCK_MONOTONIC ns."""
    net = status["network"]
    port = net["nodes"][status["placement"][vnfc]]["port"]
    cmd = ["ip", "-n", net["bridge_netns"], "link", "set", port, state]
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic_ns()


def other(vnfc: str) -> str:
    return "vnfc-2" if vnfc == "vnfc-1" else "vnfc-1"


def started(tmp_path: Path, runtime_dir: Path, nfvha_runs: list, cluster: EtcdCluster) -> NfvhaRun:
    name, config = deploy(tmp_path, cluster)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    run.wait_steady()
    return run


@pytest.mark.timeout(120)
def test_a_cut_active_vm_fences_itself_before_the_standby_is_promoted(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    run = started(tmp_path, runtime_dir, nfvha_runs, etcd_cluster)
    status = run.wait_steady()
    old = active(status)
    assert old is not None
    acked = ask(status, "INC", 1)
    assert acked is not None and acked[1] == old
    cut = link(status, old, "down")
    try:
        after = run.wait_status(lambda st: active(st) == other(old), "the standby promoted")
        answered = wait_for_sync(lambda: ask(after, "INC", 2), "an answer from the new active")
        heard = time.monotonic_ns()
    finally:
        link(status, old, "up")
    old_vm = status["placement"][old]

    def isolation() -> list[dict[str, Any]]:
        return [r for r in select(run.records(), name="VmCleanedUp") if r["data"]["vm"] == old_vm]

    isolated = wait_for_sync(isolation, "the VIM's isolation of the cut VM")
    records = run.records()
    ctx = dump_records(records) + "\n" + run.stderr
    fenced = [(a, int(t)) for a, t in SELF_FENCED.findall(run.stderr)]
    assert [a for a, _ in fenced] == [old_vm], ctx  # the cut VM, and nobody else
    fenced_at = fenced[0][1]
    promoted = [
        r
        for r in select(records, kind="command", name="AssignRole")
        if r["data"]["vnfc"] == other(old) and r["data"]["role"] == "active" and r["t"] > cut
    ]
    silent = [r for r in select(records, name="VmFailed") if r["data"]["vm"] == old_vm]
    assert promoted and isolated and silent, ctx
    # The agent's side: cut, then its lease ran out and it fenced itself, then the promotion.
    assert cut < fenced_at < promoted[0]["t"] <= heard, ctx
    # The VIM's side: it saw the VM go silent, and counted it isolated only after the lease
    # (fenced by its watchdog, found empty by the kernel), never before the agent fenced.
    assert silent[0]["data"]["cause"] == "heartbeat" and silent[0]["t"] < fenced_at, ctx
    assert isolated[0]["data"]["ok"] and "watchdog" in isolated[0]["data"]["detail"], ctx
    assert isolated[0]["t"] > fenced_at and isolated[0]["t"] - cut > LEASE_MS * 1_000_000, ctx
    assert answered == (acked[0] + 1, other(old)), ctx  # nothing acknowledged lost
    # Healed, the VM is booted again and its VNFC is the standby: the role does not go back.
    back = run.wait_status(lambda st: steady(st) and active(st) == other(old), "steady again")
    assert back["vnfs"][0]["epoch"] == after["vnfs"][0]["epoch"], ctx


@pytest.mark.timeout(150)
def test_a_flapping_link_moves_the_role_at_most_once(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    run = started(tmp_path, runtime_dir, nfvha_runs, etcd_cluster)
    status = run.wait_steady()
    first = active(status)
    assert first is not None
    seen: list[str | None] = []
    for down_s, up_s in ((0.4, 0.3), (0.4, 0.3), (0.2, 0.2)):
        link(status, first, "down")
        time.sleep(down_s)
        link(status, first, "up")
        time.sleep(up_s)
        seen.append(active(run.status() or {"vnfs": [{"service": {"active": []}}]}))
    final = run.wait_steady()
    time.sleep(2 * LEASE_MS / 1000)  # long enough for a late move back to show
    final = run.wait_steady()
    records = run.records()
    ctx = dump_records(records) + "\n" + run.stderr
    actives = [
        r["data"]["vnfc"]
        for r in select(records, kind="command", name="AssignRole")
        if r["data"]["role"] == "active"
    ]
    moves = sum(1 for a, b in zip(actives, actives[1:], strict=False) if a != b)
    assert moves <= 1, (actives, ctx)
    assert active(final) == actives[-1], ctx
    assert all(s in (first, other(first), None) for s in seen), seen


@pytest.mark.timeout(120)
def test_an_unknown_certificate_and_a_member_posing_as_another_hosts_vm_are_refused(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    run = started(tmp_path, runtime_dir, nfvha_runs, etcd_cluster)
    status = run.wait_steady()
    mgmt = status["network"]["nodes"]["mgmt"]["address"]
    consumer = status["network"]["consumer_netns"]
    rogue = tmp_path / "rogue"
    assert cli("cluster", "init", str(rogue), "--member", "host-1").returncode == 0
    cluster = tmp_path / "cluster"
    vm_on_1 = next(vm for vm, h in status["nfvi"]["vms"].items() if h["host"] == "host-1")

    async def dial(directory: Path, member: str, hello: bytes) -> str:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect((mgmt, 7400))
            sock.setblocking(False)
            return sock

        sock = network.in_namespace(consumer, make)
        context = tls.client_context(directory, member)
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=context, server_hostname="manager"
            )
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            return f"refused: {exc.__class__.__name__}"
        writer.write(hello)
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.read(100), 5)
        except (ConnectionError, ssl.SSLError):
            line = b""
        writer.close()
        return "closed" if not line else "answered"

    hello = encode("hello", kind="guest", name=vm_on_1, pid=4242)
    # Another CA's "host-1": the handshake fails (the server refuses the certificate).
    first = asyncio.run(dial(rogue, "host-1", hello))
    # The cluster's host-2 speaking for a VM of host-1: authenticated, then refused.
    second = asyncio.run(dial(cluster, "host-2", hello))
    assert second == "closed", second

    def refused() -> tuple[list, list] | None:
        recs = run.records()
        peers = select(recs, name="PeerRefused")
        posing = [r for r in select(recs, name="MessageRefused") if "may not speak" in r["why"]]
        return (peers, posing) if peers and posing else None

    peers, posing = wait_for_sync(refused, "both refusals traced")
    assert first != "answered", first
    assert "unknown" in peers[0]["why"] or "certificate" in peers[0]["why"], peers
    assert f"member host-2 may not speak for VM {vm_on_1} (on host-1)" in posing[0]["why"]
    assert "event=peer-refused" in run.stderr
    after = run.wait_steady()  # unharmed: the real guests are still connected
    assert active(after) == active(status)
    assert ask(after, "GET", 1) is not None
    agents = after["nfvi"]["agents"]  # nfvha status: each guest's link and the lease it holds
    assert set(agents) == set(after["placement"].values()), agents
    assert all(a["transport"] == "tls" and a["connected"] for a in agents.values()), agents
    assert all(0 < a["lease_remaining_ms"] <= LEASE_MS for a in agents.values()), agents
    hosts = after["nfvi"]["host_agents"]  # each host's: the longest lease of its guests
    assert set(hosts) == set(after["nfvi"]["hosts"]), hosts
    assert all(h["connected"] for h in hosts.values()), hosts
    leased = [h["lease_remaining_ms"] for h in hosts.values() if "lease_remaining_ms" in h]
    assert len(leased) >= 2 and all(0 < ms <= LEASE_MS for ms in leased), hosts  # VMs' hosts
    shown = cli("status", "--socket", str(run.socket))
    assert re.search(r"lease\s+\d\.\d\s+s", shown.stdout), shown.stdout
    assert re.search(r"^hosts  host-1 up, lease \d\.\d s", shown.stdout, re.M), shown.stdout
