"""Mutual TLS between members on real loopback sockets (drivers/tls.py with asyncio streams):
members of one cluster CA talk and each knows the other's name from its certificate; a peer
with no certificate, one of another CA, a self-signed one, an expired one or TLS 1.2 is
refused at the handshake, the server logs one line naming it and why, and serves the next."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nfvha.drivers import tls

HOST = "127.0.0.1"
SERVER = "mgr-1"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """Our CA with members mgr-1, host-a and an expired host-old; in ``other/``, another CA
    that also has a 'host-a'; in ``self/``, a self-signed 'host-a'."""
    ours = tmp_path / "ours"
    tls.create_ca(ours)
    tls.issue_member(ours, SERVER, tls.parse_ips([HOST]))
    tls.issue_member(ours, "host-a")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    tls.issue_member(ours, "host-old", not_before=past, days=1)
    tls.create_ca(tmp_path / "other")
    tls.issue_member(tmp_path / "other", "host-a")
    self_signed(tmp_path / "self", "host-a")
    return ours


def self_signed(directory: Path, name: str) -> None:
    directory.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def presenting(cluster: Path, crt: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client that trusts our CA (so it does reach the server's check of its own
    certificate) but presents ``crt`` (or nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cluster / "ca.crt"))
    if crt is not None:
        context.load_cert_chain(str(crt), str(key))
    return context


@dataclass
class Served:
    """What the server saw, in order: ('served', member, claimed) and ('refused', Refusal)."""

    events: list[tuple] = field(default_factory=list)

    def refusals(self) -> list[tls.Refusal]:
        return [e[1] for e in self.events if e[0] == "refused"]

    async def refused(self, count: int = 1) -> list[tls.Refusal]:
        """The refusals once there are ``count``: a client may hear of its refusal (or refuse
        the server) before the server's handshake task has run."""
        async with asyncio.timeout(10):
            while len(self.refusals()) < count:
                await asyncio.sleep(0.01)
        return self.refusals()


@asynccontextmanager
async def server(cluster: Path, log_to_stderr: bool = False) -> AsyncIterator[tuple[int, Served]]:
    """mgr-1 answering each line 'I am X' with who the certificate says the peer is."""
    served = Served()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        claimed = (await reader.readline()).decode().strip().removeprefix("I am ")
        member = tls.peer_member(writer)
        served.events.append(("served", member, claimed))
        writer.write(f"hello {member}\n".encode())
        await writer.drain()

    def refused(refusal: tls.Refusal) -> None:
        served.events.append(("refused", refusal))
        if log_to_stderr:
            tls.log_refusal(refusal)

    contexts = tls.ServerContexts(cluster, SERVER)  # as the NFVI listens: revocations held
    srv = await tls.start_server(handler, HOST, 0, contexts, on_refused=refused)
    try:
        yield srv.sockets[0].getsockname()[1], served
    finally:
        srv.close()
        await srv.wait_closed()


async def talk(
    port: int, context: ssl.SSLContext, claim: str, member: str = SERVER
) -> tuple[str, str]:
    """Dial, say who we claim to be; the answer ('' when the server refused us: in TLS 1.3 a
    client hears of it on its first read) and our own address, as the server names it."""
    reader, writer = await tls.open_connection(HOST, port, context, member)
    local = address(writer)
    try:
        writer.write(f"I am {claim}\n".encode())
        await writer.drain()
        return (await reader.readline()).decode().strip(), local
    except (ssl.SSLError, ConnectionError):
        return "", local  # the server's alert, or its reset: refused either way
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


def address(writer: asyncio.StreamWriter) -> str:
    """Our end of a connection, as the server names its peer."""
    host, port = writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


def member_context(directory: Path, name: str) -> ssl.SSLContext:
    return tls.client_context(directory, name)


def test_two_members_talk_and_each_knows_the_other_by_its_certificate(cluster: Path) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            context = tls.client_context(cluster, "host-a")
            reader, writer = await tls.open_connection(HOST, port, context, SERVER)
            assert tls.peer_member(writer) == SERVER  # the server, as its certificate says
            writer.write(b"I am host-a\n")
            assert await reader.readline() == b"hello host-a\n"
            writer.close()
            await writer.wait_closed()
            assert served.events == [("served", "host-a", "host-a")]

    asyncio.run(scenario())


def test_the_peer_is_who_its_certificate_says_not_who_it_claims(cluster: Path) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            answer, _ = await talk(port, tls.client_context(cluster, "host-a"), claim=SERVER)
            assert answer == "hello host-a"
            assert served.events == [("served", "host-a", SERVER)]

    asyncio.run(scenario())


@pytest.mark.parametrize("impostor", ["other", "self"], ids=["another-ca", "self-signed"])
def test_a_certificate_not_of_the_cluster_ca_is_refused_logged_and_the_next_is_served(
    cluster: Path, impostor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = cluster.parent / impostor
    bad = presenting(cluster, where / "host-a.crt", where / "host-a.key")

    async def scenario() -> str:
        async with server(cluster, log_to_stderr=True) as (port, served):
            answer, local = await talk(port, bad, claim="host-a")
            assert answer == ""
            good, _ = await talk(port, tls.client_context(cluster, "host-a"), claim="host-a")
            assert good == "hello host-a"
            assert [e[0] for e in served.events] == ["refused", "served"]
            refusal = (await served.refused())[0]
            assert refusal.peer == local
            assert refusal.reason.startswith("not signed by the cluster CA (")
            return local

    local = asyncio.run(scenario())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f'nfvha event=peer-refused peer={local} reason="not signed by')


def test_a_client_without_a_certificate_is_refused(cluster: Path) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            answer, local = await talk(port, presenting(cluster, None, None), claim="host-a")
            assert answer == ""
            assert await served.refused() == [tls.Refusal(local, "no certificate presented")]

    asyncio.run(scenario())


