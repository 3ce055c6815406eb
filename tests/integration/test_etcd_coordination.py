"""`nfvha run` with `coordination: etcd://...` on a real 3-member etcd cluster: leadership of
the deployment's managers on an etcd lease. A killed leader is followed by its standby, which
adopts the running VNFCs under a higher fencing token; a leader that etcd deposes leaves at once
and leaves every VNFC running; without quorum nobody new leads, the active serves on within its
role lease, and everything resumes when the quorum returns.

Only orderings and outcomes are asserted, never how fast."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nfvha.runtime.control import ControlError, request
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.consumers import udp_get, udp_request
from tests.integration.support.deployments import config_2n
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.processes import kill_and_reap, pid_alive
from tests.integration.support.runs import NFVHA, NfvhaRun, steady
from tests.integration.support.trace import dump_records, select
from tests.integration.support.waiting import wait_for_sync


def inc(address: str, seq: int) -> tuple[int, str] | None:
    return udp_request(address, "INC", seq, timeout_s=2.0)


def vnfc_pids(status: dict) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]}


def coordinated(tmp_path: Path, cluster: EtcdCluster) -> tuple[str, Path, str]:
    def on_etcd(raw: dict[str, Any]) -> None:
        raw["coordination"] = "etcd://" + ",".join(cluster.endpoints)

    return config_2n(tmp_path, on_etcd)


def led_by_another(run: NfvhaRun, pid: int) -> dict[str, Any]:
    return wait_for_sync(
        lambda: (st := run.status()) and st["manager_pid"] != pid and steady(st) and st,
        "steady under a new leader",
    )


@contextmanager
def stopped_in_the_end(pids: dict[str, int], managers: list[int]) -> Iterator[None]:
    """Whoever leads at the end is stopped deliberately (everything goes), else killed."""
    try:
        yield
    finally:
        for pid in managers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait_for_sync(lambda p=pid: not pid_alive(p), "a manager stopped")
        kill_and_reap(pid for pid in pids.values() if pid)


def revoke_leader_lease(cluster: EtcdCluster, key: str) -> None:
    async def revoke() -> None:
        etcd = EtcdEndpoints(parse_endpoints(cluster.endpoints), timeout=2.0)
        try:
            got = await etcd.call(lambda c: c.get(key.encode()))
            assert got is not None, f"no leader key {key}"
            await etcd.call(lambda c: c.revoke_lease(got.lease))
        finally:
            await etcd.close()

    asyncio.run(revoke())


@pytest.mark.timeout(120)
def test_a_killed_leader_is_followed_by_its_standby_with_a_higher_token_and_no_inc_lost(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = coordinated(tmp_path, etcd_cluster)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    status = leader.wait_steady()
    pids, managers = vnfc_pids(status), [leader.proc.pid]
    with stopped_in_the_end(pids, managers):
        first = status["leader"]
        assert first["coordination"] == "etcd" and first["member"].endswith(f":{leader.proc.pid}")
        assert first["key"] == f"/nfvha/{name}/leader/managers"
        wait_for_sync(lambda: "waiting to lead" in leader.stderr, "the standby manager")
        active = status["vnfs"][0]["service"]["active"][0]
        acked = [inc(address, seq) for seq in range(1, 6)][-1][0]
        answered: list[bool] = []
        done = threading.Event()

        def consumer() -> None:
            seq = 100
            while not done.is_set():
                seq += 1
                answered.append(inc(address, seq) is not None)
                time.sleep(0.002)

        reader = threading.Thread(target=consumer)
        reader.start()
        try:
            leader.proc.kill()
            leader.proc.wait()
            status = led_by_another(leader, leader.proc.pid)
            managers.append(status["manager_pid"])
        finally:
            done.set()
            reader.join()
        records = leader.records()
        ctx = dump_records(records)
        assert answered and all(answered), f"{answered.count(False)} INCs unanswered\n{ctx}"
        assert vnfc_pids(status) == pids, ctx  # adopted, not restarted
        assert status["vnfs"][0]["service"]["active"] == [active], ctx
        assert inc(address, 6) == (acked + len(answered) + 1, active), ctx
        second = status["leader"]
        assert second["token"] > first["token"], (first, second)
        leading = [r["data"] for r in select(records, kind="note", name="Leading")]
        assert [d["token"] for d in leading] == [first["token"], second["token"]], ctx
        assert not select(records, kind="note", name="Deposed"), ctx


@pytest.mark.timeout(120)
def test_a_deposed_leader_leaves_at_once_and_every_vnfc_runs_on_for_the_next(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = coordinated(tmp_path, etcd_cluster)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    status = leader.wait_steady()
    pids, managers = vnfc_pids(status), [leader.proc.pid]
    with stopped_in_the_end(pids, managers):
        wait_for_sync(lambda: "waiting to lead" in leader.stderr, "the standby manager")
        acked = inc(address, 1)
        assert acked is not None
        revoke_leader_lease(etcd_cluster, status["leader"]["key"])
        assert leader.proc.wait(timeout=30) == 3, leader.stderr  # deposed: it left, as a crash
        assert "deposed" in leader.stderr
        after = led_by_another(leader, leader.proc.pid)
        managers.append(after["manager_pid"])
        ctx = dump_records(leader.records())
        assert vnfc_pids(after) == pids, ctx  # nothing was stopped by the deposed leader
        assert after["leader"]["token"] > status["leader"]["token"], ctx
        deposed = select(leader.records(), kind="note", name="Deposed")
        assert [d["data"]["token"] for d in deposed] == [status["leader"]["token"]], ctx
        assert inc(address, 2) == (acked[0] + 1, after["vnfs"][0]["service"]["active"][0]), ctx


@pytest.mark.timeout(180)
def test_without_quorum_nobody_new_leads_the_active_serves_on_and_all_resumes_with_quorum(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, address = coordinated(tmp_path, etcd_cluster)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    status = leader.wait_steady()
    pids, managers = vnfc_pids(status), [leader.proc.pid]
    active = status["vnfs"][0]["service"]["active"][0]
    lost = [i for i in range(3) if i != etcd_cluster.leader()][:1] + [etcd_cluster.leader()]
    with stopped_in_the_end(pids, managers):
        wait_for_sync(lambda: "waiting to lead" in leader.stderr, "the standby manager")
        acked = inc(address, 1)
        assert acked is not None
        try:
            for i in lost:
                etcd_cluster.kill(i)
            assert leader.proc.wait(timeout=30) == 3, leader.stderr  # it could not renew
            # Within its role lease the active serves on, with no manager at all.
            assert udp_get(address) == (acked[0], active)
            time.sleep(1.0)
            assert leader.status() is None  # nobody new leads without a quorum
        finally:
            for i in lost:
                etcd_cluster.start(i)
        after = led_by_another(leader, leader.proc.pid)
        managers.append(after["manager_pid"])
        ctx = dump_records(leader.records())
        assert after["leader"]["token"] > status["leader"]["token"], ctx
        now_active = after["vnfs"][0]["service"]["active"][0]
        assert inc(address, 2) == (acked[0] + 1, now_active), ctx  # nothing acknowledged lost


@pytest.mark.timeout(180)
def test_one_etcd_member_then_the_etcd_leader_lost_the_service_is_unharmed(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """A follower member killed: the deployment's leader keeps its term and a VNFC failover
    meanwhile works. Then (the member back) the etcd leader killed: etcd's own election may
    outlast a renewal attempt (0.75 s with the default TTL), so the leader keeps its term or is
    deposed and its standby leads with a higher token; either way the consumer is answered
    throughout and nothing acknowledged is lost."""
    name, config, address = coordinated(tmp_path, etcd_cluster)
    leader = NfvhaRun(config, name, runtime_dir, tmp_path)
    nfvha_runs.append(leader)
    status = leader.wait_steady()
    pids, managers = vnfc_pids(status), [leader.proc.pid]
    token = status["leader"]["token"]
    with stopped_in_the_end(pids, managers):
        acked = inc(address, 1)
        assert acked is not None
        follower = next(i for i in range(3) if i != etcd_cluster.leader())
        etcd_cluster.kill(follower)
        try:
            active = status["vnfs"][0]["service"]["active"][0]
            os.kill(pids[active], signal.SIGKILL)  # a failover with one member down
            after = leader.wait_status(
                lambda st: steady(st) and st["vnfs"][0]["service"]["active"] != [active],
                "the failover done",
            )
            pids = vnfc_pids(after)
        finally:
            etcd_cluster.start(follower)
        etcd_leader = etcd_cluster.leader()
        etcd_cluster.kill(etcd_leader)
        try:
            answers = []
            for seq in range(2, 32):  # about 1.5 s through etcd's election
                answers.append(inc(address, seq))
                time.sleep(0.05)
        finally:
            etcd_cluster.start(etcd_leader)
        final = wait_for_sync(lambda: (st := leader.status()) and steady(st) and st, "steady")
        managers.append(final["manager_pid"])
        ctx = dump_records(leader.records()) + leader.stderr
        deposed = select(leader.records(), kind="note", name="Deposed")
        if leader.proc.poll() is None:  # it kept its term
            assert final["leader"]["token"] == token and not deposed, ctx
        else:
            assert leader.proc.returncode == 3 and len(deposed) == 1, ctx
            assert final["leader"]["token"] > token, ctx
        print(f"etcd leader killed: the leader {'was deposed' if deposed else 'kept its term'}")
        assert all(a is not None for a in answers), answers
        assert answers[-1][0] == acked[0] + len(answers), answers  # nothing acknowledged lost


@pytest.mark.timeout(180)
def test_a_leader_on_another_machine_waits_for_what_it_cannot_adopt_to_fence_itself(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """Machine A's leader dies; an instance on machine B (another member name and runtime
    directory: it sees none of A's VNFCs) is elected once A's witness has revoked A's lease
    (runtime/witness.py: the kernel told it A exited), finds that A's
    term left VNFCs it cannot adopt, and waits one role lease (`WaitingForFencing`) before it
    starts any: A's active, cut off from every manager, has stopped serving by then (the SDK's
    self-fencing), so the consumer is never answered by both."""
    name, config, address = coordinated(tmp_path, etcd_cluster)
    first = NfvhaRun(
        config, name, runtime_dir, tmp_path, standby_manager=False, extra=("--member", "host-a")
    )
    nfvha_runs.append(first)
    status = first.wait_steady()
    pids = vnfc_pids(status)
    for seq in range(1, 6):
        assert inc(address, seq) is not None
    other_rt = tmp_path / "machine-b"
    env = {**os.environ, "NFVHA_RUNTIME_DIR": str(other_rt)}
    b_err = tmp_path / "b.err"
    with open(b_err, "wb") as err:
        second = subprocess.Popen(
            [NFVHA, "manager", str(config), "--member", "host-b", "--state-dir",
             str(tmp_path / "state-b"), "--trace", str(tmp_path / "b.jsonl")],
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    b_socket = other_rt / name / "control.sock"
    try:
        wait_for_sync(lambda: "waiting to lead" in b_err.read_text(), "machine B standing by")
        answers: list[tuple[int, int]] = []
        done = threading.Event()

        def consumer() -> None:
            while not done.is_set():
                got = udp_get(address, timeout_s=0.2)
                if got is not None:
                    answers.append((time.monotonic_ns(), got[0]))
                time.sleep(0.005)

        reader = threading.Thread(target=consumer)
        reader.start()
        try:
            first.proc.kill()  # machine A's manager; its VNFCs run on, unseen by B
            first.proc.wait()
            killed = time.monotonic_ns()

            def b_steady() -> dict | None:
                try:
                    st = request(b_socket, {"op": "status"}, timeout=2)
                except (ControlError, ValueError):
                    return None
                return st if steady(st) else None

            b_status = wait_for_sync(b_steady, "machine B serving", timeout_s=60)
            time.sleep(0.5)
        finally:
            done.set()
            reader.join()
        records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
        ctx = dump_records(records) + b_err.read_text()
        waited = select(records, kind="note", name="WaitingForFencing")
        assert len(waited) == 1 and waited[0]["data"]["previous"].startswith("host-a:"), ctx
        assert waited[0]["data"]["wait_ms"] == 4000, ctx  # the role lease (2 x TTL)
        assert b_status["leader"]["member"].startswith("host-b:"), b_status["leader"]
        witnessed = f"event=leader-exited pid={first.proc.pid} "
        assert witnessed in first.stderr and "revoked=yes" in first.stderr, first.stderr
        from_a = [t for t, total in answers if total == 5]  # A's state; B starts afresh
        from_b = [t for t, total in answers if total == 0]
        assert from_a and from_b, answers
        assert max(from_a) < min(from_b), "answered by A after B began serving"
        assert min(from_b) - killed > 4000 * 1_000_000  # not before A's role lease ran out
    finally:
        if second.poll() is None:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        kill_and_reap(pid for pid in pids.values() if pid)
