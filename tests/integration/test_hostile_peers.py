"""Peers that misbehave on the manager's Unix sockets: malformed control requests, a registered
component that sends garbage, and a flood of idle connections, random bytes and huge lines.
Each is answered or dropped; none crashes the manager, holds its descriptors or stops the
service from answering. Nothing here asserts on how fast anything happens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nfvha.runtime.connections import MAX_CONNECTIONS
from nfvha.runtime.control import MAX_REQUEST, request
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    customize,
    deployment,
    example_raw,
    free_udp_port,
    unique_name,
    write_config,
)
from tests.integration.support.runs import NFVHA, NfvhaRun, running_engine
from tests.integration.support.trace import dump_records, select
from tests.integration.support.waiting import PATIENCE_S, wait_for

GARBAGE_WRITER = Path(__file__).parent / "components" / "garbage_writer.py"
ASYNCIO_BACKLOG = 100  # asyncio.start_unix_server's default
KNOWN_FAULTS = "vnfc-crash, vnfc-hang, vm-crash, vm-hang, host-crash, vnfc-resume"


def start_2n(tmp_path: Path, runtime_dir: Path, runs: list) -> tuple[NfvhaRun, str]:
    """`nfvha run` of the 2n counter on a free port, steady; with the service's address."""
    name = unique_name()
    raw = customize(example_raw("2n"), name=name, port=free_udp_port(), health=RELAXED_HEALTH)
    run = NfvhaRun(write_config(raw, tmp_path / f"{name}.yaml"), name, runtime_dir, tmp_path)
    runs.append(run)
    run.wait_steady()
    return run, raw["vnfs"][0]["service"]["address"]


def exchange(path: Path, data: bytes) -> dict | None:
    """Send ``data`` on one connection and read until the manager closes it; the answer, or None
    when it hung up without one (it may reset a connection whose line it did not read)."""
    got = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PATIENCE_S)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):
                got += chunk
    return json.loads(got) if got else None


# --- the control socket ---------------------------------------------------------------------------


BAD_REQUESTS = [
    (
        b'{"op": "fault", "kind": "vnfc-crash", "target": ["x"]}\n',
        "target: Input should be a valid string",
    ),
    (
        b'{"op": "fault", "kind": "bogus", "target": "x"}\n',
        f"unknown fault kind 'bogus'; known: {KNOWN_FAULTS}",
    ),
    (b'{"op": "fault", "kind": "vm-crash", "target": "vm-1"}\n', "needs hosts and VMs"),
    (b'{"op": "fault", "kind": "vnfc-crash", "target": "nope"}\n', "no VNFC named 'nope'"),
    (b'{"op": "fault", "kind": "kill", "target": "nope"}\n', "no VNFC named 'nope'"),  # 0.1 name
    (b'{"op": "fault", "kind": "vnfc-crash"}\n', "target: Field required"),
    (b'{"op": "fault", "target": "x"}\n', "kind: Field required"),
    (b'{"op": "restart"}\n', "unknown op 'restart'; known: status, trace, fault"),
    (b'{"kind": "vnfc-crash"}\n', "expected a JSON object with 'op'"),
    (b"[1, 2]\n", "expected a JSON object with 'op'"),
    (b'"status"\n', "expected a JSON object with 'op'"),
    (b"this is not json\n", "not a JSON request"),
    (b"\xff\xfe\n", "not a JSON request"),
    (b'{"op": "trace", "since": "5"}\n', "since: Input should be a valid integer"),
    (b'{"op": "trace", "since": -1}\n', "since: Input should be greater than or equal to 0"),
    (b'{"op": "status", "verbose": true}\n', "verbose: Extra inputs are not permitted"),
    (b'{"op": "sta', "no request line within 2 s"),  # half a line, then silence
]


