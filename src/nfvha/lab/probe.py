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

Long-lived connections (``connections=N``, tcp only): N connections are kept open, each sends
a request (a line) every interval and reads the answers (a line each, in order; requests are
pipelined, not held back while one is unanswered). An established connection that sees a
reset, an end of file or its oldest request unanswered past the timeout counts in ``resets``
(and in ``error_kinds`` by kind); it is reopened at once, and each reopened connection that
gets through counts in ``reconnects``. A reopening that fails (refused: nobody listens yet) is
an error and is retried at the next interval; requests made while a connection is opening go
out when it opens. Requests unanswered when a connection is lost are lost with it.

``netns``: every socket is created inside that network namespace (``ip netns`` name); a socket
keeps its namespace, so the probe itself runs in this process's namespace, in this thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import IO
from urllib.parse import urlsplit

DEFAULT_SOCKETS = 4  # source ports; see the module's docstring
DEFAULT_TIMEOUT_MS = 1000.0  # tcp/http: a connection's time to answer
MAX_PENDING = 256  # tcp/http: connections open at once (a hung server must not exhaust fds)
SOCKET_BATCH = 32  # sockets made at once in another namespace (one thread enters it per batch)
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
    connections: int = 0  # tcp: long-lived connections kept open (0: one per request)
    resets: int = 0  # long-lived connections lost (reset, end of file, timeout)
    reconnects: int = 0  # long-lived connections opened again after a reset
    netns: str = ""  # the network namespace of the probe's sockets ("": this process's)

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
    connections: int = 0,
    netns: str | None = None,
) -> ProbeResult:
    """Probe ``target`` for ``duration_s``; ``connections`` > 0: that many long-lived tcp
    connections instead of one per request; ``netns``: make the sockets in that namespace."""
    where = parse_target(target)
    _check(where, interval_ms, duration_s, timeout_ms, sockets, connections)
    result = ProbeResult(
        target,
        op,
        interval_ms,
        duration_s,
        sockets=sockets,
        kind=where.kind,
        connections=connections,
        netns=netns or "",
    )
    tally = Tally(result, int(interleave_window_ms * 1e6))
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(SocketSource(netns))
        sel = stack.enter_context(selectors.DefaultSelector())
        client: Client
        if where.kind in ("udp", "dns"):
            client = Datagrams(where, op, tally, answers_out, source, stack, sel, sockets)
        elif connections:
            client = LongLived(
                where, op, tally, answers_out, source, sel, int(timeout_ms * 1e6), connections
            )
            stack.callback(client.close_all)
        else:
            client = ConnectionPerRequest(
                where, op, tally, answers_out, source, sel, int(timeout_ms * 1e6)
            )
            stack.callback(client.close_all)
        _loop(client, sel, result, int(interval_ms * 1e6))
    return result


def _check(
    where: Target,
    interval_ms: float,
    duration_s: float,
    timeout_ms: float,
    sockets: int,
    connections: int,
) -> None:
    if interval_ms <= 0 or duration_s <= 0 or timeout_ms <= 0:
        raise ProbeError("interval, duration and timeout must be positive")
    if sockets < 1:
        raise ProbeError("the probe needs at least one socket")
    if connections < 0:
        raise ProbeError("the number of long-lived connections cannot be negative")
    if connections and where.kind != "tcp":
        raise ProbeError(f"long-lived connections are for tcp:// targets, not {where.kind}://")


