"""Containment that holds for any daemon: a VNFC whose server detaches (fork, setsid, fork) is
isolated for real through its cgroup, then restarted; without cgroups nfvha says that such a
daemon escapes; per VNFC stop signal and user; a command that does not exist stops `nfvha run`
before it starts anything."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml

from nfvha.drivers.containment import ENV_SWITCH
from tests.integration.support.cgroups import cgroup_v2_writable, leftover_cgroups
from tests.integration.support.deployments import free_udp_port, unique_name, write_config
from tests.integration.support.processes import pid_alive
from tests.integration.support.runs import NfvhaRun, cli, vnfc_view
from tests.integration.support.trace import dump_records, index
from tests.integration.support.waiting import wait_for_sync

COMPONENTS = Path(__file__).parent / "components"
HEALTH = {"kind": "udp", "interval_ms": 100, "timeout_ms": 100, "failure_threshold": 3}
needs_cgroups = pytest.mark.skipif(
    not cgroup_v2_writable(), reason="VNFC cgroups need a writable cgroup v2 hierarchy"
)


def single(name: str, address: str, command: list[str], **vnfc: object) -> dict:
    return {
        "name": name,
        "vnfs": [
            {
                "name": "d",
                "redundancy": {"model": "none"},
                "state": "none",
                "sdk": False,
                "service": {"name": "s", "protocol": "udp", "address": address},
                "vnfcs": [{"name": "d-1", "command": command, **vnfc}],
                "policies": {"health_check": HEALTH},
            }
        ],
    }


def daemon_config(tmp_path: Path) -> tuple[str, Path, str, Path]:
    name, address = unique_name(), f"127.0.0.1:{free_udp_port()}"
    pidfile = tmp_path / "server.pid"
    argv = [sys.executable, str(COMPONENTS / "detaching_daemon.py"), address, str(pidfile)]
    return name, write_config(single(name, address, argv), tmp_path / "d.yaml"), address, pidfile


@pytest.fixture
def no_cgroup_left(nfvha_runs):
    """Torn down after the runs (it depends on them): then no cgroup of these names is left."""
    names: list[str] = []
    yield names
    assert leftover_cgroups(names) == {}, "a VNFC cgroup was left behind"


def ask(address: str) -> str | None:
    """One datagram to the detached daemon; its answer, None if none comes."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(b"GET 0", (host, int(port)))
        try:
            return s.recv(2048).decode()
        except TimeoutError:
            return None


