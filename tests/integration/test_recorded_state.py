"""The deployment's state recorded in a real 3-member etcd (runtime/recorded_state.py): role
assignments and repair progress as the leader decides them, each write guarded by the leader key
and the record's mod revision; continued by the next term (epochs above the recorded ones); read
by ``nfvha status --from-etcd`` from anywhere; gone at a deliberate stop.

Only orderings and outcomes are asserted, never how fast."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from nfvha.runtime.control import request
from nfvha.runtime.etcd_leadership import Deposed, EtcdCoordinator, EtcdLeadership
from nfvha.runtime.leadership import LocalLock
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.deployments import config_2n
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.runs import NfvhaRun, cli, steady
from tests.integration.support.trace import dump_records, select
from tests.integration.support.waiting import wait_for_sync


def coordinated(tmp_path: Path, cluster: EtcdCluster) -> tuple[str, Path, str]:
    def on_etcd(raw: dict[str, Any]) -> None:
        raw["coordination"] = "etcd://" + ",".join(cluster.endpoints)

    return config_2n(tmp_path, on_etcd)


def recorded(config: Path) -> tuple[int, dict[str, Any]]:
    """``nfvha status --from-etcd CONFIG --json``: its exit code and answer."""
    done = cli("status", "--from-etcd", str(config), "--json")
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


def vnf_record(config: Path) -> dict[str, Any] | None:
    _, answer = recorded(config)
    records = answer.get("records", {})
    return next((r for n, r in records.items() if n.startswith("vnfs/")), None)


def etcd_put(cluster: EtcdCluster, key: str, value: bytes) -> None:
    async def put() -> None:
        etcd = EtcdEndpoints(parse_endpoints(cluster.endpoints), timeout=2.0)
        try:
            await etcd.call(lambda c: c.put(key.encode(), value))
        finally:
            await etcd.close()

    asyncio.run(put())


def matches(record: dict[str, Any] | None, status: dict[str, Any]) -> bool:
    """The record says what the manager's status says: epoch, who serves, each role."""
    vnf = status["vnfs"][0]
    return (
        record is not None
        and record["epoch"] == vnf["epoch"]
        and record["active"] == vnf["service"]["active"]
        and {n: c["role"] for n, c in record["vnfcs"].items()}
        == {c["name"]: c["role"] for c in vnf["vnfcs"]}
    )


