"""Active/active behind a load balancer that is itself HA (section 3.1 of the seed, case 1):
examples/lb-pool.yaml under `nfvha run`, real HAProxy instances and responders, the consumer
`nfvha probe` through the frontend. HAProxy's pool is read through its runtime API (`show
servers state`) on both instances. Proof is by ordering: a failed VNFC is in maintenance on
every instance before it is isolated and before it is started again; the consumer is answered
before and after each fault."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha import config as cfg
from nfvha.drivers.loadbalancer import (
    HaproxyConfig,
    HaproxyError,
    Server,
    parse_servers_state,
    runtime_command,
)
from tests.integration.support.deployments import unique_name
from tests.integration.support.processes import kill_and_reap, processes_of
from tests.integration.support.runs import NfvhaRun, serving, vnfcs
from tests.integration.support.trace import dump_records, index
from tests.integration.support.waiting import wait_for_sync
from tests.integration.test_daemons import Probe, daemon_path, free_tcp_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSTANCES = ("web-lb-a", "web-lb-b")


@pytest.fixture
def short_runtime(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A runtime dir short enough for HAProxy's admin sockets (97 bytes at most, where the
    test's own may be longer); nothing started in it is left behind."""
    short = Path(tempfile.mkdtemp(prefix="nfvha-lb-"))
    monkeypatch.setenv("NFVHA_RUNTIME_DIR", str(short))
    yield short
    left = processes_of(short)
    kill_and_reap(left)
    shutil.rmtree(short, ignore_errors=True)
    assert not left, f"processes left behind by the test (killed now): {left}"


def lb_pool_config(tmp_path: Path) -> tuple[Path, str, str]:
    """examples/lb-pool.yaml in loopback mode on a free port: (config, deployment name,
    frontend address). Network mode netns: tests/integration/test_lb_netns.py."""
    daemon_path("haproxy")  # skips, naming the package, when it is missing
    raw = cfg.read_mapping(EXAMPLES / "lb-pool.yaml")
    name, address = unique_name("lb"), f"127.0.0.1:{free_tcp_port()}"
    raw["name"] = name
    raw["network"] = {"mode": "loopback"}
    raw["vnfs"][0]["service"]["address"] = address
    config = tmp_path / "lb-pool.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config, name, address


def pool_of(run: NfvhaRun, instance: str) -> dict[str, str] | None:
    """server -> admin state, as the HAProxy instance reports it; None when it does not answer."""
    sock = run.deployment_dir / "lb" / instance / "admin.sock"
    try:
        answer = asyncio.run(runtime_command(sock, "show servers state pool", timeout=1.0))
        return {s.name: s.admin for s in parse_servers_state(answer)}
    except (HaproxyError, OSError):
        return None


def pools_are(run: NfvhaRun, ready: set[str]) -> bool:
    """Both HAProxy instances: exactly ``ready`` in the pool, every other server in maint."""
    want = {s: "ready" if s in ready else "maint" for s in ("web-a", "web-b", "web-c")}
    return all(pool_of(run, i) == want for i in INSTANCES)


def lb_up(status: dict[str, Any]) -> bool:
    return all(c["state"] == "running" and c["pid"] for c in vnfcs(status, "web-lb").values())


def start(tmp_path: Path, runtime_dir: Path, nfvha_runs: list) -> tuple[NfvhaRun, str]:
    config, name, address = lb_pool_config(tmp_path)
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    try:
        run.wait_status(lambda st: serving(st) == {"web-a", "web-b"} and lb_up(st), "pool serving")
        wait_for_sync(lambda: pools_are(run, {"web-a", "web-b"}), "web-a and web-b in both pools")
    except AssertionError as exc:
        logs = {p.name: p.read_text()[-500:] for p in (tmp_path / "state" / "logs").glob("*")}
        pools = {i: pool_of(run, i) for i in INSTANCES}
        raise AssertionError(
            f"{exc}\nstatus: {run.status()}\npools: {pools}\nlogs: {logs}"
        ) from None
    return run, address


def kill(pid: int) -> int:
    at = time.monotonic_ns()
    os.kill(pid, signal.SIGKILL)
    return at


def answered_across(probe: Probe, fault_ns: int) -> None:
    wait_for_sync(lambda: any(t > fault_ns for t in probe.answer_times()), "answers after it")
    times = probe.answer_times()
    assert any(t < fault_ns for t in times)