@pytest.mark.timeout(120)
def test_malformed_control_requests_are_answered(tmp_path, runtime_dir, nfvha_runs) -> None:
    run, _ = start_2n(tmp_path, runtime_dir, nfvha_runs)
    for line, expected in BAD_REQUESTS:
        answer = exchange(run.socket, line)
        assert answer is not None, f"no answer to {line!r}"
        assert answer["ok"] is False and expected in answer["error"], (line, answer)

    # A 10 MB line is not read beyond the limit: answered (or reset), and dropped.
    answer = exchange(run.socket, b"x" * (10 << 20) + b"\n")
    if answer is not None:
        assert answer == {"ok": False, "error": f"request line over {MAX_REQUEST} bytes"}

    # The good requests still work, and nothing went wrong inside.
    status = request(run.socket, {"op": "status"})
    assert status["vnfs"][0]["service"]["up"] is True
    records = request(run.socket, {"op": "trace", "since": 0})["records"]
    assert not select(records, name="InternalError"), dump_records(records)
    assert not select(records, kind="fault"), dump_records(records)
    assert run.stop() == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr


# --- a registered component that sends garbage ------------------------------------------------


@pytest.mark.timeout(60)
def test_component_sending_garbage_is_dropped_after_a_burst(tmp_path: Path) -> None:
    out = tmp_path / "garbage.out"
    vnfcs = [
        {
            "name": name,
            "command": [sys.executable, str(GARBAGE_WRITER)],
            "env": {"GARBAGE_OUT": str(out)},
        }
        for name in ("garbage-a", "garbage-b")
    ]
    raw = customize(
        example_raw("2n"),
        name=unique_name(),
        port=free_udp_port(),
        vnf={"vnfcs": vnfcs},
        health=RELAXED_HEALTH,
    )
    dep = deployment(raw)

    def said() -> list[str]:
        return out.read_text().split() if out.exists() else []

    def refused(engine) -> list[dict]:
        recs = select(engine.trace.records, name="MessageRefused")
        return [r for r in recs if r["src"].startswith("garbage-")]

    def refusals(engine) -> int:
        """Refusals traced one by one plus those summed up by the throttle."""
        return sum(r.get("data", {}).get("suppressed", 1) for r in refused(engine))

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_for(lambda: said()[:2] == ["alive", "dropped"], "the manager to drop it")
            # 19 + 19 refused and the connection kept (the checkpoint after them succeeded);
            # the 20th in a row dropped it. Every refusal is accounted for in the trace, though
            # not every one has a record of its own.
            await wait_for(lambda: refusals(engine) == 58, "58 refusals in the trace")
            assert len(refused(engine)) < 58, dump_records(list(engine.trace.records))
            assert engine.vnfs["counter"].checkpoints.state == {"n": 1}

    asyncio.run(scenario())


# --- a flood -----------------------------------------------------------------------------------


class Probe:
    """`nfvha probe` (INC every millisecond) in its own process, so that the flood, sent from
    this one, does not compete with it for the GIL; every good answer is timed."""

    def __init__(self, address: str, answers: Path) -> None:
        self.answers_path = answers
        self.proc = subprocess.Popen(
            [NFVHA, "probe", f"udp://{address}", "--interval-ms", "1", "--duration", "600"]
            + ["--json", "--answers-out", str(answers)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )

    def answers(self) -> list[tuple[int, int]]:
        """(t_ns, total) of every good answer so far, on CLOCK_MONOTONIC."""
        if not self.answers_path.exists():
            return []
        rows = [line.split(",") for line in self.answers_path.read_text().splitlines()]
        return [(int(r[0]), int(r[2])) for r in rows if len(r) == 4]

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        return json.loads(out)

    def largest_gap_ms(self, since_ns: int, until_ns: int) -> float:
        times = [t for t, _ in self.answers() if since_ns <= t <= until_ns]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0) / 1e6