@pytest.mark.timeout(120)
def test_roles_and_repairs_are_recorded_as_decided_and_gone_at_a_deliberate_stop(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    name, config, _ = coordinated(tmp_path, etcd_cluster)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    status = run.wait_steady()
    wait_for_sync(lambda: matches(vnf_record(config), status), "the roles recorded")
    code, answer = recorded(config)
    assert code == 0, answer
    assert answer["leader"]["member"] == status["leader"]["member"]
    assert answer["leader"]["token"] == status["leader"]["token"]
    first_epoch = answer["records"][f"vnfs/{status['vnfs'][0]['vnf']}"]["epoch"]

    active = status["vnfs"][0]["service"]["active"][0]
    request(run.socket, {"op": "fault", "kind": "vnfc-crash", "target": active})
    after = run.wait_status(
        lambda st: steady(st) and st["vnfs"][0]["service"]["active"] != [active], "the failover"
    )
    wait_for_sync(lambda: matches(vnf_record(config), after), "the failover recorded")
    record = vnf_record(config)
    assert record is not None and record["epoch"] > first_epoch
    assert record["vnfcs"][active]["failures"] == 1, record
    assert "SIGKILL" in record["vnfcs"][active]["last_failure"], record
    text = cli("status", "--from-etcd", str(config)).stdout
    assert (
        f"epoch {record['epoch']}" in text
        and f"active: {after['vnfs'][0]['service']['active'][0]}" in text
    )

    assert run.stop(signal.SIGTERM) == 0
    code, answer = recorded(config)
    assert answer["records"] == {} and answer["leader"] is None, answer
    assert code == 3  # nothing recorded: no deployment runs


@pytest.mark.timeout(120)
def test_the_next_term_continues_the_recorded_epochs_and_refuses_a_malformed_record(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs
) -> None:
    """As a leader elected on another machine finds them: epochs it must go above, whatever it
    can adopt; a record that is not JSON is refused, never trusted."""
    name, config, _ = coordinated(tmp_path, etcd_cluster)
    base = f"/nfvha/{name}/state"
    etcd_put(etcd_cluster, f"{base}/vnfs/counter", json.dumps({"epoch": 41}).encode())
    etcd_put(etcd_cluster, f"{base}/vnfs/junk", b"\xff not json")
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    status = run.wait_steady()
    records = run.records()
    ctx = dump_records(records)
    actives = [r for r in select(records, kind="command", name="AssignRole")
               if r["data"]["role"] == "active"]  # fmt: skip
    assert actives and actives[0]["data"]["epoch"] == 42, ctx
    assert select(records, kind="note", name="RecordedState")[0]["data"]["epochs"] == {
        "counter": 41
    }, ctx
    refused = select(records, kind="note", name="RecordRefused")
    assert [r["data"]["record"] for r in refused] == ["vnfs/junk"], ctx
    wait_for_sync(lambda: matches(vnf_record(config), status), "the records brought up")
    code, answer = recorded(config)
    assert answer["malformed"] == ["vnfs/junk"] and code == 0, answer
    assert "refused: record vnfs/junk" in cli("status", "--from-etcd", str(config)).stdout

    # A record changed behind the leader's back is read again and written over.
    etcd_put(etcd_cluster, f"{base}/vnfs/counter", json.dumps({"epoch": 1}).encode())
    standby = next(c["name"] for c in status["vnfs"][0]["vnfcs"] if c["role"] == "standby")
    request(run.socket, {"op": "fault", "kind": "vnfc-crash", "target": standby})
    after = run.wait_status(
        lambda st: steady(st) and st["vnfs"][0]["vnfcs"] != status["vnfs"][0]["vnfcs"],
        "the standby back",
    )
    wait_for_sync(lambda: matches(vnf_record(config), run.status() or after), "rewritten")
    assert select(run.records(), kind="note", name="StateConflict"), dump_records(run.records())


def test_a_deposed_leaders_state_write_is_refused_and_writes_nothing(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    prefix = f"/nfvha/test-recorded-{tmp_path.name[-12:]}"

    async def scenario() -> None:
        def leadership(member: str) -> EtcdLeadership:
            election = EtcdCoordinator(etcd_cluster.endpoints, prefix, "managers", member, 10,
                                       renew_s=8.0, retry_s=1.0)  # fmt: skip
            return EtcdLeadership(LocalLock(tmp_path / f"{member}.lock"), election, member)

        old, new = leadership("a"), leadership("b")
        outside = EtcdEndpoints(parse_endpoints(etcd_cluster.endpoints), timeout=2.0)
        try:
            assert await old.election.wait_to_lead(asyncio.Event())
            await old.write_state({"vnfs/x": {"epoch": 1}})
            held = await outside.call(lambda c: c.get(old.election.key))
            await outside.call(lambda c: c.revoke_lease(held.lease))
            assert await new.election.wait_to_lead(asyncio.Event())
            assert (await new.read_state())[0] == {"vnfs/x": {"epoch": 1}}
            with pytest.raises(Deposed):
                await old.write_state({"vnfs/x": {"epoch": 7}})
            assert (await new.read_state())[0] == {"vnfs/x": {"epoch": 1}}
            await new.write_state({"vnfs/x": {"epoch": 2}, "hosts/h": None})
            assert (await new.read_state())[0] == {"vnfs/x": {"epoch": 2}}
        finally:
            await outside.close()
            for member in (old, new):
                await member.close()

    asyncio.run(scenario())


def test_status_from_etcd_refuses_a_deployment_without_etcd(tmp_path: Path) -> None:
    name, config, _ = config_2n(tmp_path)
    done = cli("status", "--from-etcd", str(config))
    assert done.returncode == 2, done
    assert f"{config}: coordination: embedded" in done.stderr and "Traceback" not in done.stderr


def test_status_from_etcd_with_etcd_unreachable_is_unknown(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def on_dead_etcd(raw: dict[str, Any]) -> None:
        raw["coordination"] = f"etcd://127.0.0.1:{port}"

    _, config, _ = config_2n(tmp_path, on_dead_etcd)
    done = cli("status", "--from-etcd", str(config))
    assert done.returncode == 3, done
    assert "etcd does not answer" in done.stderr and "Traceback" not in done.stderr
