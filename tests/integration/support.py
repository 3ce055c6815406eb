"""Helpers of the integration tests: real processes, real sockets, no mocks.

Nothing here asserts on wall-clock durations; the timeouts are liveness bounds only (how long
to wait before declaring that something that should happen did not happen at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

import nfvha.examples
from nfvha import config as cfg
from nfvha.runtime.control import ControlError, request
from nfvha.runtime.engine import Engine
from nfvha.runtime.trace import Record, Trace

VENV_BIN = Path(sys.executable).parent
NFVHA = str(VENV_BIN / "nfvha")
NFVHA_COUNTER = str(VENV_BIN / "nfvha-counter")
EXAMPLES = Path(nfvha.examples.__file__).parent
EXAMPLE_FOR = {
    "2n": "counter-2n.yaml",
    "n+m": "counter-stateless.yaml",
    "none": "counter-single.yaml",
}
# Liveness bound for "this should happen at all"; never an assertion on how fast it happens.
PATIENCE_S = 30.0

# A health check that a noisy 2-core machine does not trip by itself: a process that is
# descheduled for a moment is not taken for hung. Kills are seen through the pidfd anyway.
RELAXED_HEALTH = {"interval_ms": 100, "timeout_ms": 250, "failure_threshold": 5}


# --- names, ports -----------------------------------------------------------------------------


def unique_name(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held at once while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- deployments ------------------------------------------------------------------------------


def example_raw(model: str) -> dict[str, Any]:
    deployment, _ = cfg.load(EXAMPLES / EXAMPLE_FOR[model])
    return deployment.model_dump()


def customize(
    raw: dict[str, Any],
    *,
    name: str,
    port: int,
    vnf: dict[str, Any] | None = None,
    policies: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of a deployment dict with a unique name and port (first VNF) and overrides."""
    raw = json.loads(json.dumps(raw))
    raw["name"] = name
    v = raw["vnfs"][0]
    v["service"]["address"] = f"127.0.0.1:{port}"
    v.update(vnf or {})
    v["policies"].update(policies or {})
    v["policies"]["health_check"].update(health or {})
    return raw


def plain_counter(address: str, policies: dict[str, Any], name: str | None = None) -> dict:
    """A deployment (raw) of one counter without the SDK: supervised and health-checked only."""
    return {
        "name": name or unique_name(),
        "vnfs": [
            {
                "name": "plain",
                "redundancy": {"model": "none"},
                "state": "none",
                "sdk": False,
                "service": {"name": "count", "address": address},
                "vnfcs": [
                    {
                        "name": "plain-1",
                        "command": f"nfvha-counter --standalone --address {address}",
                    }
                ],
                "policies": policies,
            }
        ],
    }


def deployment(raw: dict[str, Any]) -> cfg.Deployment:
    return cfg.Deployment.model_validate(raw)


def example(model: str, *, name: str, port: int, **overrides: Any) -> cfg.Deployment:
    return deployment(customize(example_raw(model), name=name, port=port, **overrides))