def wait_for_answers(probe: Probe) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while len(probe.answers()) < 20:
        assert time.monotonic() < deadline, "the consumer got no answers before the flood"
        time.sleep(0.01)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_many(path: Path, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        socks.append(sock)
        sock.connect(str(path))  # blocking: waits while the listen backlog is full
        sock.settimeout(PATIENCE_S)
    return socks


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the manager hangs up on it before it is all sent
        sock.sendall(data)


def wait_all_dropped(socks: list[socket.socket]) -> None:
    """Every connection closed by the manager (EOF or reset), whatever it said before that."""
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + PATIENCE_S
        while sel.get_map():
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(sel.get_map())} connections still open")
            for key, _ in sel.select(timeout=0.5):
                try:
                    if key.fileobj.recv(1 << 16):
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                sel.unregister(key.fileobj)


@pytest.mark.timeout(180)
def test_flood_on_the_sockets_leaves_the_service_alone(tmp_path, runtime_dir, nfvha_runs) -> None:
    run, address = start_2n(tmp_path, runtime_dir, nfvha_runs)
    components = run.deployment_dir / "components.sock"
    pid = run.proc.pid
    before = request(run.socket, {"op": "status"})
    probe = Probe(address, tmp_path / "answers.csv")
    fds = {"before": fd_count(pid), "most": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            with contextlib.suppress(OSError):
                fds["most"] = max(fds["most"], fd_count(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    socks: list[socket.socket] = []
    senders: list[threading.Thread] = []
    try:
        wait_for_answers(probe)
        sampler.start()
        flood_ns = time.monotonic_ns()
        for path in (components, run.socket):
            noisy = connect_many(path, 3)
            socks += noisy
            junk = [os.urandom(1 << 16), b'{"t": "hello", "vnfc": ', b"y" * (10 << 20) + b"\n"]
            for sock, data in zip(noisy, junk, strict=True):
                senders.append(threading.Thread(target=send_quietly, args=(sock, data)))
                senders[-1].start()
            socks += connect_many(path, 1000)
        wait_all_dropped(socks)
        for sender in senders:
            sender.join(PATIENCE_S)
        flood_end_ns = time.monotonic_ns()
        fds["held"] = fd_count(pid)  # every flood connection still open on our side
    finally:
        sampling.set()
        for sock in socks:
            sock.close()
        verdict = probe.stop()
    sampler.join()
    answers = probe.answers()
    answered_in_flood = sum(1 for t, _ in answers if flood_ns <= t <= flood_end_ns)

    # The descriptors are bounded by the connection limits, not by the flood: a refused
    # connection lives a few loop turns, and asyncio accepts up to its backlog (100) per turn.
    bound = fds["before"] + 2 * MAX_CONNECTIONS + 6 * ASYNCIO_BACKLOG
    print(
        f"\nfds before {fds['before']}, most during the flood {fds['most']} (bound {bound}), "
        f"after it {fds['held']}; "
        f"consumer: largest gap before the flood "
        f"{probe.largest_gap_ms(0, flood_ns):.1f} ms, during it "
        f"{probe.largest_gap_ms(flood_ns, flood_end_ns):.1f} ms, "
        f"{answered_in_flood} answers in {(flood_end_ns - flood_ns) / 1e9:.1f} s"
    )
    assert fds["most"] <= bound, fds
    assert fds["held"] <= fds["before"] + 4, fds
    assert answered_in_flood > 0
    assert verdict["lost"] == 0, verdict

    # The service answers, nothing failed over, and the refusals were traced in bulk.
    after = request(run.socket, {"op": "status"})
    assert after["vnfs"][0]["service"]["active"] == before["vnfs"][0]["service"]["active"]
    assert [c["pid"] for c in after["vnfs"][0]["vnfcs"]] == [
        c["pid"] for c in before["vnfs"][0]["vnfcs"]
    ]
    records = request(run.socket, {"op": "trace", "since": flood_ns})["records"]
    assert not select(records, name="Cleanup"), dump_records(records)
    refused = select(records, name="ConnectionRefused")
    suppressed = sum(r.get("data", {}).get("suppressed", 0) for r in refused)
    assert refused and suppressed > len(refused), dump_records(records)
    assert len(select(records, name="MessageRefused")) < 2 * MAX_CONNECTIONS
    assert run.stop() == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
