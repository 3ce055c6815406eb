"""The data path outlives the manager: killing `nfvha run` stops no VNFC; the next run adopts the
VNFCs that still run instead of restarting them (same processes, same roles, nothing
acknowledged lost), and handles a failure afterwards as usual."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.consumers import udp_get, udp_request
from tests.integration.support.deployments import config_2n
from tests.integration.support.processes import kill_and_reap, pid_alive
from tests.integration.support.runs import NfvhaRun, steady
from tests.integration.support.trace import (
    dump_records,
    index,
    max_simultaneous_actives,
    select,
)
from tests.integration.support.waiting import wait_for_sync


def inc(address: str, seq: int) -> tuple[int, str] | None:
    return udp_request(address, "INC", seq, timeout_s=2.0)


def vnfc_pids(status: dict) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]}


@pytest.mark.timeout(120)
def test_vnfcs_outlive_a_killed_manager_and_the_next_run_adopts_them(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = config_2n(tmp_path)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    pids: dict[str, int] = {}
    try:
        first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
        nfvha_runs.append(first)
        status = first.wait_steady()
        pids = vnfc_pids(status)
        active = status["vnfs"][0]["service"]["active"][0]
        answers = [inc(address, seq) for seq in range(1, 11)]
        assert all(a is not None for a in answers), answers
        acked = answers[-1][0]

        first.proc.kill()  # the manager dies; nothing stops the VNFCs
        first.proc.wait()
        for _ in range(10):  # the active keeps serving what is acknowledged
            assert udp_get(address) == (acked, active)
            time.sleep(0.02)
        assert all(pid_alive(pid) for pid in pids.values()), pids

        second = NfvhaRun(config, name, runtime_dir, tmp_path / "second")
        nfvha_runs.append(second)
        status = second.wait_steady()
        records = second.records()
        ctx = dump_records(records)
        assert vnfc_pids(status) == pids, ctx  # adopted, not restarted
        assert status["vnfs"][0]["service"]["active"] == [active], ctx
        assert not select(records, kind="command", name="StartVnfc"), ctx
        index(records, kind="command", name="KeepRole", dst=active)
        assert inc(address, 11) == (acked + 1, active), ctx  # nothing acknowledged lost

        # A failure afterwards is handled as usual: the standby takes over.
        os.kill(pids[active], signal.SIGKILL)
        status = second.wait_status(
            lambda st: (
                st["vnfs"][0]["service"]["active"] not in ([], [active])
                and all(c["state"] == "running" for c in st["vnfs"][0]["vnfcs"])
            ),
            "the standby active and the failed VNFC back",
        )
        successor = status["vnfs"][0]["service"]["active"][0]
        answer = wait_for_sync(lambda: inc(address, 12), "an INC answered by the successor")
        assert answer == (acked + 2, successor), answer
        assert second.stop() == 0, second.stderr
        assert not any(pid_alive(pid) for pid in vnfc_pids(status).values())
        assert not (runtime_dir / f"{name}.lock").exists()  # a deliberate stop leaves nothing
    finally:
        kill_and_reap(pid for pid in pids.values() if pid)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hosts", [False, True], ids=["processes", "hosts-and-vms"])
def test_the_standby_manager_takes_over_and_the_service_never_stops(
    hosts: bool, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """Writes included (direct sync): every INC through the takeover is acknowledged. With
    hosts, their agents and VMs are adopted too."""
    if hosts and not cgroup_v2_writable():
        pytest.skip("the NFVI needs a writable cgroup v2")

    def on_hosts(raw: dict) -> None:
        if hosts:
            raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]

    name, config, address = config_2n(tmp_path, on_hosts)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    pids: dict[str, int] = {}
    new_leader = 0
    try:
        status = leader.wait_steady()
        pids, active = vnfc_pids(status), status["vnfs"][0]["service"]["active"][0]
        assert status["manager_pid"] == leader.proc.pid
        wait_for_sync(lambda: "waiting to lead" in leader.stderr, "the standby manager")
        acked = [inc(address, seq) for seq in range(1, 6)][-1][0]

        answered: list[bool] = []
        done = threading.Event()

        def consumer() -> None:  # INCs all through the takeover
            seq = 100
            while not done.is_set():
                seq += 1
                answered.append(inc(address, seq) is not None)
                time.sleep(0.002)

        reader = threading.Thread(target=consumer)
        reader.start()
        try:
            leader.proc.kill()  # the leading manager dies
            leader.proc.wait()
            status = wait_for_sync(
                lambda: (st := leader.status()) and st["manager_pid"] != leader.proc.pid and st,
                "the standby manager leading",
            )
            new_leader = status["manager_pid"]
            status = wait_for_sync(
                lambda: (st := leader.status()) and steady(st) and st, "steady under the new leader"
            )
        finally:
            done.set()
            reader.join()
        ctx = dump_records(leader.records())
        assert answered and all(answered), f"{answered.count(False)} INCs unanswered\n{ctx}"
        assert vnfc_pids(status) == pids, ctx  # adopted, not restarted
        assert status["vnfs"][0]["service"]["active"] == [active], ctx
        assert inc(address, 6) == (acked + len(answered) + 1, active), ctx
    finally:
        if new_leader:
            os.kill(new_leader, signal.SIGTERM)  # a deliberate stop: everything goes
            wait_for_sync(lambda: not pid_alive(new_leader), "the new leader stopped")
        kill_and_reap(pid for pid in pids.values() if pid)
    assert not any(pid_alive(pid) for pid in pids.values())


SLOW_COUNTER = Path(__file__).parent / "components" / "slow_counter.py"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("coordination", ["embedded", "etcd"])
def test_a_failover_half_done_when_the_leader_dies_is_finished_by_the_next(
    coordination: str, tmp_path: Path, runtime_dir: Path, nfvha_runs, request
) -> None:
    """The leader dies after the failed active is isolated and the standby is told to be
    active, before it confirms (it is slow to bind): the new leader finishes that failover from
    what it observes; never two actives, nothing acknowledged lost. With etcd coordination the
    new leader is elected on the etcd lease (its token higher)."""
    endpoints = request.getfixturevalue("etcd_cluster").endpoints if coordination == "etcd" else []

    def slow_to_bind(raw: dict) -> None:
        if endpoints:
            raw["coordination"] = "etcd://" + ",".join(endpoints)
        # Slow to bind, but well within the health budget (5 x 100 ms): pings wait for it.
        for vnfc in raw["vnfs"][0]["vnfcs"]:
            vnfc["command"] = [sys.executable, str(SLOW_COUNTER)]
            vnfc["env"] = {"SLOW_ACTIVE_S": "0.25"}

    name, config, address = config_2n(tmp_path, slow_to_bind)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    pids: dict[str, int] = {}
    new_leader = 0
    try:
        status = leader.wait_steady()
        pids, active = vnfc_pids(status), status["vnfs"][0]["service"]["active"][0]
        (successor,) = set(pids) - {active}
        wait_for_sync(lambda: "waiting to lead" in leader.stderr, "the standby manager")
        acked = [inc(address, seq) for seq in range(1, 6)][-1][0]

        os.kill(pids[active], signal.SIGKILL)
        wait_for_sync(
            lambda: (
                select(leader.records(), kind="command", name="AssignRole", dst=successor)
                and any(
                    r["data"]["role"] == "active"
                    for r in select(leader.records(), name="AssignRole", dst=successor)
                )
            ),
            "the successor told to be active",
        )
        leader.proc.kill()  # before the successor has bound the port and confirmed
        leader.proc.wait()
        status = wait_for_sync(
            lambda: (
                (st := leader.status())
                and st["manager_pid"] != leader.proc.pid
                and steady(st)
                and st
            ),
            "steady under the new leader",
        )
        new_leader = status["manager_pid"]
        records = leader.records()
        ctx = dump_records(records)
        assert status["vnfs"][0]["service"]["active"] == [successor], ctx
        adopting = index(records, kind="note", name="Adopting")
        told = index(records, kind="command", name="AssignRole", dst=successor, role="active")
        confirmed = [
            i
            for i, r in enumerate(records)
            if r["name"] == "RoleConfirmed"
            and r.get("src") == successor
            and r["data"]["role"] == "active"
        ]
        assert not any(told < i < adopting for i in confirmed), ctx  # the window was hit
        index(records, adopting, kind="command", name="KeepRole", dst=successor)
        assert max_simultaneous_actives(records) == 1, ctx
        assert inc(address, 6) == (acked + 1, successor), ctx
        tokens = [r["data"]["token"] for r in select(records, kind="note", name="Leading")]
        assert len(tokens) == (2 if endpoints else 0) and tokens == sorted(set(tokens)), ctx
        assert status["leader"]["coordination"] == coordination, status["leader"]
    finally:
        if new_leader:
            os.kill(new_leader, signal.SIGTERM)
            wait_for_sync(lambda: not pid_alive(new_leader), "the new leader stopped")
        kill_and_reap(pid for pid in pids.values() if pid)


@pytest.mark.timeout(120)
def test_with_every_manager_dead_a_crashed_active_is_failed_over_once_one_is_back(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """No manager runs, then the active dies: nobody can fail over, and the service is down
    (the standby must not promote itself: only a manager can prove the active gone). When a
    manager is back it adopts the standby, finds the active gone and makes the standby active
    with every acknowledged write: the outage ends a failover after the manager's return."""
    name, config, address = config_2n(tmp_path)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    pids: dict[str, int] = {}
    try:
        first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
        nfvha_runs.append(first)
        status = first.wait_steady()
        pids, active = vnfc_pids(status), status["vnfs"][0]["service"]["active"][0]
        (standby,) = set(pids) - {active}
        acked = [inc(address, seq) for seq in range(1, 6)][-1][0]
        first.proc.kill()
        first.proc.wait()
        os.kill(pids[active], signal.SIGKILL)
        wait_for_sync(lambda: not pid_alive(pids[active]), "the active gone")
        time.sleep(0.3)
        assert udp_get(address) is None  # nobody serves, and nobody may yet

        second = NfvhaRun(config, name, runtime_dir, tmp_path / "second")
        nfvha_runs.append(second)
        status = second.wait_steady()
        ctx = dump_records(second.records())
        assert status["vnfs"][0]["service"]["active"] == [standby], ctx
        assert vnfc_pids(status)[standby] == pids[standby], ctx  # adopted, then promoted
        assert inc(address, 6) == (acked + 1, standby), ctx
        assert second.stop() == 0, second.stderr
    finally:
        kill_and_reap(pid for pid in pids.values() if pid)


