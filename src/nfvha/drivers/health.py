"""Health checks: periodic probes of a VNFC, reported as pass/fail.

Kinds: ``sdk`` (a ping answered by the component's SDK), ``udp`` (send a datagram, expect an
answer starting with a prefix), ``http`` (a request answered with the expected status, and
body), ``dns`` (a query answered with the expected rcode, and answer), ``exec`` (a command exits
0 within its timeout), ``tcp`` (a connection is accepted). ``tcp`` cannot see a hang: the
kernel completes the handshake on the listening socket of a stopped process, so only the
protocol checks (and sdk) tell a hung daemon from a healthy one.

Timing is a heartbeat's, as keepalived's master-down timer: a miss is counted at every whole
interval without a good answer since the last one. Probes go out twice per interval, whatever
the previous one is doing, so that an answer a little later than the last one does not make a
miss: a miss means a whole interval of silence. With threshold k the manager hears the k-th
miss k x interval after the last good answer, so a hang is found within k x interval of
itself, not k x interval after the next probe. Every miss is reported; a pass is reported when it is
the first result or follows a miss, so the manager sees every change without a record per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nfvha.config import HealthCheck, parse_address
from nfvha.drivers.network import socket_in

Probe = Callable[[], Awaitable[str | None]]  # None when healthy, else the reason


class HealthMonitor:
    def __init__(
        self, spec: HealthCheck, probe: Probe, report: Callable[[bool, str], None]
    ) -> None:
        self.spec, self._probe, self._report = spec, probe, report
        self._task: asyncio.Task | None = None
        self._probes: set[asyncio.Task] = set()
        self._last_good = 0.0
        self._absent = 0.0  # since the last good answer: how long this manager was not running
        self._misses = 0
        self._reported_ok: bool | None = None
        self._last_reason = "no answer"
        self._answered = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for probe in self._probes:
            probe.cancel()

    async def _loop(self) -> None:
        interval = self.spec.interval_ms / 1000
        period = interval / 2
        self._last_good = next_probe = wake = time.monotonic()
        while True:
            now = time.monotonic()
            # Time this manager itself was not running (a starved machine) is not the VNFC's
            # silence: corosync's pause detection. Its probes could not be sent nor answers
            # read meanwhile; the deadline moves by that much.
            if (late := now - wake) > period:
                self._absent += late
            if now >= next_probe:
                self._launch()
                next_probe += period
                if now - next_probe > period:  # we were descheduled: do not burst
                    next_probe = now + period
            deadline = self._last_good + self._absent + (self._misses + 1) * interval
            if now >= deadline:
                self._misses += 1
                self._reported_ok = False
                waited = (now - self._last_good) * 1000
                self._report(False, f"no good answer for {waited:.0f} ms ({self._last_reason})")
                wake = now
                continue
            self._answered.clear()
            wake = min(next_probe, deadline)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), wake - now)
            wake = min(wake, time.monotonic())  # woken early by an answer: not late

    def _launch(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run_probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _run_probe(self) -> None:
        try:
            reason = await asyncio.wait_for(self._probe(), self.spec.timeout_s)
        except TimeoutError:
            reason = f"no answer within {self.spec.timeout_s * 1000:g} ms"
        if reason is not None:
            self._last_reason = reason
            return
        self._last_good, self._misses, self._last_reason = time.monotonic(), 0, "no answer"
        self._absent = 0.0
        if self._reported_ok is not True:
            self._reported_ok = True
            self._report(True, "")
        self._answered.set()


def network_probe(spec: HealthCheck, service_address: str, netns: str | None = None) -> Probe:
    """``netns``: the checks' sockets live in that network namespace (the manager's port on a
    provider network), so they take the network path a consumer's packets take."""
    host, port = parse_address(spec.address or service_address)
    if spec.kind == "udp":
        return lambda: _udp(host, port, spec.payload, spec.answer_prefix, netns)
    if spec.kind == "tcp":
        return lambda: _tcp(host, port, netns)
    if spec.kind == "http":
        return lambda: _http(host, port, spec, netns)
    if spec.kind == "dns":
        return lambda: _dns(host, port, spec, netns)
    if spec.kind == "exec":
        assert spec.command
        return lambda: _exec(spec.command)
    raise ValueError(f"{spec.kind} is not a network probe")


