"""The consumer: sends requests at a fixed rate and measures what it saw.

Outage is the longest gap between consecutive good answers (receive times, CLOCK_MONOTONIC,
the same clock as the manager's trace). Lost acknowledged increments: every ``INC`` answer
whose total was already acknowledged before proves that one acknowledged increment was
forgotten (a total below the highest seen but never seen is only a reordering of answers on
different sockets). Two actives show as answerers that alternate: A, then B, then A again
within ``interleave_window``. Requests go out round-robin from ``sockets`` source ports: a
service bound with SO_REUSEPORT spreads consumers over its servers by source address and port,
so from a single port a second active could never answer and never be seen.

Kinds, by the target's scheme: ``udp://HOST:PORT`` speaks the counter (``INC``/``GET``);
``dns://HOST:PORT/NAME`` sends a query (good: NOERROR with an answer) from the same datagram
sockets; ``tcp://HOST:PORT`` and ``http://HOST:PORT/PATH`` open one connection per request
(good: any answer; an HTTP 2xx status). Errors are counted by what went wrong.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import IO
from urllib.parse import urlsplit

DEFAULT_SOCKETS = 4  # source ports; see the module's docstring
DEFAULT_TIMEOUT_MS = 1000.0  # tcp/http: a connection's time to answer
MAX_PENDING = 256  # tcp/http: connections open at once (a hung server must not exhaust fds)
KINDS = ("udp", "tcp", "http", "dns")


class ProbeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # udp | tcp | http | dns
    host: str
    port: int
    path: str = ""  # http: the path; dns: the name asked for

    @property
    def label(self) -> str:
        """Who answered, for kinds whose answers do not say."""
        return f"{self.host}:{self.port}"


_USAGE = (
    "expected udp://HOST:PORT, tcp://HOST:PORT, http://HOST:PORT/PATH or dns://HOST:PORT/NAME "
    "with a port in 1..65535"
)


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port  # .port may raise
    except ValueError:
        scheme = host = port = None
    if scheme not in KINDS or not host or not port:
        raise ProbeError(f"{_USAGE}, got {url!r}")
    if scheme == "http":
        path = parts.path or "/"
        return Target(scheme, host, port, path + (f"?{parts.query}" if parts.query else ""))
    if scheme == "dns":
        name = parts.path.strip("/")
        if not name:
            raise ProbeError(f"{_USAGE}; a dns target needs the NAME to ask, got {url!r}")
        return Target(scheme, host, port, name)
    return Target(scheme, host, port)


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
    kind: str = "udp"
    error_kinds: dict[str, int] = field(default_factory=dict)  # what went wrong, how often

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

    def error(self, what: str) -> None:
        self.result.errors += 1
        self.result.error_kinds[what] = self.result.error_kinds.get(what, 0) + 1


def run(
    target: str,
    interval_ms: float = 1.0,
    duration_s: float = 5.0,
    op: str = "INC",
    interleave_window_ms: float = 100.0,
    answers_out: IO[str] | None = None,
    sockets: int = DEFAULT_SOCKETS,
    timeout_ms: float = DEFAULT_TIMEOUT_MS,
) -> ProbeResult:
    where = parse_target(target)
    if interval_ms <= 0 or duration_s <= 0 or timeout_ms <= 0:
        raise ProbeError("interval, duration and timeout must be positive")
    if sockets < 1:
        raise ProbeError("the probe needs at least one socket")
    result = ProbeResult(target, op, interval_ms, duration_s, sockets=sockets, kind=where.kind)
    tally = Tally(result, int(interleave_window_ms * 1e6))
    with contextlib.ExitStack() as stack:
        sel = stack.enter_context(selectors.DefaultSelector())
        client: Client
        if where.kind in ("udp", "dns"):
            client = Datagrams(where, op, tally, answers_out, stack, sel, sockets)
        else:
            client = ConnectionPerRequest(where, op, tally, answers_out, sel, int(timeout_ms * 1e6))
            stack.callback(client.close_all)
        _loop(client, sel, result, int(interval_ms * 1e6))
    return result


def _loop(
    client: Client, sel: selectors.BaseSelector, result: ProbeResult, interval_ns: int
) -> None:
    start = time.monotonic_ns()
    end = start + int(result.duration_s * 1e9)
    next_send = start
    try:
        while (now := time.monotonic_ns()) < end:
            if now >= next_send:
                result.sent += 1
                client.send(result.sent)
                next_send += interval_ns
                if now - next_send > 10 * interval_ns:  # we were descheduled: no burst
                    next_send = now + interval_ns
            wake = min(next_send, end, client.next_deadline())
            for key, mask in sel.select(max(0.0, (wake - time.monotonic_ns()) / 1e9)):
                client.ready(key, mask)
            client.expire(time.monotonic_ns())
    except KeyboardInterrupt:
        pass  # stopped early (SIGINT/SIGTERM): report what was seen so far
    result.duration_s = (time.monotonic_ns() - start) / 1e9
    # Answers to the last requests may still be on their way.
    for key, mask in sel.select(0.05):
        client.ready(key, mask)


class Client:
    """Sends request ``seq`` and folds what comes back into the tally."""

    def __init__(self, where: Target, op: str, tally: Tally, answers_out: IO[str] | None) -> None:
        self.where, self.op, self.tally, self.answers_out = where, op, tally, answers_out

    def send(self, seq: int) -> None:
        raise NotImplementedError

    def ready(self, key: selectors.SelectorKey, mask: int) -> None:
        raise NotImplementedError

    def next_deadline(self) -> float:
        return float("inf")

    def expire(self, now_ns: int) -> None:
        """Gives up on requests past their deadline (connections only)."""

    def good(self, t_ns: int, seq: int, total: int, vnfc: str) -> None:
        self.tally.good(t_ns, total, vnfc)
        if self.answers_out is not None:
            self.answers_out.write(f"{t_ns},{seq},{total},{vnfc}\n")

    def counter_answer(self, t_ns: int, data: bytes) -> bool:
        """A counter's answer, ``OK SEQ TOTAL VNFC``: tallied; False if it is not one."""
        parts = data.split()
        if len(parts) == 4 and parts[0] == b"OK" and parts[1].isdigit() and parts[2].isdigit():
            self.good(t_ns, int(parts[1]), int(parts[2]), parts[3].decode(errors="replace"))
            return True
        return False


