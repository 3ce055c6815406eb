"""Active/active behind a load balancer in network mode netns (section 3.1 of the seed, both
cases): examples/lb-pool.yaml under `nfvha run`, every VNFC (or VM) and each HAProxy instance
in a node namespace of its own on the provider network, the consumer `nfvha probe` in the
consumers' namespace through the virtual IP. HAProxy's pool is read through its runtime API
(`show servers state`) on both instances, the VIP's holders from the nodes' kernels.

Asserted: HAProxy's pool matches the serving VNFCs (or VMs), each server at its node's address;
a hang only HAProxy's checks see is reported, and the VNFC is out of the pool before it is
isolated and restarted; a crashed VM leaves the pool before the VIM isolates and repairs it;
when the active HAProxy dies the passive one's node holds the VIP (exactly one holder) and the
consumer is answered through it. Proof is by ordering, never by how fast.

Skipped only where this machine cannot make network namespaces (not root, no `ip netns`) or
HAProxy is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha import config as cfg
from nfvha.drivers import network
from nfvha.drivers.loadbalancer import HaproxyError, parse_servers_state, runtime_command
from tests.integration import test_lb_pool
from tests.integration.support.deployments import unique_name
from tests.integration.support.networks import vip_holders
from tests.integration.support.runs import NFVHA, NfvhaRun, cli, serving, vnfcs
from tests.integration.support.trace import dump_records, find, index
from tests.integration.support.waiting import wait_for_sync
from tests.integration.test_daemons import Probe, daemon_path

OK, WHY = network.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSTANCES = ("web-lb-a", "web-lb-b")
VIP = "10.77.0.80"
short_runtime = test_lb_pool.short_runtime  # a fixture: HAProxy's admin sockets fit


def netns_config(tmp_path: Path, pool: str = "vnfc", **check: Any) -> tuple[Path, str]:
    """examples/lb-pool.yaml in mode netns (with hosts for ``pool: vm``); ``check`` overrides
    the VNF's own health check."""
    daemon_path("haproxy")  # skips, naming the package, when it is missing
    raw = cfg.read_mapping(EXAMPLES / "lb-pool.yaml")
    raw["name"] = name = unique_name("lbn")
    raw["network"] = {"mode": "netns"}
    vnf = raw["vnfs"][0]
    assert vnf["service"]["vip"] == VIP
    vnf["load_balancer"]["pool"] = pool
    if pool == "vm":
        raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]
    vnf["policies"]["health_check"].update(check)
    config = tmp_path / "lb-netns.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config, name