class SocketSource:
    """Makes the probe's sockets: in this process's network namespace, or in ``netns``. There,
    a short-lived thread enters the namespace to make them (``network.in_namespace``), so they
    are made in batches; the spare ones are closed at the end. A socket keeps its namespace
    whichever thread uses it."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.spare: dict[int, list[socket.socket]] = {}
        if netns is not None:
            self._check(netns)

    @staticmethod
    def _check(netns: str) -> None:
        from nfvha.drivers import network

        if not netns or "/" in netns or netns in (".", ".."):
            raise ProbeError(f"bad network namespace name {netns!r}")
        try:
            network.in_namespace(netns, lambda: None)
        except FileNotFoundError:
            raise ProbeError(
                f"no network namespace {netns!r} (ip netns list shows those there are)"
            ) from None
        except OSError as exc:
            raise ProbeError(f"cannot enter network namespace {netns!r}: {exc}") from None

    def new(self, kind: int) -> socket.socket:
        """An IPv4 socket of ``kind``; OSError if it cannot be made."""
        if self.netns is None:
            return socket.socket(socket.AF_INET, kind)
        spare = self.spare.setdefault(kind, [])
        if not spare:
            spare.extend(self._batch(self.netns, kind))
        return spare.pop()

    @staticmethod
    def _batch(netns: str, kind: int) -> list[socket.socket]:
        from nfvha.drivers import network

        return network.in_namespace(
            netns, lambda: [socket.socket(socket.AF_INET, kind) for _ in range(SOCKET_BATCH)]
        )

    def __enter__(self) -> SocketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        for spare in self.spare.values():
            for sock in spare:
                sock.close()
        self.spare.clear()


def _loop(
    client: Client, sel: selectors.BaseSelector, result: ProbeResult, interval_ns: int
) -> None:
    start = time.monotonic_ns()
    end = start + int(result.duration_s * 1e9)
    next_send = start
    try:
        while (now := time.monotonic_ns()) < end:
            if now >= next_send:
                result.sent += client.send(result.sent + 1)
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
    """Sends requests from ``seq`` on and folds what comes back into the tally."""

    def __init__(
        self,
        where: Target,
        op: str,
        tally: Tally,
        answers_out: IO[str] | None,
        source: SocketSource,
    ) -> None:
        self.where, self.op, self.tally, self.answers_out = where, op, tally, answers_out
        self.source = source

    def send(self, seq: int) -> int:
        """Sends this interval's requests, numbered from ``seq``; how many (failed ones too)."""
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
        source: SocketSource,
        stack: contextlib.ExitStack,
        sel: selectors.BaseSelector,
        sockets: int,
    ) -> None:
        super().__init__(where, op, tally, answers_out, source)
        self.socks = [_open(stack, sel, source, where.host) for _ in range(sockets)]

    def send(self, seq: int) -> int:
        sock = self.socks[seq % len(self.socks)]
        try:
            sock.sendto(self._request(seq), (self.where.host, self.where.port))
        except OSError as exc:
            self.tally.error(_reason(exc))
        return 1

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
        source: SocketSource,
        sel: selectors.BaseSelector,
        timeout_ns: int,
    ) -> None:
        super().__init__(where, op, tally, answers_out, source)
        self.sel, self.timeout_ns = sel, timeout_ns
        self.pending: dict[int, _Exchange] = {}  # by seq: in order of their deadlines

    def send(self, seq: int) -> int:
        if len(self.pending) >= MAX_PENDING:
            self.tally.error("too many unanswered connections")
            return 1
        try:
            sock = _connect(self.source, self.where)
        except OSError as exc:
            self.tally.error(_reason(exc))
            return 1
        ex = _Exchange(sock, seq, time.monotonic_ns() + self.timeout_ns)
        self.pending[seq] = ex
        self.sel.register(sock, selectors.EVENT_WRITE, data=ex)
        return 1

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
            return _line(self.op, seq)
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


