"""The cluster CA and member certificates (drivers/tls.py): what is in them, how their files
are written, what is refused, and the TLS contexts built from them. The handshakes themselves
are tested on real sockets in tests/integration/test_tls.py."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nfvha.drivers import tls


def read(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    tls.create_ca(tmp_path)
    return tmp_path


def test_the_ca_is_a_p256_ca_that_signs_certificates_only(cluster: Path) -> None:
    ca = read(cluster / "ca.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)  # self-signed


def test_a_member_certificate_names_the_member_and_serves_and_dials(cluster: Path) -> None:
    ips = tls.parse_ips(["10.0.0.1", "fd00::1"])
    cert = read(tls.issue_member(cluster, "host-a", ips, days=30))
    cert.verify_directly_issued_by(read(cluster / "ca.crt"))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cn == "host-a"
    assert sans.get_values_for_type(x509.DNSName) == ["host-a"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_keys_are_0600_from_the_start_and_certificates_0644(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask does not widen a key
    try:
        tls.create_ca(tmp_path)
        tls.issue_member(tmp_path, "mgr-1")
    finally:
        os.umask(old)
    assert [mode(tmp_path / f) for f in ("ca.key", "mgr-1.key")] == [0o600, 0o600]
    assert [mode(tmp_path / f) for f in ("ca.crt", "mgr-1.crt")] == [0o644, 0o644]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crl",
        "ca.crt",
        "ca.key",
        "mgr-1.crt",
        "mgr-1.key",
    ]  # no temporary file left


def test_an_existing_ca_is_kept_unless_forced(cluster: Path) -> None:
    before = (cluster / "ca.crt").read_bytes()
    with pytest.raises(tls.CaExists, match="ca.crt exists"):
        tls.create_ca(cluster)
    assert (cluster / "ca.crt").read_bytes() == before
    tls.create_ca(cluster, force=True)
    assert (cluster / "ca.crt").read_bytes() != before


def test_a_lone_ca_key_is_an_existing_ca(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_text("a key someone kept\n")
    with pytest.raises(tls.CaExists, match="ca.key exists"):
        tls.create_ca(tmp_path)


def test_an_existing_member_is_kept_unless_forced(cluster: Path) -> None:
    first = read(tls.issue_member(cluster, "host-a"))
    with pytest.raises(tls.CertExists, match="member 'host-a' has a certificate"):
        tls.issue_member(cluster, "host-a")
    again = read(tls.issue_member(cluster, "host-a", force=True))
    assert again.serial_number != first.serial_number


@pytest.mark.parametrize(
    "name", ["", "ca", "Host-A", "host_a", "-a", "a-", "a..b", "a b", "host-a\n"]
)
def test_a_member_name_that_is_no_dns_name_is_refused(cluster: Path, name: str) -> None:
    with pytest.raises(tls.TlsSetupError, match="a DNS name is expected"):
        tls.issue_member(cluster, name)
    assert sorted(p.name for p in cluster.iterdir()) == ["ca.crl", "ca.crt", "ca.key"]


def test_bad_addresses_and_validity_are_refused(cluster: Path) -> None:
    with pytest.raises(tls.TlsSetupError, match="'10.0.0' is not an IP address"):
        tls.parse_ips(["10.0.0"])
    with pytest.raises(tls.TlsSetupError, match="validity of 0 days"):
        tls.issue_member(cluster, "host-a", days=0)


def test_a_member_needs_the_ca(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsSetupError, match="no cluster CA there"):
        tls.issue_member(tmp_path, "host-a")


def test_an_expired_member_certificate_can_be_issued(cluster: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    tls.issue_member(cluster, "host-old", not_before=past, days=1)
    old = next(m for m in tls.members(cluster) if m.name == "host-old")
    assert old.expired() and old.signed_by_ca


def test_members_lists_the_ca_first_and_those_of_a_replaced_ca(cluster: Path) -> None:
    tls.issue_member(cluster, "mgr-1")
    tls.issue_member(cluster, "host-a", tls.parse_ips(["127.0.0.1"]))
    tls.create_ca(cluster, force=True)
    tls.issue_member(cluster, "host-b")
    found = tls.members(cluster)
    assert [m.name for m in found] == ["nfvha cluster CA", "host-a", "host-b", "mgr-1"]
    assert [m.signed_by_ca for m in found] == [True, False, True, False]
    assert found[1].dns == ["host-a"] and found[1].ips == ["127.0.0.1"]
    assert (
        found[2].fingerprint
        == read(cluster / "host-b.crt").fingerprint(hashes.SHA256()).hex(":").upper()
    )


def test_contexts_require_tls13_and_a_certificate_of_the_cluster_ca_alone(cluster: Path) -> None:
    tls.issue_member(cluster, "mgr-1")
    server, client = tls.server_context(cluster, "mgr-1"), tls.client_context(cluster, "mgr-1")
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        subjects = [c["subject"] for c in context.get_ca_certs()]
        assert subjects == [((("commonName", "nfvha cluster CA"),),)]  # no system CA trusted
    assert client.check_hostname and not server.check_hostname


def test_a_context_for_a_member_without_a_certificate_is_refused(cluster: Path) -> None:
    with pytest.raises(tls.TlsSetupError, match="member 'host-z' or the CA unusable"):
        tls.server_context(cluster, "host-z")


@pytest.mark.parametrize(
    "exc, reason",
    [
        (TimeoutError(), f"no handshake within {tls.HANDSHAKE_TIMEOUT_S:g} s"),
        (ConnectionResetError(), "the peer closed the connection during the handshake"),
    ],
)
def test_refusal_reasons_without_openssl_words(exc: BaseException, reason: str) -> None:
    assert tls.refusal_reason(exc).startswith(reason)


def test_the_cli_prints_hex_pairs_as_they_are(capsys) -> None:
    # A SHA-256 fingerprint holds pairs such as AB and CD: rich would print them as emoji.
    from nfvha.cli.output import console

    console.print("  SHA-256 27:AB:CD:FC", highlight=False, soft_wrap=True)
    assert "27:AB:CD:FC" in capsys.readouterr().out


def test_the_ca_comes_with_an_empty_revocation_list_valid_as_long_as_it(cluster: Path) -> None:
    crl = x509.load_pem_x509_crl(tls.crl_path(cluster).read_bytes())
    ca = read(cluster / "ca.crt")
    assert len(crl) == 0 and crl.is_signature_valid(ca.public_key())
    assert crl.next_update_utc == ca.not_valid_after_utc
    assert mode(tls.crl_path(cluster)) == 0o644


def test_a_revocation_is_listed_once_and_marks_the_member(cluster: Path) -> None:
    tls.issue_member(cluster, "host-a")
    tls.issue_member(cluster, "host-b")
    assert tls.revoke_member(cluster, "host-a") is True
    assert tls.revoke_member(cluster, "host-a") is False
    serial = read(cluster / "host-a.crt").serial_number
    assert set(tls.revoked(cluster)) == {serial}
    found = {info.name: info.revoked for info in tls.members(cluster)}
    assert found == {"nfvha cluster CA": False, "host-a": True, "host-b": False}
    crl = x509.load_pem_x509_crl(tls.crl_path(cluster).read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_revoking_needs_a_member_certificate_of_this_ca(cluster: Path, tmp_path: Path) -> None:
    with pytest.raises(tls.TlsSetupError, match="has no certificate"):
        tls.revoke_member(cluster, "host-z")
    other = tmp_path / "other"
    tls.create_ca(other)
    tls.issue_member(other, "host-x")
    (cluster / "host-x.crt").write_bytes((other / "host-x.crt").read_bytes())
    with pytest.raises(tls.TlsSetupError, match="not signed by this CA"):
        tls.revoke_member(cluster, "host-x")


def test_a_new_ca_starts_a_new_revocation_list(cluster: Path) -> None:
    tls.issue_member(cluster, "host-a")
    tls.revoke_member(cluster, "host-a")
    tls.create_ca(cluster, force=True)
    assert tls.revoked(cluster) == {}
    crl = x509.load_pem_x509_crl(tls.crl_path(cluster).read_bytes())
    assert crl.is_signature_valid(read(cluster / "ca.crt").public_key())
