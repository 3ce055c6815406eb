"""Health-check kinds against real sockets: what each accepts, what each refuses, and why a
tcp check cannot see a hang while a protocol check does."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import dns.message
import dns.rcode
import dns.rrset
import pytest
import yaml
from pydantic import ValidationError

from nfvha import config as cfg
from nfvha.config import HealthCheck
from nfvha.drivers.health import network_probe


def base_deployment() -> dict:
    return {
        "name": "d",
        "vnfs": [
            {
                "name": "web",
                "redundancy": {"model": "none"},
                "state": "none",
                "sdk": False,
                "service": {"name": "http", "protocol": "tcp", "address": "127.0.0.1:8080"},
                "vnfcs": [{"name": "web-1", "command": "true"}],
                "policies": {"health_check": {"kind": "http"}},
            }
        ],
    }


def check(**fields: object) -> HealthCheck:
    return HealthCheck.model_validate({"interval_ms": 500, **fields})


def hostport(sockname: tuple[str, int]) -> str:
    return f"{sockname[0]}:{sockname[1]}"


def run_probe(spec: HealthCheck, address: str) -> str | None:
    async def once() -> str | None:
        try:
            return await asyncio.wait_for(network_probe(spec, address)(), spec.timeout_s)
        except TimeoutError:
            return "timeout"

    return asyncio.run(once())


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "udp", "interval_ms": 100, "timeout_ms": 200}, "timeout_ms 200 exceeds"),
        ({"kind": "tcp", "path": "/x"}, "path: not used by a tcp health check"),
        ({"kind": "udp", "send": "x", "send_hex": "00"}, "give 'send' or 'send_hex'"),
        ({"kind": "udp", "expect_hex": "0g"}, "expected hex digits"),
        ({"kind": "dns"}, "needs 'query'"),
        ({"kind": "dns", "query": "a.test", "query_type": "NOPE"}, "not a DNS record type"),
        ({"kind": "dns", "query": "a.test", "expect_rcode": "NOPE"}, "not a DNS rcode"),
        ({"kind": "http", "path": "no-slash"}, "should match pattern"),
        ({"kind": "http", "expect_status": 999}, "less than or equal to 599"),
    ],
)
def test_invalid_health_checks_say_why(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check(**fields)
    assert message in str(info.value)


def test_config_error_names_file_and_path(tmp_path) -> None:
    raw = base_deployment()
    raw["vnfs"][0]["policies"]["health_check"] = {
        "kind": "http",
        "interval_ms": 50,
        "timeout_ms": 80,
    }
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert f"{path}: vnfs[0].policies.health_check: timeout_ms 80 exceeds" in str(info.value)


def test_tcp_check_is_warned_about_others_are_not() -> None:
    raw = base_deployment()
    assert cfg.warnings(cfg.Deployment.model_validate(raw)) == []
    raw["vnfs"][0]["policies"]["health_check"] = {"kind": "tcp"}
    warned = cfg.warnings(cfg.Deployment.model_validate(raw))
    assert len(warned) == 1
    assert warned[0].startswith("vnfs[0].policies.health_check.kind: tcp only connects")


def test_dumped_check_validates_again() -> None:
    """A dump sets every field; only fields that differ from the defaults count as given."""
    spec = check(kind="dns", query="a.test", expect_answer="10.0.0.1")
    assert HealthCheck.model_validate(spec.model_dump()) == spec


# --- probes against real servers ---------------------------------------------------------------


@contextlib.contextmanager
def silent_listener() -> socket.socket:
    """A listening socket nobody accepts from: the kernel still completes connections to it,
    as it does for a SIGSTOPped daemon."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def test_tcp_passes_a_hung_listener_http_does_not() -> None:
    with silent_listener() as sock:
        address = hostport(sock.getsockname())
        assert run_probe(check(kind="tcp"), address) is None
        assert run_probe(check(kind="http", timeout_ms=200), address) == "timeout"


async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    status = b"200 OK" if request.startswith(b"GET /ok ") else b"503 Unavailable"
    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 7\r\n\r\nall ok\n")
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve_http, "127.0.0.1", 0)
    async with server:
        yield hostport(server.sockets[0].getsockname())


def test_http_status_and_body() -> None:
    async def scenario() -> list[str | None]:
        async with http_server() as address:
            specs = [
                check(kind="http", path="/ok", expect_body="all ok"),
                check(kind="http", path="/down"),
                check(kind="http", path="/ok", expect_body="elsewhere"),
            ]
            return [await network_probe(s, address)() for s in specs]

    ok, down, body = asyncio.run(scenario())
    assert ok is None
    assert down == "status 503, expected 200"
    assert body == "body without 'elsewhere'"


class _Dns(asyncio.DatagramProtocol):
    """Answers A queries for ok.test with 10.0.0.1, anything else NXDOMAIN."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        if query.question[0].name.to_text() == "ok.test.":
            answer.answer.append(dns.rrset.from_text("ok.test.", 60, "IN", "A", "10.0.0.1"))
        else:
            answer.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(answer.to_wire(), addr)  # type: ignore[attr-defined]


def test_dns_answer_and_rcode() -> None:
    async def scenario() -> list[str | None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Dns, local_addr=("127.0.0.1", 0))
        try:
            address = hostport(transport.get_extra_info("sockname"))
            specs = [
                check(kind="dns", query="ok.test", expect_answer="10.0.0.1"),
                check(kind="dns", query="ok.test", expect_answer="10.9.9.9"),
                check(kind="dns", query="missing.test"),
                check(kind="dns", query="missing.test", expect_rcode="NXDOMAIN"),
            ]
            return [await network_probe(s, address)() for s in specs]
        finally:
            transport.close()

    ok, wrong, missing, nx = asyncio.run(scenario())
    assert ok is None and nx is None
    assert wrong is not None and wrong.startswith("answer without '10.9.9.9'")
    assert missing == "rcode NXDOMAIN, expected NOERROR"


def test_udp_binary_payload() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        address = hostport(server.getsockname())

        async def exchange(spec: HealthCheck) -> str | None:
            loop = asyncio.get_running_loop()
            probe = asyncio.ensure_future(network_probe(spec, address)())
            data, peer = await loop.run_in_executor(None, server.recvfrom, 64)
            server.sendto(b"\x00\xffecho:" + data, peer)
            return await probe

        good = check(kind="udp", send_hex="de ad", expect_hex="00ff")
        bad = check(kind="udp", send_hex="dead", expect_hex="0000")
        assert asyncio.run(exchange(good)) is None
        assert asyncio.run(exchange(bad)) == "unexpected answer b'\\x00\\xffecho:\\xde\\xad'"


def test_exec_is_ended_at_its_timeout(tmp_path) -> None:
    marker = tmp_path / "done"
    spec = check(kind="exec", command=["sh", "-c", f"sleep 5; touch {marker}"], timeout_ms=100)
    assert run_probe(spec, "127.0.0.1:1") == "timeout"
    assert not marker.exists()
    assert run_probe(check(kind="exec", command="true"), "127.0.0.1:1") is None
    assert run_probe(check(kind="exec", command="false"), "127.0.0.1:1") == "exit code 1"