class LongLived(Client):
    """tcp: ``connections`` connections kept open, each sending a request every interval and
    reading the answers in order; a lost one is reopened at once (see the module's docstring)."""

    def __init__(
        self,
        where: Target,
        op: str,
        tally: Tally,
        answers_out: IO[str] | None,
        source: SocketSource,
        sel: selectors.BaseSelector,
        timeout_ns: int,
        connections: int,
    ) -> None:
        super().__init__(where, op, tally, answers_out, source)
        self.sel, self.timeout_ns = sel, timeout_ns
        self.conns = [_Connection() for _ in range(connections)]
        for conn in self.conns:
            self._open(conn)

    def send(self, seq: int) -> int:
        deadline = time.monotonic_ns() + self.timeout_ns
        for i, conn in enumerate(self.conns):
            if conn.sock is None and not self._open(conn):
                continue  # the failed opening is this request's error
            conn.waiting.append((seq + i, deadline))
            conn.out += _line(self.op, seq + i)
            if conn.established:
                self._flush(conn)
        return len(self.conns)

    def _open(self, conn: _Connection) -> bool:
        """Starts opening ``conn``; False, the error counted, if that failed at once."""
        try:
            conn.sock = _connect(self.source, self.where)
        except OSError as exc:
            self.tally.error(_reason(exc))
            return False
        conn.events = selectors.EVENT_WRITE  # writable: the connection is open (or failed)
        self.sel.register(conn.sock, conn.events, data=conn)
        return True

    def ready(self, key: selectors.SelectorKey, mask: int) -> None:
        conn: _Connection = key.data
        if conn.sock is not key.fileobj:
            return  # closed by an earlier event of the same select
        if not conn.established:
            self._opened(conn)
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and conn.sock is key.fileobj:
            self._read(conn)

    def _opened(self, conn: _Connection) -> None:
        assert conn.sock is not None
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:  # never open, so no reset: retried at the next interval
            self._drop(conn)
            self.tally.error(_reason(OSError(code, os.strerror(code))))
            return
        conn.established = True
        if conn.was_lost:
            conn.was_lost = False
            self.tally.result.reconnects += 1
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Writes what it can of the requests; waits for writability for the rest."""
        assert conn.sock is not None
        if conn.out:
            try:
                conn.out = conn.out[conn.sock.send(conn.out) :]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._lost(conn, _reason(exc))
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if events != conn.events:
            conn.events = events
            self.sel.modify(conn.sock, events, data=conn)

    def _read(self, conn: _Connection) -> None:
        assert conn.sock is not None
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, _reason(exc))
            return
        if not data:
            self._lost(conn, "closed")
            return
        t_ns = time.monotonic_ns()
        *lines, conn.answer = (conn.answer + data).split(b"\n")
        for line in lines:
            if not conn.waiting:
                self.tally.error("answer to no request")
                continue
            seq, _ = conn.waiting.popleft()
            if not self.counter_answer(t_ns, line):  # any answer is good, as one per request
                self.good(t_ns, seq, 0, self.where.label)

    def _lost(self, conn: _Connection, why: str) -> None:
        """An open connection failed: a reset, counted; reopened at once."""
        self.tally.error(why)
        self.tally.result.resets += 1
        self._drop(conn)
        conn.was_lost = True
        self._open(conn)

    def _drop(self, conn: _Connection) -> None:
        """Closes ``conn``; its unanswered requests are lost with it."""
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)
            conn.sock.close()
        conn.sock, conn.established, conn.events = None, False, 0
        conn.waiting.clear()
        conn.out = conn.answer = b""

    def next_deadline(self) -> float:
        return min((c.waiting[0][1] for c in self.conns if c.waiting), default=float("inf"))

    def expire(self, now_ns: int) -> None:
        for conn in self.conns:
            if not conn.waiting or conn.waiting[0][1] > now_ns:
                continue
            if conn.established:
                self._lost(conn, "timeout")
            else:  # it never opened: no reset; retried at the next interval
                self._drop(conn)
                self.tally.error("timeout")

    def close_all(self) -> None:
        """At the end: requests still unanswered are neither good nor errors."""
        for conn in self.conns:
            self._drop(conn)


@dataclass(slots=True, eq=False)
class _Connection:
    """A long-lived connection's state; ``waiting``: its requests not answered yet, oldest
    first, as (seq, deadline); ``out``: requests not written yet; ``answer``: a partial line."""

    sock: socket.socket | None = None
    established: bool = False
    was_lost: bool = False  # a reset happened: opening again is a reconnect
    events: int = 0  # what the selector waits for
    waiting: deque[tuple[int, int]] = field(default_factory=deque)
    out: bytes = b""
    answer: bytes = b""


def _line(op: str, seq: int) -> bytes:
    """A tcp request: a line, answered by a line."""
    return b"%s %d\n" % (op.encode(), seq)


def _connect(source: SocketSource, where: Target) -> socket.socket:
    """A non-blocking stream socket connecting to ``where``; OSError if that failed at once."""
    sock = source.new(socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((where.host, where.port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, os.strerror(code))
    return sock


def _reason(exc: OSError) -> str:
    names = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ETIMEDOUT: "timeout"}
    return names.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def _open(
    stack: contextlib.ExitStack, sel: selectors.BaseSelector, source: SocketSource, host: str
) -> socket.socket:
    sock = stack.enter_context(source.new(socket.SOCK_DGRAM))
    sock.setblocking(False)
    sock.bind(("127.0.0.1" if host.startswith("127.") else "", 0))
    sel.register(sock, selectors.EVENT_READ, data=sock)  # key.data: the socket, as a socket
    return sock
