"""A VNFC that forks: isolation takes its whole process group, not only its main process, after
a crash, a hang and at shutdown. A child left running could hold the service address: a second
active."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nfvha.drivers.containment import ENV_SWITCH
from nfvha.lab.experiment import wait_steady
from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    customize,
    deployment,
    example_raw,
    free_udp_port,
    unique_name,
    write_config,
)
from tests.integration.support.runs import NfvhaRun, running_engine, vnfc_view
from tests.integration.support.trace import dump_records, index
from tests.integration.support.waiting import wait_for

FORKING = "sh -c 'sleep 300 & exec nfvha-counter'"  # the group outlives its leader
HANG_HEALTH = {"interval_ms": 150, "timeout_ms": 150, "failure_threshold": 2}


def forking_2n(name: str, health: dict) -> dict:
    raw = customize(example_raw("2n"), name=name, port=free_udp_port(), health=health)
    for vnfc in raw["vnfs"][0]["vnfcs"]:
        vnfc["command"] = FORKING
    return raw


def group(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process, zombies included, whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append((int(entry.name), fields[0]))
    return found


def live(pgid: int) -> list[int]:
    return [pid for pid, state in group(pgid) if state not in "ZX"]


async def isolate_active(fault: signal.Signals, tmp_path: Path, health: dict) -> None:
    """Fail the active with ``fault``; at the moment its CleanupDone is traced, its group must be
    empty already (nothing of it left, not even a zombie)."""
    dep = deployment(forking_2n(unique_name(), health))
    async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
        await wait_steady(engine)
        active = engine.vnfs["counter"].manager.snapshot()["service"]["active"][0]
        pgid = engine.procs.pid_of(active)
        await wait_for(lambda: len(live(pgid)) == 2, "the VNFC to have forked its child")
        left_at_done: list = []

        def done() -> bool:
            recs = engine.trace.records
            i = next((i for i, r in enumerate(recs) if _is_done(r, active)), None)
            if i is not None and not left_at_done:
                left_at_done.append(group(pgid))
            return i is not None

        os.kill(pgid, fault)
        await wait_for(done, f"CleanupDone of {active}")
        recs = engine.trace.records
        i = index(recs, kind="event", name="CleanupDone", src=active)
        assert recs[i]["data"]["ok"] is True, dump_records(recs)
        # Either way the group is empty; with containment the kernel's word is the cgroup's.
        said = "process group gone" if engine.procs.zones is None else "(populated 0)"
        assert said in recs[i]["data"]["detail"], dump_records(recs)
        assert left_at_done == [[]], f"left in {active}'s group at CleanupDone: {left_at_done}"


def _is_done(rec: dict, vnfc: str) -> bool:
    return rec["name"] == "CleanupDone" and rec.get("src") == vnfc


@pytest.fixture(params=["cgroup", "process-group"])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of holding a VNFC: its own cgroup (where there is one to use) and process
    groups only (NFVHA_CGROUPS=off)."""
    if request.param == "process-group":
        monkeypatch.setenv(ENV_SWITCH, "off")
    elif not cgroup_v2_writable():
        pytest.skip("no writable cgroup v2 hierarchy for VNFC cgroups")
    return request.param


@pytest.mark.timeout(60)
def test_crashed_vnfc_group_is_swept(tmp_path: Path, containment: str) -> None:
    asyncio.run(isolate_active(signal.SIGKILL, tmp_path, RELAXED_HEALTH))


@pytest.mark.timeout(60)
def test_hung_vnfc_group_is_swept(tmp_path: Path, containment: str) -> None:
    asyncio.run(isolate_active(signal.SIGSTOP, tmp_path, HANG_HEALTH))


@pytest.mark.timeout(90)
def test_shutdown_sweeps_every_group(tmp_path: Path, runtime_dir: Path, nfvha_runs) -> None:
    """Crash the active (its forked child stays in its group), let it be repaired, then stop
    `nfvha run` with SIGTERM: no process of any group it ever started is left."""
    name = unique_name()
    config = write_config(forking_2n(name, RELAXED_HEALTH), tmp_path / f"{name}.yaml")
    run = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(run)
    status = run.wait_steady()
    active = status["vnfs"][0]["service"]["active"][0]
    first = {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]}
    os.kill(first[active], signal.SIGKILL)
    status = run.wait_status(
        lambda st: (
            vnfc_view(st, active)["pid"] not in (None, first[active])
            and vnfc_view(st, active)["state"] == "running"
        ),
        f"{active} to be repaired",
    )
    pgids = set(first.values()) | {c["pid"] for c in status["vnfs"][0]["vnfcs"]}
    assert run.stop() == 0, run.stderr
    left = {pgid: live(pgid) for pgid in pgids if live(pgid)}
    assert left == {}, f"processes left in the VNFCs' groups after the stop: {left}"
