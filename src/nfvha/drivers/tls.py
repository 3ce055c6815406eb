"""Mutual TLS between the pieces of nfvha on separate hosts (issue 10): a cluster CA, one
certificate per member (a manager or a host agent), and TLS contexts that admit only peers
holding one: the NFVI's guests and external host agents dial their manager with them.

Contracts:
- A cluster directory holds ``ca.crt``, ``ca.key`` and ``<member>.crt``, ``<member>.key``.
  Keys are ECDSA P-256, written 0600 (created so, never readable by others even for an
  instant) and replaced atomically; certificates are PEM, 0644.
- ``create_ca(dir)`` makes a self-signed CA (basicConstraints CA:true, pathlen 0, keyCertSign
  and cRLSign only). It raises ``CaExists`` when the directory already has ``ca.crt`` or
  ``ca.key``, unless ``force``: a new CA silently orphans every member certificate.
- ``issue_member(dir, name, ips)`` signs a member certificate with the directory's CA: the
  name is the subject's CN and a DNS SAN, each IP an IP SAN; CA:false, digitalSignature,
  EKUs serverAuth and clientAuth (every member both serves and dials). ``CertExists`` if the
  member has one, unless ``force``. The validity is ``days`` from ``not_before`` (now by
  default; a past one issues an expired certificate, for tests). Names are DNS names
  (lowercase letters, digits, '-', dots between labels; not ``ca``): ``TlsSetupError``
  otherwise, and for a missing or unreadable CA.
- ``ca.crl`` is the CA's revocation list, written (empty) with the CA; ``revoke_member(dir,
  name)`` adds the member's certificate to it (its serial: a reissued certificate is a new
  one). It is valid as long as the CA, so it never expires under a running cluster.
- ``server_context``/``client_context(dir, name)`` present the member's certificate, trust the
  cluster CA alone (not the system's store), require TLS 1.3 and the peer's certificate
  (CERT_REQUIRED on both sides), and refuse a peer whose certificate is on ``ca.crl`` (a
  directory without one, made before revocation existed, checks none). A client checks the
  server's name: it connects with ``server_hostname`` = the member it means to reach
  (``open_connection`` does). ``ServerContexts`` makes a listener's context again whenever
  ``ca.crl`` changes, so a revocation holds from the next handshake on.
- ``peer_member(writer)`` is the authenticated peer's member name, read from its verified
  certificate's CN, never from anything the peer says. ``PeerUnauthenticated`` without one.
- ``start_server(handler, host, port, context)`` accepts plain TCP and does the handshake
  itself, so a refused peer is seen: one ``on_refused(Refusal)`` call per refused connection
  (default: one logfmt line on stderr, ``nfvha event=peer-refused peer=ADDR reason=...``)
  naming the peer's address and why (no certificate, unknown CA, expired, timeout, ...);
  ``handler`` runs only for authenticated peers (the connection is closed when it returns),
  and the server keeps serving the others. In TLS 1.3 a refused client learns of it on its
  first read (end of stream): its side of the handshake is done before the server checks its
  certificate. A client refuses a server whose certificate is not the cluster CA's or does
  not name the member it dialled at ``open_connection`` (``ssl.SSLCertVerificationError``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
CRL_NAME = "ca.crl"  # the CA's revocation list
CA_DAYS = 3650
MEMBER_DAYS = 365
HANDSHAKE_TIMEOUT_S = 5.0  # a peer that connects and says nothing holds a task that long
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_MEMBER_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")  # fullmatch: no trailing newline

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# OpenSSL's X509_V_ERR codes a refused member meets, in the operator's words.
_NOT_OURS = "not signed by the cluster CA"
_VERIFY_REASONS = {
    2: _NOT_OURS,  # unable to get issuer certificate
    3: "no revocation list of the cluster CA",
    7: _NOT_OURS,  # certificate signature failure
    9: "certificate not yet valid",
    10: "certificate expired",
    12: "the cluster CA's revocation list has expired",
    18: _NOT_OURS,  # self-signed certificate
    19: _NOT_OURS,  # self-signed certificate in certificate chain
    20: _NOT_OURS,  # unable to get local issuer certificate
    23: "certificate revoked",
    62: "certificate names another member",  # hostname mismatch
}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TlsSetupError(Exception):
    """A cluster directory, name or address that cannot be used; the message says why."""


class CaExists(TlsSetupError):
    pass


class CertExists(TlsSetupError):
    pass


class PeerUnauthenticated(Exception):
    """A connection without a verified peer certificate."""


@dataclass(frozen=True)
class CertInfo:
    """What an operator checks of a certificate in a cluster directory."""

    name: str  # the CN: the member's name, or the CA's
    path: Path
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str  # SHA-256 of the DER, hex pairs joined by ':'
    dns: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    signed_by_ca: bool = True  # by this directory's CA (the CA: self-signed)
    serial: int = 0
    revoked: bool = False  # on the CA's revocation list

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or _now()) >= self.not_after


@dataclass(frozen=True)
class Refusal:
    peer: str  # host:port
    reason: str


def check_member_name(name: str) -> str:
    if name == CA_NAME or len(name) > 253 or not _MEMBER_RE.fullmatch(name):
        raise TlsSetupError(
            f"member name {name!r}: a DNS name is expected (lowercase letters, digits, '-', "
            f"dots between labels; not {CA_NAME!r})"
        )
    return name


def parse_ips(values: Iterable[str]) -> list[IpAddress]:
    ips = []
    for value in values:
        try:
            ips.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise TlsSetupError(f"{value.strip()!r} is not an IP address") from None
    return ips


def cert_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.crt"


def key_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.key"


# --- issuing -------------------------------------------------------------------------------


def create_ca(
    directory: Path,
    *,
    common_name: str = "nfvha cluster CA",
    days: int = CA_DAYS,
    force: bool = False,
) -> Path:
    """Write ca.crt and ca.key; return the certificate's path."""
    paths = [cert_path(directory, CA_NAME), key_path(directory, CA_NAME)]
    if not force and (found := [p for p in paths if p.exists()]):
        raise CaExists(
            f"{found[0]} exists: a cluster CA is there already (a new one would invalidate "
            "every member certificate it signed; --force replaces it)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - dt.timedelta(minutes=5)  # tolerate clocks a little behind ours
    usage = _key_usage(cert_sign=True)
    cert = (
        _builder(subject, subject, key.public_key(), start, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_key(paths[1], key)
    _write_cert(paths[0], cert)
    crl_path(directory).unlink(missing_ok=True)  # an old CA's list is not this one's
    write_crl(directory, {})
    return paths[0]


def issue_member(
    directory: Path,
    name: str,
    ips: Iterable[IpAddress] = (),
    *,
    days: int = MEMBER_DAYS,
    not_before: dt.datetime | None = None,
    force: bool = False,
) -> Path:
    """Sign a certificate for member ``name`` with the directory's CA; return its path."""
    check_member_name(name)
    ca_cert, ca_key = load_ca(directory)
    target = cert_path(directory, name)
    if not force and (target.exists() or key_path(directory, name).exists()):
        raise CertExists(f"{target} exists: member {name!r} has a certificate (--force reissues)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - dt.timedelta(minutes=5)
    sans: list[x509.GeneralName] = [x509.DNSName(name), *(x509.IPAddress(ip) for ip in ips)]
    ekus = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), start, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path(directory, name), key)
    _write_cert(target, cert)
    return target


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = cert_path(directory, CA_NAME), key_path(directory, CA_NAME)
    if not crt.exists() or not key.exists():
        raise TlsSetupError(f"{directory}: no cluster CA there (nfvha cluster init creates it)")
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsSetupError(f"{directory}: cluster CA unreadable: {exc}") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TlsSetupError(f"{key}: not an ECDSA key")
    return cert, private


def members(directory: Path) -> list[CertInfo]:
    """The CA first, then every member certificate of the directory, by name."""
    ca = _read_cert(cert_path(directory, CA_NAME))
    listed = revoked(directory)
    found = [_info(cert_path(directory, CA_NAME), ca, ca, listed)]
    for path in sorted(directory.glob("*.crt")):
        if path.stem != CA_NAME:
            found.append(_info(path, _read_cert(path), ca, listed))
    return found


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, start: dt.datetime, days: int
) -> x509.CertificateBuilder:
    if days <= 0:
        raise TlsSetupError(f"validity of {days} days: a positive number is expected")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode (no window where a key is world-readable), then renamed over
    # the old file so a reader never sees half of it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have narrowed it
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise TlsSetupError(
            f"{path}: missing (nfvha cluster init creates the cluster CA)"
        ) from None
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"{path}: not a PEM certificate: {exc}") from None


