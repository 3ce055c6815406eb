"""The operator's verbs on a running deployment (`nfvha clear|restart|stop|start VNFC`,
`nfvha switchover VNF`, `nfvha maintenance on|off VNF`) and the restart policy (delay with
backoff, failure-timeout), on real processes, with the trace as proof."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support.consumers import udp_request
from tests.integration.support.deployments import config_2n
from tests.integration.support.runs import NfvhaRun, cli, steady, vnfc_view
from tests.integration.support.trace import dump_records, index, select


def start(tmp_path: Path, runtime_dir: Path, nfvha_runs, **policies: Any):
    def edit(raw: dict[str, Any]) -> None:
        raw["vnfs"][0]["policies"].update(policies)

    name, config, address = config_2n(tmp_path, edit)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    status = run.wait_steady()
    vnf = status["vnfs"][0]
    active = vnf["service"]["active"][0]
    (standby,) = {c["name"] for c in vnf["vnfcs"]} - {active}
    return run, address, active, standby, {c["name"]: c["pid"] for c in vnf["vnfcs"]}


def verb(run: NfvhaRun, *args: str) -> str:
    done = cli(*args, "--socket", str(run.socket))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_switchover_hands_over_without_losing_an_acknowledged_write(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, address, active, standby, pids = start(tmp_path, runtime_dir, nfvha_runs)
    totals: list[int] = []
    done = threading.Event()

    def consumer() -> None:  # INCs all through both switchovers
        seq = 0
        while not done.is_set():
            seq += 1
            answer = udp_request(address, "INC", seq, timeout_s=1.0)
            if answer is not None:
                totals.append(answer[0])

    thread = threading.Thread(target=consumer)
    thread.start()
    try:
        time.sleep(0.2)
        verb(run, "switchover", "counter")
        status = run.wait_status(
            lambda st: steady(st) and st["vnfs"][0]["service"]["active"] == [standby],
            "the standby active",
        )
        time.sleep(0.2)
        verb(run, "switchover", "counter")
        run.wait_status(
            lambda st: steady(st) and st["vnfs"][0]["service"]["active"] == [active],
            "back to the first active",
        )
        time.sleep(0.2)
    finally:
        done.set()
        thread.join()
    records = run.records()
    ctx = dump_records(records)
    # Planned: no process restarted, no failure counted.
    assert {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]} == pids, ctx
    assert not select(records, kind="command", name="Cleanup"), ctx
    # The active steps down (confirmed) before the standby is made active.
    down = index(records, kind="command", name="AssignRole", dst=active, role="standby")
    confirmed = index(records, down, kind="event", name="RoleConfirmed", src=active)
    up = index(records, down, kind="command", name="AssignRole", dst=standby, role="active")
    assert down < confirmed < up, ctx
    # Nothing acknowledged lost: every total answered is above all answered before it.
    assert totals and all(b > a for a, b in zip(totals, totals[1:], strict=False)), totals
    final = udp_request(address, "INC", 10**6, timeout_s=2.0)
    assert final is not None and final[0] > totals[-1]


@pytest.mark.timeout(120)
def test_stop_keeps_a_vnfc_stopped_until_start_and_an_active_hands_over(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, address, active, standby, pids = start(tmp_path, runtime_dir, nfvha_runs)
    verb(run, "stop", active)
    status = run.wait_status(
        lambda st: (
            st["vnfs"][0]["service"]["active"] == [standby]
            and vnfc_view(st, active)["state"] == "stopped"
        ),
        "the standby active, the old active stopped",
    )
    assert vnfc_view(status, active)["held"] and vnfc_view(status, active)["failures"] == 0
    time.sleep(0.5)  # it is not restarted behind the operator's back
    assert vnfc_view(run.status() or {}, active)["state"] == "stopped"
    assert udp_request(address, "GET", 1) is not None
    verb(run, "start", active)
    status = run.wait_status(steady, "steady again")
    assert vnfc_view(status, active)["role"] == "standby"


@pytest.mark.timeout(120)
def test_clear_starts_an_escalated_vnfc_again_and_start_refuses_it(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, _, _, standby, pids = start(tmp_path, runtime_dir, nfvha_runs, restart_max=0)
    os.kill(pids[standby], signal.SIGKILL)
    run.wait_status(lambda st: vnfc_view(st, standby)["state"] == "escalated", "escalated")
    refused = cli("start", standby, "--socket", str(run.socket))
    assert refused.returncode == 1 and "clear it first" in refused.stderr, refused
    verb(run, "clear", standby)
    status = run.wait_status(steady, "steady again")
    assert vnfc_view(status, standby)["failures"] == 0


@pytest.mark.timeout(120)
def test_maintenance_observes_a_failure_and_acts_only_when_it_ends(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, _, _, standby, pids = start(tmp_path, runtime_dir, nfvha_runs)
    verb(run, "maintenance", "on", "counter")
    os.kill(pids[standby], signal.SIGKILL)
    status = run.wait_status(lambda st: vnfc_view(st, standby)["unattended"], "the exit observed")
    assert status["vnfs"][0]["maintenance"] and vnfc_view(status, standby)["state"] == "running"
    verb(run, "maintenance", "off", "counter")
    status = run.wait_status(
        lambda st: steady(st) and vnfc_view(st, standby)["pid"] != pids[standby], "restarted"
    )
    records = run.records()
    off = index(records, kind="note", name="Operator", on=False)
    assert index(records, kind="command", name="Cleanup", dst=standby) > off, dump_records(records)


@pytest.mark.timeout(120)
def test_restarts_back_off_and_escalations_expire_after_the_failure_timeout(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, _, _, standby, _ = start(
        tmp_path,
        runtime_dir,
        nfvha_runs,
        restart_max=2,
        restart_backoff_ms=100,
        failure_timeout_s=0.5,
    )
    for _ in range(3):  # immediate, then 100 ms, then escalated (the 3rd)
        pid = vnfc_view(run.wait_status(steady, "steady"), standby)["pid"]
        os.kill(pid, signal.SIGKILL)
        run.wait_status(lambda st, p=pid: vnfc_view(st, standby)["pid"] not in (p,), "gone")
    run.wait_status(steady, "steady after the failure-timeout")
    records = run.records()
    ctx = dump_records(records)
    delays = [r["data"]["after_s"] for r in select(records, name="SetTimer", timer="restart")]
    assert delays == [0.1], ctx
    escalated = index(records, kind="message", name="Escalate", vnfc=standby)
    expired = index(records, escalated, kind="event", name="TimerExpired", timer="failure-timeout")
    index(records, expired, kind="command", name="StartVnfc", dst=standby)


def test_verbs_name_what_is_wrong(tmp_path: Path, runtime_dir: Path, nfvha_runs) -> None:
    run, *_ = start(tmp_path, runtime_dir, nfvha_runs)
    for args, code, text in [
        (("restart", "nope"), 1, "no VNFC named 'nope'"),  # refused by the deployment
        (("switchover", "nope"), 1, "no VNF named 'nope'"),
        (("maintenance", "sideways", "counter"), 2, "sideways"),  # a usage error
    ]:
        done = cli(*args, "--socket", str(run.socket))
        assert done.returncode == code and text in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_reload_changes_in_place_and_restarts_only_the_vnfc_that_changed(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    run, address, active, standby, pids = start(tmp_path, runtime_dir, nfvha_runs)
    config = next(tmp_path.glob("*.yaml"))
    raw = yaml.safe_load(config.read_text())
    vnf = raw["vnfs"][0]

    # Policies only: applied in place, nothing restarted.
    vnf["policies"]["restart_max"] = 7
    config.write_text(yaml.safe_dump(raw))
    assert "updated in place: counter; restarting: -" in verb(run, "reload")
    status = run.status() or {}
    assert {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]} == pids

    # The active's definition: it alone is restarted, after handing over.
    next(c for c in vnf["vnfcs"] if c["name"] == active)["env"] = {"RELOADED": "1"}
    config.write_text(yaml.safe_dump(raw))
    assert f"restarting: {active}" in verb(run, "reload")
    status = run.wait_status(
        lambda st: steady(st) and vnfc_view(st, active)["pid"] != pids[active], "restarted"
    )
    assert vnfc_view(status, standby)["pid"] == pids[standby]
    assert status["vnfs"][0]["service"]["active"] == [standby]
    assert udp_request(address, "INC", 1) is not None

    # What shapes the deployment is refused, naming it; a broken file too; nothing changes.
    vnf["service"]["address"] = "127.0.0.1:1"
    config.write_text(yaml.safe_dump(raw))
    done = cli("reload", "--socket", str(run.socket))
    assert done.returncode == 1 and "'service' changed" in done.stderr, done.stderr
    config.write_text("vnfs: [")
    done = cli("reload", "--socket", str(run.socket))
    assert done.returncode == 1 and "not valid YAML" in done.stderr, done.stderr
    assert (run.status() or {})["vnfs"][0]["service"]["up"]