class Datagrams(Client):
    """udp (the counter) and dns: requests from ``sockets`` source ports in turn."""

    def __init__(
        self,
        where: Target,
        op: str,
        tally: Tally,
        answers_out: IO[str] | None,
        stack: contextlib.ExitStack,
        sel: selectors.BaseSelector,
        sockets: int,
    ) -> None:
        super().__init__(where, op, tally, answers_out)
        self.socks = [_open(stack, sel, where.host) for _ in range(sockets)]

    def send(self, seq: int) -> None:
        sock = self.socks[seq % len(self.socks)]
        try:
            sock.sendto(self._request(seq), (self.where.host, self.where.port))
        except OSError as exc:
            self.tally.error(_reason(exc))

    def _request(self, seq: int) -> bytes:
        if self.where.kind == "udp":
            return b"%s %d" % (self.op.encode(), seq)
        import dns.message

        query = dns.message.make_query(self.where.path, "A")
        query.id = seq & 0xFFFF
        return query.to_wire()

    def ready(self, key: selectors.SelectorKey, mask: int) -> None:
        sock: socket.socket = key.data
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.tally.error(_reason(exc))
                return
            t_ns = time.monotonic_ns()
            if self.where.kind == "dns":
                self._dns_answer(t_ns, data)
            elif not self.counter_answer(t_ns, data):
                self.tally.error("bad answer")

    def _dns_answer(self, t_ns: int, data: bytes) -> None:
        import dns.exception
        import dns.message
        import dns.rcode

        try:
            answer = dns.message.from_wire(data)
        except dns.exception.DNSException:
            self.tally.error("bad answer")
            return
        if answer.rcode() != dns.rcode.NOERROR:
            self.tally.error(f"rcode {dns.rcode.to_text(answer.rcode())}")
        elif not answer.answer:
            self.tally.error("no answer records")
        else:
            self.good(t_ns, answer.id, 0, self.where.label)


