"""`nfvha agent`: host agents run by the hosts (``nfvi.host_agents: external``), not by the VIM,
on examples/three-hosts-agents.yaml with a real 3-member etcd and real namespaces.

- Each agent finds the leading manager through etcd (the NFVI endpoint its term publishes, under
  its lease), dials it with mutual TLS as its host, and starts the guests the VIM asks for; the
  service serves.
- The leader killed, its hot standby leads: every agent finds it by itself and is adopted with
  its guests; the VNFCs are not restarted, every INC meanwhile is answered (the active writes
  to its standby in the other VM's namespace, not through a manager) and nothing acknowledged
  is lost.
- A deliberate stop of the deployment leaves the agents running (they are the hosts'), waiting
  for the next leader.
- A member saying hello as another host is refused (its certificate names another); an endpoint
  record that is malformed or older than one followed is refused and logged; bad invocations
  exit 2 naming what is wrong.

Only orderings and outcomes are asserted, never how fast."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from nfvha.agents.finder import LeaderFinder, LeaderUnknown, endpoint_key
from nfvha.drivers import network, tls
from nfvha.sdk.protocol import encode
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.processes import pid_alive
from tests.integration.support.runs import NFVHA, NfvhaRun, cli, steady
from tests.integration.support.trace import dump_records, select
from tests.integration.support.waiting import wait_for_sync
from tests.integration.test_partition import EXAMPLE, active, ask, deploy

OK, WHY = network.available()
needs_netns = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")
needs_cgroups = pytest.mark.skipif(
    not cgroup_v2_writable(), reason="the NFVI needs a writable cgroup v2"
)
HOSTS = ("host-1", "host-2", "host-3")
FOUND = re.compile(r"nfvha event=leader-found agent=(\S+) leader=(\S+) token=(\d+)")


def external(tmp_path: Path, cluster: EtcdCluster) -> tuple[str, Path]:
    """examples/three-hosts-agents.yaml, as the README runs it."""
    name, path = deploy(tmp_path, cluster, EXAMPLE.with_name("three-hosts-agents.yaml"))
    assert yaml.safe_load(path.read_text())["nfvi"]["host_agents"] == "external"
    return name, path


def start_agents(config: Path, tmp_path: Path) -> dict[str, tuple[subprocess.Popen, Path]]:
    return {host: start_agent(config, host, tmp_path / f"agent-{host}.err") for host in HOSTS}


def start_agent(config: Path, host: str, err: Path) -> tuple[subprocess.Popen, Path]:
    """``nfvha agent`` for one host, its stderr appended to ``err``."""
    with open(err, "ab") as sink:
        proc = subprocess.Popen(
            [NFVHA, "agent", str(config), "--host", host],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, err


def found(err: Path) -> list[tuple[str, int]]:
    return [(leader, int(token)) for _, leader, token in FOUND.findall(err.read_text())]


def stop_agents(agents: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in agents.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


@needs_netns
@needs_cgroups
@pytest.mark.timeout(180)
def test_host_agents_find_each_leader_through_etcd_and_are_adopted_with_their_guests(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    name, config = external(tmp_path, etcd_cluster)
    agents = start_agents(config, tmp_path)
    try:
        run = NfvhaRun(config, name, runtime_dir, tmp_path)
        nfvha_runs.append(run)
        status = run.wait_steady()
        first = status["leader"]
        for host, (_, err) in agents.items():
            assert found(err) == [(first["member"], first["token"])], (host, err.read_text())
        assert all(h["connected"] for h in status["nfvi"]["host_agents"].values()), status
        old = active(status)
        acked = wait_for_sync(lambda: ask(status, "INC", 1), "an answer through the VIP")
        pids = {c["name"]: c["pid"] for c in status["vnfs"][0]["vnfcs"]}
        wait_for_sync(lambda: "waiting to lead" in run.stderr, "the hot standby")

        def led_anew() -> dict | None:
            st = run.status()
            return st if st and st["manager_pid"] != run.proc.pid and steady(st) else None

        answered: list[bool] = []
        done = threading.Event()

        def consumer() -> None:  # INCs all along: writes go VM to VM, not through a manager
            seq = 100
            while not done.is_set():
                seq += 1
                answered.append(ask(status, "INC", seq) is not None)
                time.sleep(0.002)

        reader = threading.Thread(target=consumer)
        reader.start()
        try:
            run.proc.kill()  # the leader; its standby leads next, the agents find it themselves
            run.proc.wait()
            after = wait_for_sync(led_anew, "steady, led anew")
        finally:
            done.set()
            reader.join()
        second = after["leader"]
        records = run.records()
        ctx = dump_records(records)
        assert second["token"] > first["token"], ctx
        for proc, err in agents.values():
            assert proc.poll() is None, err.read_text()
            assert found(err)[-1] == (second["member"], second["token"]), err.read_text()
        nfvi_up = [r for r in select(records, name="NfviUp") if r["t"] > records[0]["t"]]
        assert set(HOSTS) <= set(nfvi_up[-1]["data"]["adopted_agents"]), ctx
        assert {c["name"]: c["pid"] for c in after["vnfs"][0]["vnfcs"]} == pids, ctx
        assert active(after) == old, ctx
        assert answered and all(answered), f"{answered.count(False)} INCs unanswered\n{ctx}"
        assert ask(after, "INC", 2) == (acked[0] + len(answered) + 1, old), ctx  # none lost

        new_leader = after["manager_pid"]
        os.kill(new_leader, signal.SIGTERM)  # a deliberate stop of the deployment
        wait_for_sync(lambda: not pid_alive(new_leader), "the deployment stopped")
        for host, (proc, err) in agents.items():
            assert proc.poll() is None, (host, err.read_text())  # the hosts' own, still there
    finally:
        stop_agents(agents)


def put(cluster: EtcdCluster, key: bytes, value: bytes) -> None:
    async def go() -> None:
        etcd = EtcdEndpoints(parse_endpoints(cluster.endpoints), timeout=2.0)
        try:
            await etcd.call(lambda c: c.put(key, value))
        finally:
            await etcd.close()

    asyncio.run(go())


def test_an_endpoint_record_malformed_or_older_than_one_followed_is_refused(
    etcd_cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = endpoint_key("/nfvha", "finder-test")
    record = {"address": "10.0.0.1", "port": 7400, "netns": None, "server": "manager"}

    async def find(value: dict | bytes | None) -> object:
        if value is not None:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            await asyncio.to_thread(put, etcd_cluster, key, raw)
        try:
            return await finder()
        except LeaderUnknown as exc:
            return exc

    async def scenario() -> list[object]:
        return [
            await find(None),  # nothing published yet
            await find({**record, "member": "m:1", "token": 5}),
            await find(b"{not json"),
            await find({**record, "member": "m:0", "token": 3}),  # a deposed leader's
            await find({**record, "address": "10.0.0.2", "member": "m:2", "token": 9}),
        ]

    finder = LeaderFinder(etcd_cluster.endpoints, key, tmp_path, "host-1", "host-1")
    try:
        none, first, garbled, stale, newer = asyncio.run(scenario())
    finally:
        asyncio.run(finder.close())
    assert isinstance(none, LeaderUnknown) and "no leading manager" in str(none)
    assert first.host == "10.0.0.1" and first.member == "host-1" and first.server == "manager"
    assert isinstance(garbled, LeaderUnknown) and "NFVI endpoint record" in str(garbled)
    assert isinstance(stale, LeaderUnknown) and "older than 5" in str(stale)
    assert newer.host == "10.0.0.2"
    logged = capsys.readouterr().err
    assert logged.count("event=endpoint-refused agent=host-1") == 2, logged
    assert "event=leader-found agent=host-1 leader=m:2 token=9" in logged, logged


def test_bad_invocations_of_the_agent_exit_2_naming_what_is_wrong(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    name, config = deploy(tmp_path, etcd_cluster)  # host_agents: spawned
    spawned = cli("agent", str(config), "--host", "host-1")
    assert spawned.returncode == 2 and "nfvi.host_agents is spawned" in spawned.stderr
    (tmp_path / "x").mkdir()
    name, config = external(tmp_path / "x", etcd_cluster)
    unknown = cli("agent", str(config), "--host", "host-9")
    assert unknown.returncode == 2 and "no host named 'host-9'" in unknown.stderr
    raw = yaml.safe_load(config.read_text())
    raw["coordination"] = "embedded"
    config.write_text(yaml.safe_dump(raw))
    checked = cli("check", str(config))
    assert checked.returncode == 2 and "nfvi.host_agents" in checked.stderr, checked.stderr
    raw["coordination"] = {"backend": "etcd", "endpoints": etcd_cluster.endpoints[0]}
    raw["nfvi"]["transport"] = "unix"
    config.write_text(yaml.safe_dump(raw))
    checked = cli("check", str(config))
    assert checked.returncode == 2 and "host_agents external needs transport tls" in checked.stderr
    assert "Traceback" not in checked.stderr


@needs_netns
@needs_cgroups
@pytest.mark.timeout(120)
def test_a_member_saying_hello_as_another_host_is_refused_and_the_real_agent_stays(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    name, config = external(tmp_path, etcd_cluster)
    agents = start_agents(config, tmp_path)
    try:
        run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
        nfvha_runs.append(run)
        status = run.wait_steady()
        mgmt = status["network"]["nodes"]["mgmt"]["address"]

        async def pose() -> str:  # host-2's certificate, a hello as host-1
            def make() -> socket.socket:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(5)
                sock.connect((mgmt, 7400))
                sock.setblocking(False)
                return sock

            sock = network.in_namespace(status["network"]["consumer_netns"], make)
            context = tls.client_context(tmp_path / "cluster", "host-2")
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=context, server_hostname="manager"
            )
            writer.write(encode("hello", kind="host", name="host-1", pid=4242))
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.read(100), 5)
            except (ConnectionError, ssl.SSLError):
                line = b""
            writer.close()
            return "answered" if line else "closed"

        assert asyncio.run(pose()) == "closed"

        def refused() -> list | None:
            recs = select(run.records(), name="MessageRefused")
            return [r for r in recs if "may not speak for host host-1" in r["why"]] or None

        posing = wait_for_sync(refused, "the posing member refused")
        assert "member host-2" in posing[0]["why"], posing
        after = run.wait_steady()  # the real host-1 agent was never displaced
        assert after["nfvi"]["host_agents"]["host-1"]["connected"], after["nfvi"]
        assert ask(after, "GET", 1) is not None
    finally:
        stop_agents(agents)


@needs_netns
@needs_cgroups
@pytest.mark.timeout(180)
def test_a_host_revoked_while_the_manager_runs_is_refused_when_its_agent_dials_again(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    """`nfvha cluster revoke` as the operator runs it, the manager already listening: the
    revoked host's next handshake is refused (traced, logged), the other hosts stay."""
    name, config = external(tmp_path, etcd_cluster)
    agents = start_agents(config, tmp_path)
    try:
        run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
        nfvha_runs.append(run)
        run.wait_steady()
        done = cli("cluster", "revoke", str(tmp_path / "cluster"), "host-3")
        assert done.returncode == 0 and "host-3: revoked" in done.stdout, done.stderr
        proc, err = agents["host-3"]
        proc.kill()  # its connection was made before: the next one is checked
        proc.wait()
        agents["host-3"] = start_agent(config, "host-3", err)

        def refused() -> list | None:
            recs = select(run.records(), name="PeerRefused")
            return [r for r in recs if "certificate revoked" in r["why"]] or None

        wait_for_sync(refused, "the revoked host refused")
        assert "event=peer-refused" in run.stderr and "certificate revoked" in run.stderr
        status = run.status()
        assert not status["nfvi"]["host_agents"]["host-3"]["connected"], status["nfvi"]
        assert status["nfvi"]["host_agents"]["host-1"]["connected"], status["nfvi"]
        assert ask(status, "GET", 1) is not None
    finally:
        stop_agents(agents)
