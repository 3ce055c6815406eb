"""A manager that died without stopping (SIGKILL): the next run of the deployment adopts the
VNFCs (and with hosts, the agents) it left and isolates one that cannot resume (a hung active
would hold the service address for good), removes what it cannot adopt (with hosts, the cgroup of
a host whose agent is gone), a stale control socket does not count as a running deployment, and a
live manager is never run over."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from tests.integration.support.cgroups import (
    cgroup_dirs,
    cgroup_pids,
    cgroup_v2_writable,
    leftover_cgroups,
)
from tests.integration.support.consumers import udp_get
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    config_2n,
    customize,
    example_raw,
    free_udp_port,
    unique_name,
    write_config,
)
from tests.integration.support.processes import kill_and_reap, pid_alive, reap_zombie_children
from tests.integration.support.runs import NfvhaRun, cli
from tests.integration.support.trace import dump_records, index, select
from tests.integration.support.waiting import wait_for_sync


@pytest.mark.timeout(120)
def test_new_run_isolates_a_hung_active_left_by_a_crashed_manager(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = config_2n(tmp_path)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
    nfvha_runs.append(first)
    hung: list[int] = []
    try:
        status = first.wait_steady()
        active = status["vnfs"][0]["service"]["active"][0]
        (pid,) = [c["pid"] for c in status["vnfs"][0]["vnfcs"] if c["name"] == active]
        os.kill(pid, signal.SIGSTOP)  # it keeps the service port, answering nothing
        hung.append(pid)
        first.proc.kill()  # the manager dies without stopping anything
        first.proc.wait()
        assert pid_alive(pid), "the hung active should have outlived its manager"

        second = NfvhaRun(config, name, runtime_dir, tmp_path / "second")
        nfvha_runs.append(second)
        second.wait_steady()
        answer = wait_for_sync(lambda: udp_get(address), f"an answer from {address}")
        assert answer is not None
        assert not pid_alive(pid), "the hung active of the crashed run is still there"
        records = second.records()
        ctx = dump_records(records)
        # It is adopted, cannot resume its session (it is stopped), and is isolated before
        # anyone else is made active: the standby, which resumed, takes over.
        adopting = index(records, kind="note", name="Adopting")
        assert active in records[adopting]["data"]["vnfcs"], ctx
        isolated = index(records, adopting, kind="event", name="CleanupDone", src=active, ok=True)
        promoted = index(records, adopting, kind="command", name="AssignRole", role="active")
        assert isolated < promoted and records[promoted]["dst"] != active, ctx
        assert not select(records, name="ErrorReported"), ctx  # port in use
        assert second.stop() == 0, second.stderr
    finally:
        for pid in hung:  # whatever happened: never leave a stopped process behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
            kill_and_reap([pid])


@pytest.mark.timeout(90)
def test_stale_control_socket_is_not_a_running_deployment(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """What a crashed manager leaves: a socket file nobody listens on."""
    stale = runtime_dir / "crashed" / "control.sock"
    stale.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
        sock.listen()
    assert stale.exists()

    alone = cli("status")
    assert alone.returncode == 3, alone.stdout + alone.stderr  # UNKNOWN
    assert "no running deployment" in alone.stderr, alone.stderr

    name, config, _ = config_2n(tmp_path)
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    run.wait_steady()
    shown = cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["deployment"] == name


@pytest.mark.timeout(90)
def test_second_run_of_a_live_deployment_is_refused(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = config_2n(tmp_path)
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    before = run.wait_steady()
    again = cli("run", str(config), "--state-dir", str(tmp_path / "second"))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "already running" in again.stderr, again.stderr
    after = run.wait_steady()  # untouched: same VNFC processes, still serving
    assert [c["pid"] for c in after["vnfs"][0]["vnfcs"]] == [
        c["pid"] for c in before["vnfs"][0]["vnfcs"]
    ]
    assert wait_for_sync(lambda: udp_get(address), "an answer") is not None


@pytest.mark.timeout(120)
@pytest.mark.skipif(not cgroup_v2_writable(), reason="the NFVI needs a writable cgroup v2")
@pytest.mark.parametrize("agent_killed", [False, True], ids=["agents-alive", "host-agent-killed"])
def test_new_run_adopts_the_hosts_and_vms_left_by_a_crashed_manager(
    agent_killed: bool, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """With hosts and VMs, the crashed run's agents outlive it as its VNFCs do: the new run
    adopts them (same processes), isolates the hung active, which cannot resume, before the
    standby is promoted. A host whose agent is gone is removed (its cgroup) and booted anew."""
    name, port = unique_name("nf"), free_udp_port()
    raw = customize(example_raw("2n"), name=name, port=port, health=RELAXED_HEALTH)
    raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]
    config = write_config(raw, tmp_path / f"{name}.yaml")
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
    nfvha_runs.append(first)
    hung: list[int] = []
    try:
        status = first.wait_steady()
        vnf = status["vnfs"][0]
        active = vnf["service"]["active"][0]
        pids = {c["name"]: c["pid"] for c in vnf["vnfcs"]}
        (standby,) = set(pids) - {active}
        os.kill(pids[active], signal.SIGSTOP)
        hung.append(pids[active])
        first.proc.kill()
        first.proc.wait()
        root = next(p for p in cgroup_dirs(name) if p.exists())
        zones = {host: root / host for host in ("host-1", "host-2")}
        # A host agent lives in its host's zone itself; its guests in zones below it.
        agents = {
            h: [int(p) for p in (z / "cgroup.procs").read_text().split()] for h, z in zones.items()
        }
        assert all(agents.values()), agents  # the host agents outlived their manager
        if agent_killed:  # the standby's host loses its agent: that host is booted anew
            standby_host = next(h for h in agents if pids[standby] in cgroup_pids(zones[h]))
            kill_and_reap(agents[standby_host])

        second = NfvhaRun(config, name, runtime_dir, tmp_path / "second")
        nfvha_runs.append(second)
        status = second.wait_steady()
        assert wait_for_sync(lambda: udp_get(f"127.0.0.1:{port}"), "an answer") is not None
        assert not pid_alive(pids[active]), "the hung active of the crashed run is still there"
        records = second.records()
        ctx = dump_records(records)
        up = records[index(records, kind="note", name="NfviUp")]
        kept = {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]}
        if agent_killed:
            assert up["data"]["adopted_agents"] and standby_host not in up["data"]["adopted_agents"]
            assert not pid_alive(pids[standby]), ctx  # removed with its host's cgroup
        else:
            assert {"host-1", "host-2"} <= set(up["data"]["adopted_agents"]), ctx
            assert kept[standby] == pids[standby], ctx  # adopted, not restarted
            assert status["vnfs"][0]["service"]["active"] == [standby], ctx
            isolated = index(records, kind="event", name="CleanupDone", src=active, ok=True)
            promoted = index(records, kind="command", name="AssignRole", role="active")
            assert isolated < promoted, ctx
        assert not select(records, name="ErrorReported"), ctx  # port in use
        assert second.stop() == 0, second.stderr
    finally:
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
            kill_and_reap([pid])
        for run in nfvha_runs:
            run.close()
        reap_zombie_children()
        assert leftover_cgroups([name]) == {}