def write_config(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- the trace --------------------------------------------------------------------------------


def matches(rec: Record, **crit: Any) -> bool:
    """``kind``, ``name``, ``src``, ``dst`` compare to the record; ``why_has`` is a substring
    of the why; any other key compares to ``data[key]``."""
    for key, want in crit.items():
        if key in ("kind", "name", "src", "dst"):
            if rec.get(key) != want:
                return False
        elif key == "why_has":
            if want not in rec.get("why", ""):
                return False
        elif rec.get("data", {}).get(key) != want:
            return False
    return True


def find(records: list[Record], start: int = 0, **crit: Any) -> int | None:
    for i in range(start, len(records)):
        if matches(records[i], **crit):
            return i
    return None


def index(records: list[Record], start: int = 0, **crit: Any) -> int:
    """Index of the first record at or after ``start`` matching ``crit``; fails the test if none."""
    i = find(records, start, **crit)
    if i is None:
        raise AssertionError(
            f"no trace record matching {crit} from index {start}:\n" + dump_records(records)
        )
    return i


def select(records: Iterable[Record], **crit: Any) -> list[Record]:
    return [r for r in records if matches(r, **crit)]


def dump_records(records: list[Record], limit: int = 400) -> str:
    lines = []
    for i, r in enumerate(records[-limit:]):
        if r["name"] in ("HealthCheckPassed", "WatchHealth"):
            continue
        lines.append(
            f"  [{i}] {r['kind']:<7} {r['name']:<20} {r.get('src', ''):>12} -> "
            f"{r.get('dst', ''):<12} {r.get('data', {})} {r.get('why', '')}"
        )
    return "\n".join(lines)


def max_simultaneous_actives(records: list[Record]) -> int:
    """Replay role moves: a VNFC holds the active role from AssignRole(active) until it is
    assigned another role or its CleanupDone(ok=True) (rule 2: a failed active keeps the role
    until isolated). Returns the largest number of holders at any time."""
    holders: set[str] = set()
    most = 0
    for r in records:
        if r["kind"] == "command" and r["name"] == "AssignRole":
            if r["data"]["role"] == "active":
                holders.add(r["dst"])
            else:
                holders.discard(r["dst"])
        elif r["kind"] == "event" and r["name"] == "CleanupDone" and r["data"]["ok"]:
            holders.discard(r["src"])
        most = max(most, len(holders))
    return most


# --- waiting ----------------------------------------------------------------------------------


async def wait_for(cond: Callable[[], Any], what: str, timeout_s: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def wait_for_sync(cond: Callable[[], Any], what: str, timeout_s: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@contextlib.asynccontextmanager
async def running_engine(dep: cfg.Deployment, base_dir: Path, state_dir: Path):
    """An in-process engine, always shut down (every VNFC it started stopped) on the way out."""
    engine = Engine(dep, base_dir, Trace(), state_dir)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.shutdown()


# --- the consumer -----------------------------------------------------------------------------


def parse_answer(data: bytes) -> tuple[int, int, str] | None:
    parts = data.split()
    if len(parts) == 4 and parts[0] == b"OK" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2]), parts[3].decode()
    return None


class UdpClient:
    """A consumer inside the test's event loop (the in-process engine shares that loop)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.addr = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    async def request(self, op: str, timeout_s: float = 5.0) -> tuple[int, str] | None:
        """(total, vnfc) of the answer to one request, None if none came (a lost datagram)."""
        loop = asyncio.get_running_loop()
        self.seq += 1
        seq = self.seq
        try:
            await loop.sock_sendto(self.sock, f"{op} {seq}".encode(), self.addr)
        except OSError:
            return None
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), remaining)
            except TimeoutError:
                return None
            except OSError:  # ICMP port unreachable from an earlier datagram: nobody serves
                await asyncio.sleep(0.01)
                continue
            answer = parse_answer(data)
            if answer and answer[0] == seq:
                return answer[1], answer[2]
        return None

    async def get_until_answered(self, timeout_s: float = PATIENCE_S) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = await self.request("GET", timeout_s=0.5)
            if answer is not None:
                return answer
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer to GET from {self.addr}")


def udp_get(address: str, timeout_s: float = 0.5) -> tuple[int, str] | None:
    """Blocking GET for tests without an event loop."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout_s)
        try:
            s.sendto(b"GET 1", (host, int(port)))
            answer = parse_answer(s.recv(2048))
        except OSError:
            return None
    return (answer[1], answer[2]) if answer else None


# --- processes --------------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def pid_alive(pid: int) -> bool:
    """Running (or stopped): /proc/PID exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def processes_of(runtime_dir: Path) -> list[int]:
    """Live processes started for this test: their environment points into its runtime dir
    (VNFCs get NFVHA_SOCKET there, `nfvha run` and probes inherit NFVHA_RUNTIME_DIR)."""
    prefix = str(runtime_dir)
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = environ_of(int(entry.name))
        ours = any(env.get(k, "").startswith(prefix) for k in ("NFVHA_SOCKET", "NFVHA_RUNTIME_DIR"))
        if ours and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_and_reap(pids: Iterable[int]) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # VNFCs lead their own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # ours (we may be a subreaper): do not leave a zombie


def cli(*args: str, timeout_s: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NFVHA, *args], capture_output=True, text=True, timeout=timeout_s, **kwargs
    )


class NfvhaRun:
    """``nfvha run CONFIG`` in the background, in its own process group."""

    def __init__(self, config: Path, name: str, runtime_dir: Path, work: Path) -> None:
        self.name = name
        self.socket = runtime_dir / name / "control.sock"
        self.deployment_dir = runtime_dir / name
        self.trace_path = work / f"{name}.trace.jsonl"
        self.stdout_path, self.stderr_path = work / f"{name}.out", work / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    NFVHA,
                    "run",
                    str(config),
                    "--state-dir",
                    str(work / "state"),
                    "--trace",
                    str(self.trace_path),
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status(self) -> dict[str, Any] | None:
        try:
            return request(self.socket, {"op": "status"}, timeout=5)
        except (ControlError, ValueError):
            return None

    def wait_status(self, cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"nfvha run exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.stderr
                )
            st = self.status()
            return st if st is not None and cond(st) else None

        return wait_for_sync(probe, what)

    def wait_steady(self) -> dict[str, Any]:
        return self.wait_status(steady, "a steady deployment")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = PATIENCE_S) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        """Teardown, also after a failed test: stop it, by force if it must be."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_and_reap([self.proc.pid])
                self.proc.wait()


def steady(status: dict[str, Any]) -> bool:
    """Every service up and every VNFC running (status view of experiment.is_steady)."""
    for vnf in status["vnfs"]:
        if not vnf["service"]["up"]:
            return False
        if any(c["state"] != "running" or c["role"] == "none" for c in vnf["vnfcs"]):
            return False
    return True


def vnfc_view(status: dict[str, Any], name: str) -> dict[str, Any]:
    for vnf in status["vnfs"]:
        for c in vnf["vnfcs"]:
            if c["name"] == name:
                return c
    raise KeyError(name)


# --- NFVI: cgroups, agents ------------------------------------------------------------------------
# Appended for the NFVI and scenario tests (test_nfvi.py, test_scenarios.py).


def cgroup_dirs(deployment_name: str) -> list[Path]:
    """Where the NFVI of ``deployment_name`` keeps its fault zones, on every cgroup v2 mount the
    runtime may pick (/sys/fs/cgroup/unified/nfvha/NAME on this kind of machine)."""
    from nfvha.runtime.nfvi import CGROUP2_MOUNTS

    return [mount / "nfvha" / deployment_name for mount in CGROUP2_MOUNTS]


def cgroup_v2_writable() -> bool:
    """A cgroup v2 hierarchy the NFVI runtime can use (it needs to create directories in it)."""
    from nfvha.runtime.nfvi import CGROUP2_MOUNTS

    return any(
        (m / "cgroup.procs").exists()
        and (m / "cgroup.subtree_control").exists()
        and os.access(m, os.W_OK)
        for m in CGROUP2_MOUNTS
    )


def cgroup_pids(path: Path) -> list[int]:
    """Every process in the cgroup tree under ``path``."""
    pids: list[int] = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def remove_cgroup_tree(path: Path, timeout_s: float = 10.0) -> None:
    """Teardown after a failed test: kill everything in the tree, then remove it bottom-up."""
    with contextlib.suppress(OSError):
        (path / "cgroup.freeze").write_text("0")
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout_s
    while cgroup_pids(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def leftover_cgroups(names: Iterable[str]) -> dict[str, list[int]]:
    """The cgroup directories of these deployments that still exist, with the processes in
    them; each one found is killed and removed, so that a failed test leaves nothing behind."""
    left: dict[str, list[int]] = {}
    for name in names:
        for path in cgroup_dirs(name):
            if path.exists():
                left[str(path)] = cgroup_pids(path)
                remove_cgroup_tree(path)
    return left


def agent_processes(runtime_dir: Path) -> list[int]:
    """Live NFVI agents (``python -m nfvha.nfvi.agent``) started for this test: they talk to a
    socket under its runtime dir, and inherit its NFVHA_RUNTIME_DIR."""
    prefix = str(runtime_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nfvha.nfvi.agent" not in argv:
            continue
        ours = any(a.decode(errors="replace").startswith(prefix) for a in argv) or environ_of(
            int(entry.name)
        ).get("NFVHA_RUNTIME_DIR", "").startswith(prefix)
        if ours and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


# --- scenarios ------------------------------------------------------------------------------------


def unique_scenario(name: str) -> Any:
    """Scenario ``name`` (uc1 ... uc9) with a deployment name and a service port of its own, so
    that a test does not collide with a developer's run of the same scenario (fixed names and
    ports 7721-7729). Scenario is frozen: rebuilt from a modified dump."""
    from nfvha import scenario as sc

    raw = sc.load(name).model_dump()
    raw["deployment"]["name"] = f"{name}-{uuid.uuid4().hex[:6]}"
    raw["deployment"]["vnfs"][0]["service"]["address"] = f"127.0.0.1:{free_udp_port()}"
    return sc.Scenario.model_validate(raw)


def match_steps(
    records: list[Record], steps: Iterable[Any], bindings: dict[str, str]
) -> list[int] | str:
    """An independent check of a scenario chain: the indices, in order, of records matching each
    step (name, kind, src, dst, data; ``$x`` resolved from ``bindings``); or a description of
    the first step that has no match after the previous one."""

    def bind(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in bindings:
                raise AssertionError(f"placeholder {value} is not bound: {bindings}")
            return bindings[value[1:]]
        return value

    found, start = [], 0
    for step in steps:
        crit: dict[str, Any] = {"name": step.name}
        for key in ("kind", "src", "dst"):
            if getattr(step, key):
                crit[key] = bind(getattr(step, key))
        crit.update({k: bind(v) for k, v in step.data.items()})
        i = find(records, start, **crit)
        if i is None:
            return f"no record matching {crit} after index {start}"
        found.append(i)
        start = i + 1
    return found


# --- never two actives, NFVI aware ----------------------------------------------------------------


def max_simultaneous_live_actives(
    records: list[Record],
    vnfc_vm: dict[str, str] | None = None,
    vm_host: dict[str, str] | None = None,
) -> int:
    """Like ``max_simultaneous_actives``, for VNFCs that may live in VMs. A VNFC holds the active
    role from AssignRole(active) until it is given another role or it is gone for real: its
    process exited (ProcessExited), its cleanup is confirmed (CleanupDone ok), its VM is
    confirmed cleaned up (VmCleanedUp ok) or its host fenced (HostFenced ok). The VIM's word that
    a VM failed (VmLost) does *not* end it: a hung VM's VNFC still holds its address."""
    vnfc_vm = dict(vnfc_vm or {})
    vm_host = dict(vm_host or {})
    holders: set[str] = set()
    most = 0
    for r in records:
        kind, name, data = r["kind"], r["name"], r.get("data", {})
        if kind == "command" and name == "AssignRole":
            if data["role"] == "active":
                holders.add(r["dst"])
            else:
                holders.discard(r["dst"])
        elif kind == "command" and name == "StartVm":
            vm_host[data["vm"]] = data["host"]
        elif kind == "event" and (
            name == "ProcessExited" or (name == "CleanupDone" and data.get("ok"))
        ):
            holders.discard(r["src"])
        elif kind == "event" and name == "VmCleanedUp" and data.get("ok"):
            holders -= {c for c in holders if vnfc_vm.get(c) == data["vm"]}
        elif kind == "event" and name == "HostFenced" and data.get("ok"):
            holders -= {c for c in holders if vm_host.get(vnfc_vm.get(c, "")) == data["host"]}
        most = max(most, len(holders))
    return most


# --- a consumer in the test's loop, for in-process engines ----------------------------------------


class Consumer:
    """Sends INC requests one after another (a few ms apart) from inside the test's event loop
    and records every good answer as (t_ns, total, vnfc); t_ns is on the trace's clock."""

    def __init__(self, address: str, pause_s: float = 0.002) -> None:
        self.client = UdpClient(address)
        self.pause_s = pause_s
        self.answers: list[tuple[int, int, str]] = []
        self.sent = 0
        self._stop = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            self.sent += 1
            answer = await self.client.request("INC", timeout_s=0.2)
            if answer is not None:
                self.answers.append((time.monotonic_ns(), answer[0], answer[1]))
            await asyncio.sleep(self.pause_s)

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        self.client.close()

    def answered_after(self, t_ns: int) -> int:
        return sum(1 for t, _, _ in self.answers if t > t_ns)

    def lost(self) -> int:
        """Acknowledged increments lost: answers whose total is not above every total
        acknowledged before them (each INC adds one, answered once durable)."""
        lost, best = 0, 0
        for _, total, _ in self.answers:
            if total <= best:
                lost += 1
            best = max(best, total)
        return lost

    def runs(self) -> list[str]:
        """Who answered, consecutive answers of one VNFC collapsed: [a, b] is one failover;
        [a, b, a] would mean two VNFCs served at once (or one failover too many)."""
        out: list[str] = []
        for _, _, vnfc in self.answers:
            if not out or out[-1] != vnfc:
                out.append(vnfc)
        return out


# --- zombies --------------------------------------------------------------------------------------


def zombies(parents: Iterable[int]) -> list[tuple[int, int, str]]:
    """(pid, ppid, command name) of every zombie whose parent is one of ``parents``."""
    parents = set(parents)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state == "Z" and int(ppid) in parents:
            found.append((int(entry.name), int(ppid), comm))
    return found


def reap_zombie_children() -> list[tuple[int, int, str]]:
    """Reap the zombies whose parent is this (test) process. An in-process engine makes the test
    process a child subreaper, so orphans of its agents and VNFCs end up here; returns them."""
    found = zombies([os.getpid()])
    for pid, _, _ in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return found