class ConsumerProbe(Probe):
    """`nfvha probe` every 1 ms from the consumers' namespace, through the virtual IP."""

    def __init__(self, netns: str, work: Path) -> None:
        self.answers_path = work / "answers.csv"
        self.proc = subprocess.Popen(
            [NFVHA, "probe", f"http://{VIP}:8090/", "--netns", netns, "--interval-ms", "1"]
            + ["--duration", "120", "--json", "--timeout-ms", "100"]
            + ["--answers-out", str(self.answers_path)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def pool_of(run: NfvhaRun, instance: str) -> dict[str, tuple[str, str]] | None:
    """server -> (admin state, address) as the instance reports it; None: no answer."""
    sock = run.deployment_dir / "lb" / instance / "admin.sock"
    try:
        answer = asyncio.run(runtime_command(sock, "show servers state pool", timeout=1.0))
    except (HaproxyError, OSError):
        return None
    return {s.name: (s.admin, s.address) for s in parse_servers_state(answer)}


def lb_active(status: dict[str, Any]) -> str | None:
    svc = next(v for v in status["vnfs"] if v["vnf"] == "web-lb")["service"]
    return svc["active"][0] if svc["up"] and svc["active"] else None


def lb_up(status: dict[str, Any]) -> bool:
    lb = vnfcs(status, "web-lb").values()
    return lb_active(status) is not None and all(c["state"] == "running" for c in lb)


def pools_are(run: NfvhaRun, status: dict[str, Any], ready: set[str]) -> bool:
    """Both instances: exactly ``ready`` in the pool, every other server in maint, each server
    at its node's address (servers and nodes are named alike: VNFC or VM)."""
    nodes = status["network"]["nodes"]
    servers = {n for n in nodes if n.startswith(("web-", "vm-web-")) and "-lb-" not in n}
    want = {s: ("ready" if s in ready else "maint", f"{nodes[s]['address']}:8090") for s in servers}
    return all(pool_of(run, i) == want for i in INSTANCES)


def holders(status: dict[str, Any]) -> list[str]:
    return vip_holders(status, VIP)


def start(
    tmp_path: Path, runtime_dir: Path, nfvha_runs: list, config: Path, name: str, ready: set[str]
) -> tuple[NfvhaRun, dict[str, Any]]:
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    try:
        status = run.wait_status(lambda st: serving(st) == {"web-a", "web-b"} and lb_up(st), "up")
        wait_for_sync(lambda: pools_are(run, status, ready), f"{sorted(ready)} in both pools")
    except AssertionError as exc:
        pools = {i: pool_of(run, i) for i in INSTANCES}
        raise AssertionError(f"{exc}\nstatus: {run.status()}\npools: {pools}") from None
    return run, status


def answered_across(probe: Probe, fault_ns: int) -> None:
    wait_for_sync(lambda: any(t > fault_ns for t in probe.answer_times()), "answers after it")
    assert any(t < fault_ns for t in probe.answer_times())


def consumer(tmp_path: Path, status: dict[str, Any]) -> Probe:
    probe = ConsumerProbe(status["network"]["consumer_netns"], tmp_path)
    wait_for_sync(lambda: len(probe.answer_times()) >= 20, "the consumer answered at the VIP")
    return probe


@pytest.mark.timeout(120)
def test_a_hang_only_haproxy_sees_leaves_the_pool_before_isolation(
    tmp_path: Path, short_runtime, nfvha_runs
) -> None:
    # The VNF's own check comes every 3 s (it would see the hang within 1.5-3 s): HAProxy's,
    # every 100 ms with fall 2, sees it first, and failure_threshold 1 makes its DOWN decisive.
    config, name = netns_config(tmp_path, interval_ms=3000, timeout_ms=100, failure_threshold=1)
    run, status = start(tmp_path, short_runtime, nfvha_runs, config, name, {"web-a", "web-b"})
    pid = vnfcs(status, "web")["web-a"]["pid"]
    probe = consumer(tmp_path, status)
    try:
        fault = time.monotonic_ns()
        os.kill(pid, signal.SIGSTOP)
        wait_for_sync(lambda: pools_are(run, status, {"web-b", "web-c"}), "web-a out, web-c in")
        answered_across(probe, fault)
        result = probe.stop()
    finally:
        probe.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    print(f"consumer across a hang: outage {result['outage_ms']} ms, {result['error_kinds']}")
    records = run.records()
    context = dump_records(records)
    first = index(records, kind="event", name="HealthCheckFailed", src="web-a")
    assert "HAProxy" in records[first]["data"]["reason"], context  # HAProxy's, not the VNF's
    failed = index(records, first, kind="event", src="web-a", why_has="isolating")
    assert failed == first, context  # decisive: the report itself fails it
    outs = [
        index(records, failed, name="PoolMember", dst=i, server="web-a", state="maint")
        for i in INSTANCES
    ]
    isolated = index(records, failed, kind="event", name="CleanupDone", src="web-a")
    assert max(outs) < isolated, context


@pytest.mark.timeout(120)
def test_the_passive_lb_takes_the_vip_when_the_active_dies(
    tmp_path: Path, short_runtime, nfvha_runs
) -> None:
    config, name = netns_config(tmp_path)
    run, status = start(tmp_path, short_runtime, nfvha_runs, config, name, {"web-a", "web-b"})
    old = lb_active(status)
    assert holders(status) == [old]
    web = next(v for v in status["vnfs"] if v["vnf"] == "web")
    assert web["service"]["reach"] == f"{VIP}:8090"  # through its load balancer
    assert status["pools"]["web"]["desired"]["web-c"]["state"] == "maint"
    shown = cli("status", "--socket", str(run.socket))
    assert "pool (via web-lb): web-a=ready web-b=ready web-c=maint" in shown.stdout, shown.stdout
    probe = consumer(tmp_path, status)
    try:
        fault = time.monotonic_ns()
        os.kill(vnfcs(status, "web-lb")[old]["pid"], signal.SIGKILL)
        status = run.wait_status(
            lambda st: lb_active(st) not in (None, old), "the passive HAProxy made active"
        )
        new = lb_active(status)
        assert holders(status) == [new]  # exactly one node: the new active's
        answered_across(probe, fault)
        result = probe.stop()
    finally:
        probe.close()
    print(f"consumer across an LB kill: outage {result['outage_ms']} ms, {result['error_kinds']}")
    run.wait_status(lb_up, f"{old} back as the passive")
    wait_for_sync(lambda: pools_are(run, status, {"web-a", "web-b"}), "both pools as before")
    records = run.records()
    released = index(records, name="AddressReleased", dst=old)
    index(records, released, name="AddressClaimed", dst=new)


@pytest.mark.timeout(120)
def test_a_crashed_vm_leaves_the_pool_before_it_is_isolated_and_repaired(
    tmp_path: Path, short_runtime, nfvha_runs
) -> None:
    config, name = netns_config(tmp_path, pool="vm")
    ready = {"vm-web-a", "vm-web-b"}
    run, status = start(tmp_path, short_runtime, nfvha_runs, config, name, ready)
    probe = consumer(tmp_path, status)
    try:
        fault = time.monotonic_ns()
        crashed = cli("fault", "vm-crash", "vm-web-a")
        assert crashed.returncode == 0, crashed.stderr
        wait_for_sync(
            lambda: pools_are(run, status, {"vm-web-b", "vm-web-c"}), "vm-web-a out, vm-web-c in"
        )
        answered_across(probe, fault)
        result = probe.stop()
    finally:
        probe.close()
    print(f"consumer across a VM crash: outage {result['outage_ms']} ms, {result['error_kinds']}")
    run.wait_status(lambda st: st["nfvi"]["vms"]["vm-web-a"]["state"] == "up", "vm-web-a back")
    records = run.records()
    context = dump_records(records)
    lost = index(records, name="VmFailed", src="vm-web-a")
    outs = [
        index(records, name="PoolMember", dst=i, server="vm-web-a", state="maint")
        for i in INSTANCES
    ]
    isolated = index(records, lost, name="VmCleanedUp", src="vm-web-a")
    repaired = index(records, isolated, name="VmUp", src="vm-web-a")
    assert max(outs) < isolated < repaired, context
    back = find(records, isolated, name="PoolMember", server="vm-web-a", state="ready")
    assert back is None or back > repaired, context  # not back in the pool before its repair
