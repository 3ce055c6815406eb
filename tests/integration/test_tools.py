"""nfvha among the tools around it, for real: Prometheus scrapes /metrics over HTTP, notify
hooks run as processes, the failover line reaches stderr, `status` exits Nagios-style, and
systemd's notify protocol arrives on a real datagram socket."""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support.deployments import config_2n, free_tcp_port
from tests.integration.support.runs import NfvhaRun, cli, steady, vnfc_view
from tests.integration.support.waiting import PATIENCE_S, wait_for_sync

HOOK = (
    f"{sys.executable} -c \"import os; open('hooks.log', 'a').write("
    "' '.join(os.environ[k] for k in ('NFVHA_EVENT', 'NFVHA_VNFC', 'NFVHA_ROLE')) + '\\n')\""
)


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def active_of(status: dict[str, Any]) -> str:
    return status["vnfs"][0]["service"]["active"][0]


@pytest.mark.timeout(90)
def test_a_failover_moves_the_metrics_runs_the_hooks_and_is_logged(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    port = free_tcp_port()

    def edit(raw: dict[str, Any]) -> None:
        raw["metrics"] = {"port": port}
        raw["vnfs"][0]["hooks"] = {"active": HOOK, "standby": HOOK, "failed": HOOK}

    name, config, _ = config_2n(tmp_path, edit)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    first = run.wait_steady()
    assert cli("status", "--socket", str(run.socket)).returncode == 0  # OK
    before = scrape(port)
    old = active_of(first)
    new = next(c["name"] for c in first["vnfs"][0]["vnfcs"] if c["name"] != old)

    os.kill(vnfc_view(first, old)["pid"], signal.SIGKILL)
    after = run.wait_status(
        lambda st: steady(st) and vnfc_view(st, old)["failures"] == 1, "failover and repair"
    )
    assert active_of(after) == new
    samples = scrape(port)

    vnf = 'vnf="counter"'
    assert before[f"nfvha_failovers_total{{{vnf}}}"] == 0
    assert samples[f"nfvha_failovers_total{{{vnf}}}"] == 1
    assert samples[f'nfvha_restarts_total{{{vnf},vnfc="{old}"}}'] == 1
    assert samples[f'nfvha_restarts_total{{{vnf},vnfc="{new}"}}'] == 0
    assert samples[f"nfvha_detection_seconds_count{{{vnf}}}"] == 1
    assert samples[f"nfvha_recovery_seconds_count{{{vnf}}}"] == 1
    assert before[f'nfvha_service_up{{service="count",{vnf}}}'] == 1
    assert samples[f'nfvha_service_up{{service="count",{vnf}}}'] == 1

    # The hooks ran in the order of the trace: the active failed, then the standby took over.
    log = tmp_path / "hooks.log"
    lines = wait_for_sync(
        lambda: log.exists() and f"standby {old} standby" in log.read_text() and log.read_text(),
        "the hooks of the repaired VNFC",
    ).splitlines()
    assert lines.index(f"failed {old} active") < lines.index(f"active {new} active")
    assert lines.index(f"active {new} active") < lines.index(f"standby {old} standby")
    assert any(r["name"] == "HookDone" for r in run.records())
    assert f"nfvha event=failover vnf=counter from={old} to={new}" in run.stderr

    assert run.stop() == 0
    gone = cli("status", "--socket", str(run.socket))
    assert gone.returncode == 3, gone.stderr  # UNKNOWN: nothing answers
    assert "Traceback" not in gone.stderr


@pytest.mark.timeout(90)
def test_status_is_critical_once_a_vnfc_is_escalated(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["vnfs"][0]["policies"]["restart_max"] = 0  # the first failure escalates

    name, config, _ = config_2n(tmp_path, edit)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    first = run.wait_steady()
    standby = next(c for c in first["vnfs"][0]["vnfcs"] if c["role"] == "standby")
    os.kill(standby["pid"], signal.SIGKILL)
    run.wait_status(lambda st: st["escalations"], "the escalation")

    plain = cli("status", "--socket", str(run.socket))
    as_json = cli("status", "--json", "--socket", str(run.socket))
    assert (plain.returncode, as_json.returncode) == (2, 2)  # CRITICAL, also with --json
    assert f"nfvha event=escalation vnf=counter vnfc={standby['name']}" in run.stderr


class NotifySocket:
    """systemd's end of sd_notify: a datagram socket that learns each sender's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(PATIENCE_S)

    def receive(self) -> tuple[int, list[str]]:
        """(sender pid, its lines)."""
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = next(
            struct.unpack("3i", cmsg[2][:12])[0]
            for cmsg in ancillary
            if cmsg[:2] == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        )
        return pid, data.decode().splitlines()

    def until(self, line: str, senders: set[int]) -> list[str]:
        """Every line up to and including ``line``, noting who sent them."""
        seen: list[str] = []
        while line not in seen:
            pid, lines = self.receive()
            senders.add(pid)
            seen += lines
        return seen

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.mark.timeout(90)
def test_systemd_hears_ready_watchdog_and_stopping_from_the_leader_only(
    tmp_path: Path, runtime_dir: Path, nfvha_runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
        monkeypatch.setenv("WATCHDOG_USEC", "100000")
        name, config, _ = config_2n(tmp_path)
        run = NfvhaRun(config, name, runtime_dir, tmp_path)  # with its hot standby manager
        nfvha_runs.append(run)
        senders: set[int] = set()

        notify.until("READY=1", senders)
        status = run.status()
        assert status is not None and all(v["service"]["up"] for v in status["vnfs"]), (
            "READY=1 before every service was up"
        )
        pings = [line for line in notify.until("WATCHDOG=1", senders) if line == "WATCHDOG=1"]
        while len(pings) < 3:
            pings += [line for line in notify.until("WATCHDOG=1", senders) if line == "WATCHDOG=1"]

        run.proc.send_signal(signal.SIGTERM)
        notify.until("STOPPING=1", senders)
        assert run.proc.wait(timeout=PATIENCE_S) == 0
        assert senders == {run.proc.pid}  # the standby manager never spoke for the unit
    finally:
        notify.close()


def test_a_run_that_joins_a_led_deployment_is_ready_at_once_and_takes_over(
    tmp_path: Path, runtime_dir: Path, nfvha_runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The systemd unit's mode (--join): restarted while the deployment is led (its leader
    died, its standby leads), nfvha run joins as the standby instead of failing the unit."""
    name, config, address = config_2n(tmp_path)
    (tmp_path / "leader").mkdir()
    leader = NfvhaRun(config, name, runtime_dir, tmp_path / "leader", standby_manager=False)
    nfvha_runs.append(leader)
    leader.wait_steady()
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
        monkeypatch.setenv("WATCHDOG_USEC", "100000")
        joined = NfvhaRun(config, name, runtime_dir, tmp_path, extra=("--join",))
        nfvha_runs.append(joined)
        senders: set[int] = set()
        notify.until("READY=1", senders)  # at once: the services are up under the leader
        assert joined.proc.poll() is None and senders == {joined.proc.pid}

        leader.proc.kill()
        leader.proc.wait()
        status = joined.wait_status(
            lambda st: st["manager_pid"] == joined.proc.pid and steady(st), "the joined one leads"
        )
        assert status["vnfs"][0]["service"]["up"]
        assert joined.stop() == 0, joined.stderr
    finally:
        notify.close()
