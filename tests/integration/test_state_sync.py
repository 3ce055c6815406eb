"""State sync modes on real processes (nfvha run): with ``direct`` the active's writes go to the
standby peer to peer, so they are acknowledged while no manager runs and survive a failover
that the manager's lagging copy alone would have lost; ``shared_storage`` and ``store`` keep
the state where every active claims it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support.consumers import udp_get, udp_request
from tests.integration.support.deployments import config_2n
from tests.integration.support.processes import kill_and_reap, pid_alive
from tests.integration.support.runs import NfvhaRun
from tests.integration.support.waiting import wait_for_sync


def increments(address: str, first_seq: int, count: int) -> list[int]:
    """``count`` INCs one after another; the totals acknowledged (an ERR or no answer fails)."""
    totals = []
    for seq in range(first_seq, first_seq + count):
        answer = udp_request(address, "INC", seq, timeout_s=2.0)
        assert answer is not None, f"INC {seq} was not acknowledged"
        totals.append(answer[0])
    return totals


def active_of(status: dict[str, Any]) -> tuple[str, int]:
    vnf = status["vnfs"][0]
    name = vnf["service"]["active"][0]
    (pid,) = [c["pid"] for c in vnf["vnfcs"] if c["name"] == name]
    return name, pid


@pytest.mark.timeout(120)
def test_direct_sync_acknowledges_writes_without_a_manager_and_a_failover_keeps_them(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = config_2n(tmp_path)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
    nfvha_runs.append(first)
    status = first.wait_steady()
    assert status["vnfs"][0]["state_sync"] == "direct"
    assert increments(address, 1, 5) == [1, 2, 3, 4, 5]

    first.proc.kill()  # no manager at all from here on
    first.proc.wait()
    assert increments(address, 6, 5) == [6, 7, 8, 9, 10]

    second = NfvhaRun(config, name, runtime_dir, tmp_path / "second", standby_manager=False)
    nfvha_runs.append(second)
    active, pid = active_of(second.wait_steady())
    # The new manager's copy is rebuilt from what the VNFCs hold; these go peer to peer only.
    assert increments(address, 11, 5) == [11, 12, 13, 14, 15]
    os.kill(pid, signal.SIGKILL)

    def served_by_the_standby() -> tuple[int, str] | None:
        answer = udp_get(address)
        return answer if answer is not None and answer[1] != active else None

    total, _ = wait_for_sync(served_by_the_standby, "the standby serving")
    assert total == 15, "an acknowledged increment was lost in the failover"
    assert second.stop() == 0, second.stderr


@pytest.mark.timeout(120)
def test_manager_sync_refuses_writes_while_no_manager_runs(
    tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """The contrast: through the manager, a write cannot be made durable without one."""
    name, config, address = config_2n(
        tmp_path, lambda raw: raw["vnfs"][0].update(state_sync="manager")
    )
    first = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(first)
    status = first.wait_steady()
    assert status["vnfs"][0]["state_sync"] == "manager"
    pids = [c["pid"] for c in status["vnfs"][0]["vnfcs"]]
    try:
        assert increments(address, 1, 3) == [1, 2, 3]
        first.proc.kill()
        first.proc.wait()
        assert udp_request(address, "INC", 4, timeout_s=2.0) is None  # ERR no manager
        answer = udp_get(address)
        assert answer is not None and answer[0] == 3  # and it goes on serving what is durable
    finally:
        kill_and_reap(pids)  # the VNFCs outlive the killed manager, as they should
        wait_for_sync(lambda: not any(map(pid_alive, pids)), "the VNFCs gone")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["shared_storage", "store"])
def test_a_store_the_components_write_keeps_every_acknowledged_write(
    mode: str, tmp_path: Path, runtime_dir: Path, nfvha_runs, request: pytest.FixtureRequest
) -> None:
    """The active writes the store itself: writes are acknowledged with no manager running,
    and the standby promoted after the active dies claims the store and serves its total."""

    def edit(raw: dict[str, Any]) -> None:
        vnf = raw["vnfs"][0]
        vnf["state_sync"] = mode
        if mode == "store":
            vnf["state_store"] = {
                "etcd": ",".join(request.getfixturevalue("etcd_cluster").endpoints)
            }
        else:
            vnf["state_store"] = {"path": str(tmp_path / "shared" / "counter.log")}

    name, config, address = config_2n(tmp_path, edit)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
    nfvha_runs.append(first)
    assert first.wait_steady()["vnfs"][0]["state_sync"] == mode
    assert increments(address, 1, 3) == [1, 2, 3]
    first.proc.kill()
    first.proc.wait()
    assert increments(address, 4, 3) == [4, 5, 6]  # no manager in the path

    second = NfvhaRun(config, name, runtime_dir, tmp_path / "second", standby_manager=False)
    nfvha_runs.append(second)
    active, pid = active_of(second.wait_steady())
    os.kill(pid, signal.SIGKILL)

    def served_by_the_standby() -> tuple[int, str] | None:
        answer = udp_get(address)
        return answer if answer is not None and answer[1] != active else None

    total, _ = wait_for_sync(served_by_the_standby, "the standby serving")
    assert total == 6, "an acknowledged increment was lost in the failover"
    assert increments(address, 7, 1) == [7]
    assert second.stop() == 0, second.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["shared_storage", "store"])
def test_a_deployment_started_again_continues_above_its_stores_epoch(
    mode: str, tmp_path: Path, runtime_dir: Path, nfvha_runs, request: pytest.FixtureRequest
) -> None:
    """Stopped on purpose after a failover (the store's epoch is 2 by then) and run again (a
    new manager, here or on another machine, whose epochs would start at 1): the new active
    claims above the store's epoch (core/ha.py rule 12) instead of being refused as stale, and
    serves every acknowledged write."""

    def edit(raw: dict[str, Any]) -> None:
        vnf = raw["vnfs"][0]
        vnf["state_sync"] = mode
        if mode == "store":
            endpoints = request.getfixturevalue("etcd_cluster").endpoints
            vnf["state_store"] = {"etcd": ",".join(endpoints)}
        else:
            vnf["state_store"] = {"path": str(tmp_path / "shared" / "counter.log")}

    name, config, address = config_2n(tmp_path, edit)
    for work in ("first", "second"):
        (tmp_path / work).mkdir()
    first = NfvhaRun(config, name, runtime_dir, tmp_path / "first", standby_manager=False)
    nfvha_runs.append(first)
    active, pid = active_of(first.wait_steady())
    assert increments(address, 1, 3) == [1, 2, 3]
    os.kill(pid, signal.SIGKILL)  # a failover: the store's epoch is 2 from here on
    first.wait_status(
        lambda st: st["vnfs"][0]["epoch"] == 2 and st["vnfs"][0]["service"]["up"], "epoch 2"
    )
    assert increments(address, 4, 1) == [4]
    assert first.stop() == 0, first.stderr

    second = NfvhaRun(config, name, runtime_dir, tmp_path / "second", standby_manager=False)
    nfvha_runs.append(second)
    status = second.wait_steady()
    assert status["vnfs"][0]["epoch"] == 3, status["vnfs"][0]
    assert increments(address, 5, 1) == [5], "the acknowledged total did not survive"
    assert second.stop() == 0, second.stderr