def _socket(kind: int, netns: str | None) -> socket.socket:
    if netns is None:
        return socket.socket(socket.AF_INET, kind)
    return socket_in(netns, socket.AF_INET, kind)


async def _connect(host: str, port: int, netns: str | None) -> tuple[Any, Any]:
    if netns is None:
        return await asyncio.open_connection(host, port)
    sock = _socket(socket.SOCK_STREAM, netns)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _udp(
    host: str, port: int, payload: bytes, expect: bytes, netns: str | None = None
) -> str | None:
    loop = asyncio.get_running_loop()
    with _socket(socket.SOCK_DGRAM, netns) as sock:
        sock.setblocking(False)
        try:
            sock.connect((host, port))
            await loop.sock_sendall(sock, payload)
            answer = await loop.sock_recv(sock, 65536)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None if answer.startswith(expect) else f"unexpected answer {answer[:40]!r}"


async def _tcp(host: str, port: int, netns: str | None = None) -> str | None:
    try:
        _, writer = await _connect(host, port, netns)
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    return None


async def _http(host: str, port: int, spec: HealthCheck, netns: str | None = None) -> str | None:
    """One HTTP/1.1 request on a connection of its own (closed by the server after it)."""
    try:
        reader, writer = await _connect(host, port, netns)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        request = (
            f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: nfvha-health\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        # The rest (headers, then body) only when the body is checked: up to the server's close.
        rest = await _read_to_end(reader, 1 << 16) if spec.expect_body is not None else b""
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        writer.close()
    return _http_verdict(status_line, rest, spec)


async def _read_to_end(reader: asyncio.StreamReader, limit: int) -> bytes:
    data = b""
    while len(data) < limit and (chunk := await reader.read(limit - len(data))):
        data += chunk
    return data


def _http_verdict(status_line: bytes, answer: bytes, spec: HealthCheck) -> str | None:
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return f"not an HTTP answer: {status_line[:40]!r}"
    if int(parts[1]) != spec.expect_status:
        return f"status {int(parts[1])}, expected {spec.expect_status}"
    if spec.expect_body is not None and spec.expect_body.encode() not in answer:
        return f"body without {spec.expect_body!r}"
    return None


async def _dns(host: str, port: int, spec: HealthCheck, netns: str | None = None) -> str | None:
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    assert spec.query
    query = dns.message.make_query(spec.query, spec.query_type)
    try:
        # The monitor's wait_for bounds it; dnspython wants a timeout of its own as well.
        if netns is None:
            answer = await dns.asyncquery.udp(query, host, port=port, timeout=spec.timeout_s)
        else:  # a blocking query on a socket of the namespace, in a thread
            sock = _socket(socket.SOCK_DGRAM, netns)
            with sock:
                answer = await asyncio.to_thread(
                    dns.query.udp, query, host, port=port, timeout=spec.timeout_s, sock=sock
                )
    except (OSError, dns.exception.DNSException) as exc:
        return str(exc) or type(exc).__name__
    rcode = dns.rcode.to_text(answer.rcode())
    if rcode != spec.expect_rcode.upper():
        return f"rcode {rcode}, expected {spec.expect_rcode.upper()}"
    text = "\n".join(rrset.to_text() for rrset in answer.answer)
    if spec.expect_answer is not None and spec.expect_answer not in text:
        return f"answer without {spec.expect_answer!r}: {text[:80]!r}"
    return None


async def _exec(command: list[str]) -> str | None:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return None if code == 0 else f"exit code {code}"