def _info(
    path: Path, cert: x509.Certificate, ca: x509.Certificate, listed: dict[int, dt.datetime]
) -> CertInfo:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = sans.get_values_for_type(x509.DNSName), sans.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return CertInfo(
        name=str(cns[0].value) if cns else path.stem,
        path=path,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        dns=list(dns),
        ips=[str(ip) for ip in ips],
        signed_by_ca=(signed := _signed_by(cert, ca)),
        serial=cert.serial_number,
        revoked=signed and cert.serial_number in listed,
    )


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- revocation ----------------------------------------------------------------------------


def crl_path(directory: Path) -> Path:
    return directory / CRL_NAME


def write_crl(directory: Path, revoked: dict[int, dt.datetime]) -> Path:
    """Sign and write the CA's revocation list (serial -> when revoked), valid as long as the
    CA: a list that expired would stop every handshake."""
    ca_cert, ca_key = load_ca(directory)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(_now())
        .next_update(ca_cert.not_valid_after_utc)
        .add_extension(x509.CRLNumber(_next_crl_number(directory)), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    for serial, when in sorted(revoked.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    path = crl_path(directory)
    _write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    return path


def revoked(directory: Path) -> dict[int, dt.datetime]:
    """The serials the CA's revocation list holds, and when each was revoked (none without
    a list: a directory made before revocation existed)."""
    crl = _read_crl(directory)
    if crl is None:
        return {}
    return {r.serial_number: r.revocation_date_utc for r in crl}


def revoke_member(directory: Path, name: str) -> bool:
    """Add member ``name``'s certificate to the revocation list; False if it was already."""
    check_member_name(name)
    ca_cert, _ = load_ca(directory)
    if not cert_path(directory, name).exists():
        raise TlsSetupError(f"member {name!r} has no certificate in {directory}")
    cert = _read_cert(cert_path(directory, name))
    if not _signed_by(cert, ca_cert):
        raise TlsSetupError(f"{cert_path(directory, name)}: not signed by this CA")
    listed = revoked(directory)
    if cert.serial_number in listed:
        return False
    write_crl(directory, {**listed, cert.serial_number: _now()})
    return True


def _read_crl(directory: Path) -> x509.CertificateRevocationList | None:
    path = crl_path(directory)
    try:
        return x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"{path}: not a PEM revocation list: {exc}") from None


def _next_crl_number(directory: Path) -> int:
    crl = _read_crl(directory)
    if crl is None:
        return 1
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    except x509.ExtensionNotFound:
        return 1


# --- contexts and connections ----------------------------------------------------------------


def server_context(directory: Path, name: str) -> ssl.SSLContext:
    """What member ``name`` listens with: its certificate; clients must present one too."""
    return _context(ssl.Purpose.CLIENT_AUTH, directory, name)


def client_context(directory: Path, name: str) -> ssl.SSLContext:
    """What member ``name`` dials with: its certificate; the server's name is checked."""
    context = _context(ssl.Purpose.SERVER_AUTH, directory, name)
    context.check_hostname = True
    return context


def _context(purpose: ssl.Purpose, directory: Path, name: str) -> ssl.SSLContext:
    check_member_name(name)
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context = ssl.SSLContext(side)  # not create_default_context: no system CAs trusted
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    crt, key, ca = (
        cert_path(directory, name),
        key_path(directory, name),
        cert_path(directory, CA_NAME),
    )
    crl = crl_path(directory)
    try:
        context.load_verify_locations(cafile=str(ca))
        if crl.exists():  # a directory made before revocation existed has none
            context.load_verify_locations(cafile=str(crl))
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.load_cert_chain(str(crt), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"{directory}: member {name!r} or the CA unusable: {exc}") from None
    return context


class ServerContexts:
    """A listener's context, made again when the revocation list changes: a member revoked
    while the listener runs is refused from its next handshake on."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self._made: tuple[tuple[int, int, int] | None, ssl.SSLContext] | None = None

    def __call__(self) -> ssl.SSLContext:
        stamp = _stamp(crl_path(self.directory))
        if self._made is None or self._made[0] != stamp:
            self._made = (stamp, server_context(self.directory, self.name))
        return self._made[1]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size  # written by rename: a new inode each time


def peer_member(writer: asyncio.StreamWriter) -> str:
    """The authenticated peer's member name: the CN of the certificate the handshake
    verified against the cluster CA."""
    ssl_object = writer.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        raise PeerUnauthenticated("no verified peer certificate on this connection")
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise PeerUnauthenticated("the peer's certificate has no common name")


async def open_connection(
    host: str, port: int, context: ssl.SSLContext, member: str, netns: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial member ``member`` at host:port (from network namespace ``netns`` if given: the
    socket is made there); its certificate must name it."""
    if netns is None:
        return await asyncio.open_connection(
            host,
            port,
            ssl=context,
            server_hostname=member,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
    from nfvha.drivers import network

    sock = network.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(
        sock=sock, ssl=context, server_hostname=member, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
    )


async def start_server(
    handler: Handler,
    host: str | None,
    port: int | None,
    context: ssl.SSLContext | Callable[[], ssl.SSLContext],
    *,
    on_refused: Callable[[Refusal], None] | None = None,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """A server whose ``handler`` sees authenticated peers only; refusals are reported.
    ``context``: one, or what makes the current one for each handshake (``ServerContexts``).
    ``sock``: a listening socket made by the caller (in another network namespace), instead
    of host and port."""
    report = on_refused or log_refusal

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _address(writer.get_extra_info("peername"))
        try:
            current = context if isinstance(context, ssl.SSLContext) else context()
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):  # ours: a TimeoutError we can name
                await writer.start_tls(current, ssl_handshake_timeout=2 * HANDSHAKE_TIMEOUT_S)
        except TlsSetupError as exc:  # the cluster files broke meanwhile: nobody is admitted
            report(Refusal(peer, f"cluster files unusable: {exc}"))
            writer.transport.abort()
            return
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            report(Refusal(peer, refusal_reason(exc)))
            writer.transport.abort()
            return
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    return await asyncio.start_server(accept, host, port, sock=sock)


def refusal_reason(exc: BaseException) -> str:
    """Why a handshake failed: ours first, OpenSSL's words in brackets."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = _VERIFY_REASONS.get(exc.verify_code, "certificate refused")
        return f"{why} ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        if reason == "peer did not return a certificate":
            return "no certificate presented"
        return f"handshake failed ({reason})"
    if isinstance(exc, TimeoutError):
        return f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s"
    return (
        "the peer closed the connection during the handshake (it may refuse our certificate; "
        f"{exc.__class__.__name__})"
    )


def log_refusal(refusal: Refusal) -> None:
    """One logfmt line on stderr per refused peer (journald, grep event=peer-refused)."""
    reason = json.dumps(refusal.reason)
    print(f"nfvha event=peer-refused peer={refusal.peer} reason={reason}", file=sys.stderr)


def _address(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)