def server_pid(pidfile: Path, other_than: int | None = None) -> int:
    def read() -> int | None:
        try:
            pid = int(pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid != other_than and pid_alive(pid) else None

    return wait_for_sync(read, "the detached server to run")


def restarted(run: NfvhaRun, failures: int) -> dict:
    return run.wait_status(
        lambda st: (
            vnfc_view(st, "d-1")["failures"] == failures
            and vnfc_view(st, "d-1")["state"] == "running"
            and st["vnfs"][0]["service"]["up"]
        ),
        f"d-1 restarted after failure {failures}",
    )


@needs_cgroups
@pytest.mark.timeout(120)
@pytest.mark.parametrize("in_vm", [False, True], ids=["this-machine", "in-a-vm"])
def test_a_detached_daemon_is_isolated_through_its_cgroup(
    in_vm: bool, tmp_path: Path, runtime_dir: Path, nfvha_runs, no_cgroup_left
) -> None:
    """Kill the started process, then hang the detached server: each time the server is gone
    before the restart (the new one binds the very port, which the old one held), and at the
    stop nothing of it is left. In a VM the VNFC has a cgroup of its own inside the VM's."""
    name, config, address, pidfile = daemon_config(tmp_path)
    if in_vm:
        raw = yaml.safe_load(config.read_text())
        raw["hosts"] = [{"name": "host-1"}]
        config.write_text(yaml.safe_dump(raw))
    no_cgroup_left.append(name)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    started = vnfc_view(run.wait_steady(), "d-1")["pid"]
    first = server_pid(pidfile)
    assert os.getsid(first) != os.getsid(started), "the server did not detach"

    os.kill(started, signal.SIGKILL)  # the server itself is untouched: only isolation ends it
    restarted(run, 1)
    second = server_pid(pidfile, other_than=first)
    assert not pid_alive(first), "the detached server of the killed VNFC still runs"
    assert ask(address) == f"OK {second}"  # the new server holds the port

    os.kill(second, signal.SIGSTOP)  # hung: only the udp health check can tell
    restarted(run, 2)
    server_pid(pidfile, other_than=second)
    assert not pid_alive(second), "the hung detached server still exists"

    records = run.records()
    done = -1
    for _ in (1, 2):  # isolated (by the kernel's word: the cgroup is empty), then restarted
        done = index(records, done + 1, name="CleanupDone", src="d-1", ok=True)
        assert "populated 0" in records[done]["data"]["detail"], dump_records(records)
        index(records, done, name="ProcessStarted", src="d-1")
    assert run.stop() == 0, run.stderr
    assert not pid_alive(int(pidfile.read_text())), "the last server outlived the stop"
    assert "escapes" not in run.stderr


@pytest.mark.timeout(60)
def test_without_cgroups_check_and_run_warn(
    tmp_path: Path, runtime_dir: Path, nfvha_runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SWITCH, "off")
    name, config, _, _ = daemon_config(tmp_path)
    checked = cli("check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "warning:" in checked.stderr and "escapes its group" in checked.stderr
    # The plain counter stays in its group: this run only shows the warning.
    address = f"127.0.0.1:{free_udp_port()}"
    argv = ["nfvha-counter", "--standalone", "--address", address]
    config = write_config(single(name, address, argv), tmp_path / "c.yaml")
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    run.wait_steady()
    assert run.stop() == 0
    assert "escapes its group" in run.stderr


@pytest.mark.timeout(60)
def test_a_missing_command_stops_run_before_it_starts(tmp_path: Path) -> None:
    name, address = unique_name(), f"127.0.0.1:{free_udp_port()}"
    config = write_config(
        single(name, address, ["no-such-daemon-nfvha", "-x"]), tmp_path / "m.yaml"
    )
    result = cli("run", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2, result.stderr
    assert f"{config}: vnfs[0].vnfcs[0].command: no-such-daemon-nfvha" in result.stderr
    assert "not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), "it started something"


@pytest.mark.timeout(60)
def test_stop_signal_and_user(tmp_path: Path, runtime_dir: Path, nfvha_runs) -> None:
    """The deliberate stop sends the VNFC's stop signal; it runs as its user."""
    if os.geteuid() != 0:
        pytest.skip("running a VNFC as another user needs root")
    name, address = unique_name(), f"127.0.0.1:{free_udp_port()}"
    out = tmp_path / "stopped-by"
    argv = [sys.executable, str(COMPONENTS / "signal_recorder.py"), address, str(out)]
    raw = single(name, address, argv, stop_signal="SIGINT")
    raw["vnfs"][0]["policies"]["cleanup_grace_ms"] = 5000
    other = f"127.0.0.1:{free_udp_port()}"  # a second VNF: the counter, as nobody
    counter = {"name": "n-1", "command": f"nfvha-counter --standalone --address {other}"}
    counter["user"] = "nobody"
    service = {"name": "n", "protocol": "udp", "address": other}
    raw["vnfs"].append({**raw["vnfs"][0], "name": "n", "service": service, "vnfcs": [counter]})
    config = write_config(raw, tmp_path / "s.yaml")
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    status = run.wait_steady()
    pid = vnfc_view(status, "n-1")["pid"]
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid_line = next(line for line in lines if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65534"] * 4, uid_line
    assert run.stop() == 0, run.stderr
    assert out.read_text() == "SIGINT"
