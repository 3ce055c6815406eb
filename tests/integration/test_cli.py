"""The operator's view, end to end with subprocesses: `nfvha run` in the background, `status`,
`fault`, `trace` against its control socket, escalation after repeated failures, and a clean
stop on SIGTERM or SIGINT that leaves no VNFC behind."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    customize,
    example_raw,
    free_udp_port,
    unique_name,
    write_config,
)
from tests.integration.support.processes import pid_alive
from tests.integration.support.runs import NfvhaRun, cli, vnfc_view
from tests.integration.support.trace import dump_records, index, select


def start(model: str, tmp_path: Path, runtime_dir: Path, runs: list, **overrides) -> NfvhaRun:
    name = unique_name()
    raw = customize(example_raw(model), name=name, port=free_udp_port(), **overrides)
    config = write_config(raw, tmp_path / f"{name}.yaml")
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    runs.append(run)
    return run


def status_json(run: NfvhaRun) -> dict:
    done = cli("status", "--json", "--socket", str(run.socket))
    assert done.returncode in (0, 1, 2), done.stderr  # Nagios codes of a deployment that answers
    return json.loads(done.stdout)


def trace_json(run: NfvhaRun) -> list[dict]:
    done = cli("trace", "--json", "--socket", str(run.socket))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def roles(status: dict) -> dict[str, str]:
    return {c["name"]: c["role"] for c in status["vnfs"][0]["vnfcs"]}


def pids(status: dict) -> set[int]:
    return {c["pid"] for c in status["vnfs"][0]["vnfcs"] if c["pid"]}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_status_fault_trace_stop(sig, tmp_path, runtime_dir, nfvha_runs) -> None:
    run = start("2n", tmp_path, runtime_dir, nfvha_runs, health=RELAXED_HEALTH)
    run.wait_steady()
    seen_pids: set[int] = set()

    before = status_json(run)
    vnf = before["vnfs"][0]
    assert before["deployment"] == run.name
    assert sorted(roles(before).values()) == ["active", "standby"], before
    assert all(isinstance(c["pid"], int) and pid_alive(c["pid"]) for c in vnf["vnfcs"]), before
    active = vnf["service"]["active"]
    assert len(active) == 1 and roles(before)[active[0]] == "active", before
    assert vnf["service"]["up"] is True
    old_active = active[0]
    (standby,) = [n for n, r in roles(before).items() if r == "standby"]
    old_pid = vnfc_view(before, old_active)["pid"]
    seen_pids |= pids(before)

    done = cli("fault", "vnfc-crash", old_active, "--socket", str(run.socket))
    assert done.returncode == 0, done.stderr
    assert f"vnfc-crash: {old_active} (pid {old_pid})" in done.stdout

    run.wait_status(
        lambda st: (
            st["vnfs"][0]["service"]["active"] == [standby]
            and vnfc_view(st, old_active)["state"] == "running"
            and vnfc_view(st, old_active)["role"] == "standby"
            and vnfc_view(st, old_active)["pid"] not in (None, old_pid)
        ),
        "the standby to take over and the killed VNFC to come back as standby",
    )
    after = status_json(run)
    assert after["vnfs"][0]["service"]["active"] == [standby], after
    assert roles(after) == {standby: "active", old_active: "standby"}, after
    assert vnfc_view(after, old_active)["failures"] == 1
    assert not pid_alive(old_pid)
    seen_pids |= pids(after)

    records = trace_json(run)
    fault = index(records, kind="fault", name="vnfc-crash", dst=old_active)
    assert records[fault]["data"]["pid"] == old_pid
    isolated = index(records, fault, kind="event", name="CleanupDone", src=old_active, ok=True)
    assign = index(records, fault, kind="command", name="AssignRole", dst=standby, role="active")
    confirmed = index(records, assign, kind="event", name="RoleConfirmed", src=standby)
    restart = index(records, fault, kind="command", name="StartVnfc", dst=old_active)
    assert isolated < assign < confirmed < restart, dump_records(records)
    assert all("t" in r and "kind" in r and "name" in r for r in records)

    assert run.stop(sig) == 0, run.stderr
    stderr = run.stderr
    assert "Traceback" not in stderr, stderr
    assert "stopped; every process it started is gone" in stderr, stderr
    # Every VNFC it ever started is gone (the file trace has them all, status the latest).
    file_records = [json.loads(line) for line in run.trace_path.read_text().splitlines()]
    seen_pids |= {r["data"]["pid"] for r in select(file_records, name="ProcessStarted")}
    assert len(seen_pids) >= 3
    alive = [p for p in seen_pids if pid_alive(p)]
    assert not alive, f"VNFCs still running after nfvha run exited: {alive}"
    assert not run.deployment_dir.exists(), list(run.deployment_dir.iterdir())
    index(file_records, kind="note", name="DeploymentStopped")


@pytest.mark.timeout(90)
def test_repeated_failures_escalate(tmp_path, runtime_dir, nfvha_runs) -> None:
    run = start(
        "none",
        tmp_path,
        runtime_dir,
        nfvha_runs,
        health=RELAXED_HEALTH,
        policies={"restart_max": 2, "restart_probation_s": 3600},
    )
    vnfc = "counter-solo"
    status = run.wait_steady()
    killed = []
    for n in (1, 2, 3):
        pid = vnfc_view(status, vnfc)["pid"]
        done = cli("fault", "vnfc-crash", vnfc, "--socket", str(run.socket))
        assert done.returncode == 0, done.stderr
        killed.append(pid)
        if n < 3:  # repaired: running again with a new process, serving
            status = run.wait_status(
                lambda st, pid=pid: vnfc_view(st, vnfc)["pid"] not in (None, pid) and steady1(st),
                f"{vnfc} to be restarted after failure {n}",
            )
            assert vnfc_view(status, vnfc)["failures"] == n
    status = run.wait_status(
        lambda st: vnfc_view(st, vnfc)["state"] == "escalated", f"{vnfc} to be escalated"
    )

    shown = status_json(run)
    view = vnfc_view(shown, vnfc)
    assert view["state"] == "escalated", shown
    assert view["failures"] == 3 and view["pid"] is None, shown
    assert [e["vnfc"] for e in shown["escalations"]] == [vnfc], shown
    assert shown["escalations"][0]["failures"] == 3
    assert shown["vnfs"][0]["service"]["up"] is False
    assert shown["vnfs"][0]["error_open"] is True

    records = trace_json(run)
    context = dump_records(records)
    faults = [i for i, r in enumerate(records) if r["kind"] == "fault"]
    assert len(faults) == 3, context
    # Two repairs, then none: the third failure is escalated to the VNFM instead.
    starts = [i for i, r in enumerate(records) if r["name"] == "StartVnfc" and r["dst"] == vnfc]
    assert len(starts) == 3, context  # the first start and two restarts
    assert faults[0] < starts[1] < faults[1] < starts[2] < faults[2], context
    isolated = index(records, faults[2], kind="event", name="CleanupDone", src=vnfc, ok=True)
    escalate = index(records, isolated, kind="message", name="Escalate", dst="vnfm")
    assert records[escalate]["data"]["vnfc"] == vnfc
    assert records[escalate]["data"]["failures"] == 3
    assert not select(records[faults[2] :], name="StartVnfc"), context
    assert not any(pid_alive(p) for p in killed)

    text = cli("status", "--socket", str(run.socket))
    assert text.returncode == 2 and "escalated" in text.stdout, text.stdout + text.stderr

    assert run.stop() == 0, run.stderr


def steady1(status: dict) -> bool:
    vnf = status["vnfs"][0]
    return vnf["service"]["up"] and all(c["state"] == "running" for c in vnf["vnfcs"])
