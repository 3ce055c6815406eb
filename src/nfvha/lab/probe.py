"""The consumer: sends requests at a fixed rate and measures what it saw.

Outage is the longest gap between consecutive good answers (receive times, CLOCK_MONOTONIC,
the same clock as the manager's trace). Lost acknowledged increments: every ``INC`` answer
whose total was already acknowledged before proves that one acknowledged increment was
forgotten (a total below the highest seen but never seen is only a reordering of answers on
different sockets). Two actives show as answerers that alternate: A, then B, then A again
within ``interleave_window``. Requests go out round-robin from ``sockets`` source ports: a
service bound with SO_REUSEPORT spreads consumers over its servers by source address and port,
so from a single port a second active could never answer and never be seen.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import IO
from urllib.parse import urlsplit

DEFAULT_SOCKETS = 4  # source ports; see the module's docstring


class ProbeError(ValueError):
    pass


def parse_target(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port  # .port may raise
    except ValueError:
        scheme = host = port = None
    if scheme != "udp" or not host or not port:
        raise ProbeError(f"expected udp://HOST:PORT with a port in 1..65535, got {url!r}")
    return host, port


@dataclass(slots=True)
class AnswerRun:
    vnfc: str
    from_ns: int
    to_ns: int
    count: int


@dataclass(slots=True)
class ProbeResult:
    target: str
    op: str
    interval_ms: float
    duration_s: float
    sent: int = 0
    answered: int = 0
    errors: int = 0
    outage_ms: float = 0.0
    outage_from_ns: int = 0
    outage_to_ns: int = 0
    lost: int = 0
    max_total: int = 0
    interleaved: bool = False
    sockets: int = 1
    runs: list[AnswerRun] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class Acknowledged:
    """The totals acknowledged so far, to tell a forgotten increment from a reordered answer.
    Totals more than ``window`` below the highest are not kept; an answer that far back is
    counted as a loss (no reordering spans thousands of requests)."""

    window: int = 100_000
    highest: int = 0
    seen: set[int] = field(default_factory=set)

    def repeats(self, total: int) -> bool:
        """Record ``total`` (an INC answer's); True if it was acknowledged before: then an
        acknowledged increment was forgotten. Total 0 is a stateless server's: never a loss."""
        if total <= 0:
            return False
        if total in self.seen or total <= self.highest - self.window:
            return True
        self.seen.add(total)
        if total > self.highest:
            self.highest = total
            if len(self.seen) > 2 * self.window:
                self.seen = {t for t in self.seen if t > total - self.window}
        return False


@dataclass(slots=True)
class Tally:
    """Folds good answers into the result as they arrive."""

    result: ProbeResult
    window_ns: int
    last_ns: int = 0
    acked: Acknowledged = field(default_factory=Acknowledged)

    def good(self, t_ns: int, total: int, vnfc: str) -> None:
        r = self.result
        r.answered += 1
        if self.last_ns and t_ns - self.last_ns > r.outage_ms * 1e6:
            r.outage_ms = (t_ns - self.last_ns) / 1e6
            r.outage_from_ns, r.outage_to_ns = self.last_ns, t_ns
        self.last_ns = t_ns
        if r.op == "INC" and self.acked.repeats(total):
            r.lost += 1
        elif r.op == "GET" and total < r.max_total:
            r.lost = max(r.lost, r.max_total - total)
        r.max_total = max(r.max_total, total)
        self._answerer(t_ns, vnfc)

    def _answerer(self, t_ns: int, vnfc: str) -> None:
        runs = self.result.runs
        if runs and runs[-1].vnfc == vnfc:
            runs[-1].to_ns, runs[-1].count = t_ns, runs[-1].count + 1
            return
        if len(runs) >= 2 and runs[-2].vnfc == vnfc and t_ns - runs[-1].from_ns < self.window_ns:
            self.result.interleaved = True
        runs.append(AnswerRun(vnfc, t_ns, t_ns, 1))


def run(
    target: str,
    interval_ms: float = 1.0,
    duration_s: float = 5.0,
    op: str = "INC",
    interleave_window_ms: float = 100.0,
    answers_out: IO[str] | None = None,
    sockets: int = DEFAULT_SOCKETS,
) -> ProbeResult:
    host, port = parse_target(target)
    if interval_ms <= 0 or duration_s <= 0:
        raise ProbeError("interval and duration must be positive")
    if sockets < 1:
        raise ProbeError("the probe needs at least one socket")
    result = ProbeResult(target, op, interval_ms, duration_s, sockets=sockets)
    tally = Tally(result, int(interleave_window_ms * 1e6))
    interval_ns = int(interval_ms * 1e6)
    with contextlib.ExitStack() as stack:
        sel = stack.enter_context(selectors.DefaultSelector())
        socks = [_open(stack, sel, host) for _ in range(sockets)]
        start = time.monotonic_ns()
        end = start + int(duration_s * 1e9)
        next_send = start
        try:
            while (now := time.monotonic_ns()) < end:
                if now >= next_send:
                    result.sent += 1
                    sock = socks[result.sent % sockets]
                    try:
                        sock.sendto(b"%s %d" % (op.encode(), result.sent), (host, port))
                    except OSError:
                        result.errors += 1
                    next_send += interval_ns
                    if now - next_send > 10 * interval_ns:  # we were descheduled: no burst
                        next_send = now + interval_ns
                timeout = max(0.0, (min(next_send, end) - time.monotonic_ns()) / 1e9)
                for key, _ in sel.select(timeout):
                    _drain(key.data, tally, answers_out)
        except KeyboardInterrupt:
            pass  # stopped early (SIGINT/SIGTERM): report what was seen so far
        result.duration_s = (time.monotonic_ns() - start) / 1e9
        # Answers to the last requests may still be on their way.
        for key, _ in sel.select(0.05):
            _drain(key.data, tally, answers_out)
    return result


def _open(stack: contextlib.ExitStack, sel: selectors.BaseSelector, host: str) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.setblocking(False)
    sock.bind(("127.0.0.1" if host.startswith("127.") else "", 0))
    sel.register(sock, selectors.EVENT_READ, data=sock)  # key.data: the socket, as a socket
    return sock


def _drain(sock: socket.socket, tally: Tally, answers_out: IO[str] | None) -> None:
    while True:
        try:
            data = sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            tally.result.errors += 1
            return
        t_ns = time.monotonic_ns()
        parts = data.split()
        if len(parts) == 4 and parts[0] == b"OK" and parts[2].isdigit():
            vnfc = parts[3].decode(errors="replace")
            tally.good(t_ns, int(parts[2]), vnfc)
            if answers_out is not None:
                answers_out.write(f"{t_ns},{int(parts[1])},{int(parts[2])},{vnfc}\n")
        else:
            tally.result.errors += 1