@dataclass(slots=True, eq=False)
class _Exchange:
    sock: socket.socket
    seq: int
    deadline_ns: int
    connected: bool = False
    answer: bytes = b""


class ConnectionPerRequest(Client):
    """tcp and http: one connection per request, non-blocking, given up at its deadline."""

    def __init__(
        self,
        where: Target,
        op: str,
        tally: Tally,
        answers_out: IO[str] | None,
        sel: selectors.BaseSelector,
        timeout_ns: int,
    ) -> None:
        super().__init__(where, op, tally, answers_out)
        self.sel, self.timeout_ns = sel, timeout_ns
        self.pending: dict[int, _Exchange] = {}  # by seq: in order of their deadlines

    def send(self, seq: int) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.tally.error("too many unanswered connections")
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((self.where.host, self.where.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.tally.error(_reason(OSError(code, os.strerror(code))))
            return
        ex = _Exchange(sock, seq, time.monotonic_ns() + self.timeout_ns)
        self.pending[seq] = ex
        self.sel.register(sock, selectors.EVENT_WRITE, data=ex)

    def ready(self, key: selectors.SelectorKey, mask: int) -> None:
        ex: _Exchange = key.data
        try:
            if not ex.connected:
                self._connected(ex)
                return
            data = ex.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._done(ex, _reason(exc))
            return
        ex.answer += data
        if self.where.kind == "http" and b"\r\n" in ex.answer:
            self._done(ex, self._http(ex))
        elif not data or (self.where.kind == "tcp" and b"\n" in ex.answer):
            self._done(ex, self._tcp(ex) if ex.answer else "closed without an answer")

    def _connected(self, ex: _Exchange) -> None:
        code = ex.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        ex.connected = True
        ex.sock.send(self._request(ex.seq))  # small: fits an empty send buffer whole
        self.sel.modify(ex.sock, selectors.EVENT_READ, data=ex)

    def _request(self, seq: int) -> bytes:
        if self.where.kind == "tcp":
            return b"%s %d\n" % (self.op.encode(), seq)
        w = self.where
        return (
            f"GET {w.path} HTTP/1.1\r\nHost: {w.host}:{w.port}\r\n"
            "User-Agent: nfvha-probe\r\nConnection: close\r\n\r\n"
        ).encode()

    def _tcp(self, ex: _Exchange) -> str | None:
        """Any answer is good; a counter's says who answered."""
        t_ns = time.monotonic_ns()
        if not self.counter_answer(t_ns, ex.answer):
            self.good(t_ns, ex.seq, 0, self.where.label)
        return None

    def _http(self, ex: _Exchange) -> str | None:
        status = ex.answer.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
            return "bad answer"
        if not 200 <= int(status[1]) < 300:
            return f"HTTP {int(status[1])}"
        self.good(time.monotonic_ns(), ex.seq, 0, self.where.label)
        return None

    def _done(self, ex: _Exchange, error: str | None) -> None:
        if error is not None:
            self.tally.error(error)
        if self.pending.get(ex.seq) is ex:
            del self.pending[ex.seq]
        with contextlib.suppress(KeyError, ValueError):  # never registered, or already not
            self.sel.unregister(ex.sock)
        ex.sock.close()

    def next_deadline(self) -> float:
        return next(iter(self.pending.values())).deadline_ns if self.pending else float("inf")

    def expire(self, now_ns: int) -> None:
        while self.pending:
            ex = next(iter(self.pending.values()))
            if ex.deadline_ns > now_ns:
                return
            self._done(ex, "timeout")

    def close_all(self) -> None:
        """At the end: requests still unanswered are neither good nor errors."""
        for ex in list(self.pending.values()):
            self._done(ex, None)


def _reason(exc: OSError) -> str:
    names = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ETIMEDOUT: "timeout"}
    return names.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def _open(stack: contextlib.ExitStack, sel: selectors.BaseSelector, host: str) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.setblocking(False)
    sock.bind(("127.0.0.1" if host.startswith("127.") else "", 0))
    sel.register(sock, selectors.EVENT_READ, data=sock)  # key.data: the socket, as a socket
    return sock