def test_an_expired_member_certificate_is_refused(cluster: Path) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            answer, local = await talk(port, member_context(cluster, "host-old"), "host-old")
            assert answer == ""
            (refusal,) = await served.refused()
            assert refusal.peer == local and refusal.reason.startswith("certificate expired")
            assert [e[0] for e in served.events] == ["refused"]

    asyncio.run(scenario())


def test_tls_12_is_refused(cluster: Path) -> None:
    old = tls.client_context(cluster, "host-a")
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2

    async def scenario() -> None:
        async with server(cluster) as (port, served):
            with pytest.raises((ssl.SSLError, ConnectionError)):  # an alert, or a reset
                await talk(port, old, claim="host-a")
            (refusal,) = await served.refused()
            assert refusal.reason.startswith("handshake failed ("), refusal

    asyncio.run(scenario())


@pytest.mark.parametrize("dialled", ["host-a", "127.0.0.2"], ids=["another-name", "unnamed-ip"])
def test_a_client_refuses_a_server_that_is_not_the_member_it_dialled(
    cluster: Path, dialled: str
) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            context = tls.client_context(cluster, "host-a")
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                await talk(port, context, claim="host-a", member=dialled)
            await served.refused()
            good, _ = await talk(port, context, claim="host-a", member=HOST)  # its IP SAN
            assert good == "hello host-a"
            assert [e[0] for e in served.events] == ["refused", "served"]

    asyncio.run(scenario())


def test_a_client_refuses_a_server_of_another_ca(cluster: Path) -> None:
    other = cluster.parent / "other"
    tls.issue_member(other, SERVER)

    async def scenario() -> None:
        async with server(other) as (port, served):
            context = tls.client_context(cluster, "host-a")
            with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate"):
                await talk(port, context, claim="host-a")
            (refusal,) = await served.refused()  # the server sees our side give up
            assert refusal.reason.startswith("the peer closed the connection")

    asyncio.run(scenario())


def test_a_silent_peer_is_refused_after_the_handshake_timeout_and_others_are_served(
    cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        async with server(cluster) as (port, served):
            _, silent = await asyncio.open_connection(HOST, port)  # no TLS at all
            local = address(silent)
            good, _ = await talk(port, tls.client_context(cluster, "host-a"), claim="host-a")
            assert good == "hello host-a"
            assert await served.refused() == [tls.Refusal(local, "no handshake within 0.5 s")]
            assert [e[0] for e in served.events] == ["served", "refused"]
            silent.close()

    asyncio.run(scenario())


def test_a_connection_without_tls_has_no_peer_member() -> None:
    async def scenario() -> None:
        async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        srv = await asyncio.start_server(nothing, HOST, 0)
        _, writer = await asyncio.open_connection(HOST, srv.sockets[0].getsockname()[1])
        with pytest.raises(tls.PeerUnauthenticated):
            tls.peer_member(writer)
        writer.close()
        srv.close()
        await srv.wait_closed()

    asyncio.run(scenario())


# --- revocation (ca.crl) ------------------------------------------------------------------------


def test_a_revoked_member_is_refused_logged_and_the_others_are_served(cluster: Path) -> None:
    tls.issue_member(cluster, "host-b")
    assert tls.revoke_member(cluster, "host-a")

    async def scenario() -> None:
        async with server(cluster) as (port, served):
            answer, local = await talk(port, tls.client_context(cluster, "host-a"), "host-a")
            assert answer == ""
            good, _ = await talk(port, tls.client_context(cluster, "host-b"), "host-b")
            assert good == "hello host-b"
            refusal = (await served.refused())[0]
            assert refusal.peer == local
            assert refusal.reason.startswith("certificate revoked (")

    asyncio.run(scenario())


def test_a_member_revoked_while_the_server_listens_is_refused_from_its_next_handshake(
    cluster: Path,
) -> None:
    async def scenario() -> None:
        async with server(cluster) as (port, served):
            context = tls.client_context(cluster, "host-a")
            assert (await talk(port, context, "host-a"))[0] == "hello host-a"
            tls.revoke_member(cluster, "host-a")
            assert (await talk(port, tls.client_context(cluster, "host-a"), "host-a"))[0] == ""
            assert (await served.refused())[0].reason.startswith("certificate revoked")
            assert [e[0] for e in served.events] == ["served", "refused"]

    asyncio.run(scenario())


def test_a_client_refuses_a_revoked_server(cluster: Path) -> None:
    tls.revoke_member(cluster, SERVER)

    async def scenario() -> None:
        async with server(cluster) as (port, _):
            with pytest.raises(ssl.SSLCertVerificationError) as refused:
                await talk(port, tls.client_context(cluster, "host-a"), "host-a")
            assert tls.refusal_reason(refused.value).startswith("certificate revoked (")

    asyncio.run(scenario())


def test_a_member_reissued_after_its_revocation_is_served(cluster: Path) -> None:
    tls.revoke_member(cluster, "host-a")
    tls.issue_member(cluster, "host-a", force=True)  # a new key and serial

    async def scenario() -> None:
        async with server(cluster) as (port, served):
            answer, _ = await talk(port, tls.client_context(cluster, "host-a"), "host-a")
            assert answer == "hello host-a" and not served.refusals()

    asyncio.run(scenario())


def test_a_directory_without_a_revocation_list_checks_none(cluster: Path) -> None:
    """Made before revocation existed: its members talk as before."""
    tls.crl_path(cluster).unlink()

    async def scenario() -> None:
        async with server(cluster) as (port, _):
            answer, _ = await talk(port, tls.client_context(cluster, "host-a"), "host-a")
            assert answer == "hello host-a"

    asyncio.run(scenario())
