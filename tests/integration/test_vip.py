"""Virtual IPs under `nfvha run` in network mode netns: a plain responder (no SDK) prestarted on
two nodes as a hot standby, the VIP on the active's node only; after a crash, and after a hang
(the health check, from the manager's own node over the provider network), the VIP is on
exactly one node — the new active's — and a consumer in its namespace is answered by it.

Skipped only where this machine cannot make network namespaces (not root, no `ip netns`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha.drivers import network
from tests.integration.support.deployments import unique_name
from tests.integration.support.networks import vip_holders
from tests.integration.support.runs import NfvhaRun, cli
from tests.integration.support.trace import index
from tests.integration.support.waiting import wait_for_sync

OK, WHY = network.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

VIP, PORT = "10.77.0.100", 7710


def config(tmp_path: Path, name: str) -> Path:
    raw = yaml.safe_load(Path("examples/vip-failover.yaml").read_text())
    raw["name"] = name
    path = tmp_path / "vip.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def holders(status: dict[str, Any]) -> list[str]:
    return vip_holders(status, VIP)


def ask(consumer_netns: str) -> str | None:
    """One request from the consumer's namespace; who answered, or None."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    with network.in_namespace(consumer_netns, make) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(b"GET 1", (VIP, PORT))
            return sock.recv(256).split()[-1].decode()
        except OSError:
            return None


def active(status: dict[str, Any]) -> str | None:
    svc = status["vnfs"][0]["service"]
    return svc["active"][0] if svc["up"] and svc["active"] else None


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_vip_follows_the_active(fault: str, tmp_path: Path, runtime_dir, nfvha_runs) -> None:
    name = unique_name("vip")
    run = NfvhaRun(config(tmp_path, name), name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    status = run.wait_status(lambda st: active(st) is not None, "an active holding the VIP")
    consumer = status["network"]["consumer_netns"]
    old = active(status)
    assert holders(status) == [old]
    wait_for_sync(lambda: ask(consumer) == old, f"{old} answering at the VIP")
    pid = next(c["pid"] for c in status["vnfs"][0]["vnfcs"] if c["name"] == old)
    os.kill(pid, signal.SIGKILL if fault == "crash" else signal.SIGSTOP)
    try:
        status = run.wait_status(
            lambda st: active(st) not in (None, old), "the standby made active"
        )
        new = active(status)
        assert holders(status) == [new]  # exactly one node: the new active's
        wait_for_sync(lambda: ask(consumer) == new, f"{new} answering at the VIP")
    finally:
        if fault == "hang":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    records = run.records()
    released = index(records, name="AddressReleased", dst=old)
    claimed = index(records, released, name="AddressClaimed", dst=new)
    cleaned = index(records, released, name="CleanupDone", src=old)
    assert released < cleaned < claimed  # isolated (address and processes) before the claim
    assert cli("check", str(tmp_path / "vip.yaml")).returncode == 0


def test_no_leftover_namespaces(tmp_path: Path, runtime_dir, nfvha_runs) -> None:
    name = unique_name("vip")
    run = NfvhaRun(config(tmp_path, name), name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    run.wait_status(lambda st: active(st) is not None, "an active holding the VIP")
    assert network.namespaces_of(name)
    assert run.stop() == 0
    assert network.namespaces_of(name) == []
    assert "network mode netns" in run.stderr
