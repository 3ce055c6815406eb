"""Off-the-shelf daemons under `nfvha run`, from the examples: dnsmasq (model none, dns check)
and HAProxy (n+m with an on-demand spare, http check). Each is killed (SIGKILL) and hung
(SIGSTOP); the consumer is `nfvha probe` speaking the daemon's own protocol. Proof is by
ordering: answers before the fault, none across it, answers after it; the trace says how the
failure was seen (exit, or the protocol check) and that the old process was isolated first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha import config as cfg
from tests.integration.support.deployments import free_tcp_port, free_udp_port, unique_name
from tests.integration.support.processes import kill_and_reap, pid_alive
from tests.integration.support.runs import NFVHA, NfvhaRun, cli
from tests.integration.support.trace import dump_records, index
from tests.integration.support.waiting import PATIENCE_S, wait_for_sync

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def daemon_path(name: str) -> str:
    """The daemon's executable; the test is skipped, naming the package, when it is absent."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        how = "`make test` installs it" if os.geteuid() == 0 else "as root, `make daemons`"
        pytest.skip(f"{name} is not installed (Debian package {name}; {how})")
    return found


def dnsmasq_config(tmp_path: Path) -> tuple[Path, str, str]:
    """examples/dnsmasq.yaml on a free port: (config, deployment name, probe target)."""
    raw = cfg.read_mapping(EXAMPLES / "dnsmasq.yaml")
    name, port = unique_name("dns"), free_udp_port()
    vnf = raw["vnfs"][0]
    vnf["service"]["address"] = f"127.0.0.1:{port}"
    command = vnf["vnfcs"][0]["command"].replace("--port=5353", f"--port={port}")
    vnf["vnfcs"][0]["command"] = command.replace("dnsmasq", daemon_path("dnsmasq"), 1)
    raw["name"] = name
    config = tmp_path / "dnsmasq.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config, name, f"dns://127.0.0.1:{port}/nfvha.test"


def haproxy_config(tmp_path: Path) -> tuple[Path, str, str]:
    """examples/haproxy.yaml (and its haproxy.cfg) on a free port."""
    raw = cfg.read_mapping(EXAMPLES / "haproxy.yaml")
    name, address = unique_name("web"), f"127.0.0.1:{free_tcp_port()}"
    vnf = raw["vnfs"][0]
    vnf["service"]["address"] = address
    binary = daemon_path("haproxy")
    for vnfc in vnf["vnfcs"]:
        vnfc["env"]["HTTP_ADDRESS"] = address
        vnfc["command"] = vnfc["command"].replace("haproxy", binary, 1)
    raw["name"] = name
    shutil.copy(EXAMPLES / "haproxy.cfg", tmp_path / "haproxy.cfg")
    config = tmp_path / "haproxy.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config, name, f"http://{address}/"


DAEMONS: dict[str, Callable[[Path], tuple[Path, str, str]]] = {
    "dnsmasq": dnsmasq_config,
    "haproxy": haproxy_config,
}


def active_vnfc(status: dict[str, Any]) -> dict[str, Any] | None:
    """The active VNFC, when the service is up and it runs."""
    vnf = status["vnfs"][0]
    if not vnf["service"]["up"]:
        return None
    for c in vnf["vnfcs"]:
        if c["role"] == "active" and c["state"] == "running" and c["pid"]:
            return c
    return None


class Probe:
    """`nfvha probe` in the background, writing every good answer as it comes."""

    def __init__(self, target: str, work: Path) -> None:
        self.answers_path = work / "answers.csv"
        self.proc = subprocess.Popen(
            [NFVHA, "probe", target, "--interval-ms", "2", "--duration", "120", "--json"]
            + ["--timeout-ms", "100", "--answers-out", str(self.answers_path)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def answer_times(self) -> list[int]:
        if not self.answers_path.exists():
            return []
        lines = self.answers_path.read_text().splitlines()
        return [int(line.split(",")[0]) for line in lines[:-1]]  # the last may be partial

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=PATIENCE_S)
        assert self.proc.returncode == 0, f"probe exited {self.proc.returncode}"
        return json.loads(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_and_reap([self.proc.pid])
            self.proc.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["kill", "hang"])
@pytest.mark.parametrize("daemon", ["dnsmasq", "haproxy"])
def test_daemon_recovers(daemon: str, fault: str, tmp_path: Path, runtime_dir, nfvha_runs):
    config, name, target = DAEMONS[daemon](tmp_path)
    checked = cli("check", str(config))
    assert checked.returncode == 0 and "warning" not in checked.stderr, checked.stderr
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    old = active_vnfc(run.wait_status(active_vnfc, f"{daemon} serving"))
    assert old is not None
    probe = Probe(target, tmp_path)
    try:
        wait_for_sync(lambda: len(probe.answer_times()) >= 20, f"{target} answering the probe")
        fault_ns = _inject(old["pid"], fault)
        new = run.wait_status(
            lambda st: (c := active_vnfc(st)) is not None and c["pid"] != old["pid"],
            f"{daemon} serving again from a new process",
        )
        wait_for_sync(
            lambda: any(t > fault_ns for t in probe.answer_times()), "answers after the fault"
        )
        result = probe.stop()
    finally:
        probe.close()
    assert not pid_alive(old["pid"]), "the failed daemon was not isolated"
    _check_consumer_view(probe.answer_times(), fault_ns, result)
    _check_trace(run.records(), old["name"], fault)
    vnfc = active_vnfc(new)
    assert vnfc is not None
    # n+m: the on-demand spare took over; none: the same VNFC, restarted.
    expected = "haproxy-b" if daemon == "haproxy" else old["name"]
    assert vnfc["name"] == expected


def _inject(pid: int, fault: str) -> int:
    """The fault, and when (CLOCK_MONOTONIC, the probe's clock)."""
    at = time.monotonic_ns()
    os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    return at


def _check_consumer_view(times: list[int], fault_ns: int, result: dict[str, Any]) -> None:
    before = [t for t in times if t < fault_ns]
    after = [t for t in times if t > fault_ns]
    assert before and after, result
    gap_ms = (after[0] - before[-1]) / 1e6
    # The longest silence the probe saw is at least the one across the fault.
    assert result["outage_ms"] >= gap_ms > 0, result
    assert result["answered"] >= len(times) and result["lost"] == 0, result
    print(f"outage across the fault: {gap_ms:.1f} ms; probe: {result['error_kinds']}")


def _check_trace(records: list[dict[str, Any]], vnfc: str, fault: str) -> None:
    context = dump_records(records)
    detected = index(records, kind="event", src=vnfc, why_has="isolating")
    expected = "ProcessExited" if fault == "kill" else "HealthCheckFailed"
    assert records[detected]["name"] == expected, context
    isolated = index(records, detected, kind="event", name="CleanupDone", src=vnfc, ok=True)
    started = index(records, isolated, kind="event", name="ProcessStarted")
    index(records, started, kind="event", name="RoleConfirmed")
    if fault == "hang":  # seen by the protocol, not by an exit
        assert "health checks missed in a row" in records[detected]["why"], context