def test_render_of_a_pool_instance(tmp_path: Path) -> None:
    text = HaproxyConfig(
        tmp_path,
        "127.0.0.1:8090",
        (Server("a", "127.0.1.1:8090"), Server("b", "127.0.1.2:8090", disabled=True)),
        mode="tcp",
        checks=False,
        monitor="127.0.2.1:8090",
        bind_options="transparent",
    ).render()
    assert "    bind 127.0.0.1:8090 transparent\n" in text
    assert (
        "frontend monitor\n    mode http\n    bind 127.0.2.1:8090\n    monitor-uri /healthz" in text
    )
    assert "server a 127.0.1.1:8090\n    server b 127.0.1.2:8090 disabled\n" in text
    assert " check " not in text and "httpchk" not in text


@pytest.mark.timeout(120)
def test_pool_follows_failures_exclusion_first(tmp_path: Path, short_runtime, nfvha_runs) -> None:
    run, address = start(tmp_path, short_runtime, nfvha_runs)
    probe = Probe(f"http://{address}/", tmp_path)
    try:
        wait_for_sync(lambda: len(probe.answer_times()) >= 20, "the frontend answering")
        # web-a dies: it leaves the pool, the on-demand spare web-c joins it.
        first = kill(vnfcs(run.status() or {}, "web")["web-a"]["pid"])
        wait_for_sync(lambda: pools_are(run, {"web-b", "web-c"}), "web-a out, web-c in")
        answered_across(probe, first)
        # web-b dies: web-a, back in the spares, is started again and rejoins.
        second = kill(vnfcs(run.status() or {}, "web")["web-b"]["pid"])
        wait_for_sync(lambda: pools_are(run, {"web-a", "web-c"}), "web-b out, web-a back")
        answered_across(probe, second)
        result = probe.stop()
    finally:
        probe.close()
    assert result["lost"] == 0, result
    print(f"probe across two VNFC kills: outage {result['outage_ms']} ms, {result['error_kinds']}")
    records = run.records()
    context = dump_records(records)
    for vnfc in ("web-a", "web-b"):
        failed = index(records, kind="event", src=vnfc, why_has="isolating")
        outs = [
            index(records, failed, name="PoolMember", dst=i, server=vnfc, state="maint")
            for i in INSTANCES
        ]
        isolated = index(records, failed, kind="event", name="CleanupDone", src=vnfc)
        assert max(outs) < isolated, context
    # web-a's restart (after web-b's failure) comes after it left the pool.
    restart = index(
        records,
        index(records, kind="event", src="web-b", why_has="isolating"),
        kind="command",
        name="StartVnfc",
        dst="web-a",
    )
    out_a = index(records, kind="command", name="PoolMember", server="web-a", state="maint")
    back_a = index(records, restart, name="PoolMember", server="web-a", state="ready")
    assert out_a < restart < back_a, context


@pytest.mark.timeout(120)
def test_killed_lb_instance_the_other_answers_and_it_comes_back_with_the_pool(
    tmp_path: Path, short_runtime, nfvha_runs
) -> None:
    run, address = start(tmp_path, short_runtime, nfvha_runs)
    probe = Probe(f"http://{address}/", tmp_path)
    try:
        wait_for_sync(lambda: len(probe.answer_times()) >= 20, "the frontend answering")
        old = vnfcs(run.status() or {}, "web-lb")
        active = next(n for n, c in old.items() if c["role"] == "active")
        fault = kill(old[active]["pid"])
        run.wait_status(
            lambda st: lb_up(st) and vnfcs(st, "web-lb")[active]["pid"] != old[active]["pid"],
            f"{active} restarted",
        )
        answered_across(probe, fault)
        result = probe.stop()
    finally:
        probe.close()
    assert result["lost"] == 0, result
    print(f"probe across an LB kill: outage {result['outage_ms']} ms, {result['error_kinds']}")
    # The new instance carries the same pool as the one that stayed, at once.
    assert pool_of(run, active) == pool_of(run, next(i for i in INSTANCES if i != active))
    assert pools_are(run, {"web-a", "web-b"})
    records = run.records()
    index(records, kind="event", name="ProcessExited", src=active)