@pytest.mark.timeout(120)
def test_an_escalation_outlives_the_manager_that_made_it(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """The VNFM was told a VNFC would not be restarted: a new manager does not restart it."""

    def no_restarts(raw: dict) -> None:
        raw["vnfs"][0]["policies"]["restart_max"] = 0

    name, config, address = config_2n(tmp_path, no_restarts)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    pids: dict[str, int] = {}
    try:
        first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
        nfvha_runs.append(first)
        status = first.wait_steady()
        pids = vnfc_pids(status)
        active = status["vnfs"][0]["service"]["active"][0]
        (standby,) = set(pids) - {active}
        os.kill(pids[standby], signal.SIGKILL)
        first.wait_status(
            lambda st: [e["vnfc"] for e in st["escalations"]] == [standby], "the escalation"
        )
        first.proc.kill()
        first.proc.wait()

        second = NfvhaRun(config, name, runtime_dir, tmp_path / "second", standby_manager=False)
        nfvha_runs.append(second)
        status = second.wait_status(
            lambda st: st["vnfs"][0]["service"]["active"] and st["escalations"], "adopted"
        )
        records = second.records()
        ctx = dump_records(records)
        assert [e["vnfc"] for e in status["escalations"]] == [standby], ctx
        assert {c["name"]: c["state"] for c in status["vnfs"][0]["vnfcs"]}[standby] == "escalated"
        assert not select(records, kind="command", name="StartVnfc"), ctx
        assert udp_get(address) is not None  # the active serves on
        assert second.stop() == 0, second.stderr
    finally:
        kill_and_reap(pid for pid in pids.values() if pid)
