"""`nfvha cluster init | add-member | show` as the operator runs them: the files they write,
what they refuse (exit 2, one line, no traceback, nothing written), and certificates that the
TLS contexts accept."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from pathlib import Path

import pytest

from nfvha.drivers import tls
from tests.integration.support.runs import cli


def refused(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0]


def show(directory: Path) -> list[dict]:
    done = cli("cluster", "show", str(directory), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def files(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(directory.iterdir())}


def test_init_writes_the_ca_and_each_member_and_show_lists_them(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    done = cli("cluster", "init", str(d), "--member", "mgr-1", "-m", "host-a=10.0.0.1,fd00::1")
    assert done.returncode == 0, done.stderr
    assert files(d) == {
        "ca.crl": 0o644,  # the CA's revocation list: empty
        "ca.crt": 0o644,
        "ca.key": 0o600,
        "host-a.crt": 0o644,
        "host-a.key": 0o600,
        "mgr-1.crt": 0o644,
        "mgr-1.key": 0o600,
    }
    rows = show(d)
    assert [(r["name"], r["ca"], r["state"]) for r in rows] == [
        ("nfvha cluster CA", True, "valid"),
        ("host-a", False, "valid"),
        ("mgr-1", False, "valid"),
    ]
    assert rows[1]["dns"] == ["host-a"] and rows[1]["ips"] == ["10.0.0.1", "fd00::1"]
    assert [r["fingerprint_sha256"] for r in rows] == [m.fingerprint for m in tls.members(d)]
    text = cli("cluster", "show", str(d)).stdout
    for row in rows:
        assert row["fingerprint_sha256"] in text and row["not_after"][:10] in text


def test_init_refuses_an_existing_ca_unless_forced(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    assert cli("cluster", "init", str(d), "-m", "host-a").returncode == 0
    before = (d / "ca.crt").read_bytes()
    refused(cli("cluster", "init", str(d), "-m", "host-b"), "a cluster CA is there already")
    assert (d / "ca.crt").read_bytes() == before and not (d / "host-b.crt").exists()
    done = cli("cluster", "init", str(d), "-m", "host-b", "--force")
    assert done.returncode == 0, done.stderr
    assert (d / "ca.crt").read_bytes() != before
    states = {r["name"]: r["state"] for r in show(d)}
    assert states == {
        "nfvha cluster CA": "valid",
        "host-a": "not signed by this CA",  # left by the old CA: the operator sees it
        "host-b": "valid",
    }


def test_add_member_issues_from_the_existing_ca_once(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    assert cli("cluster", "init", str(d)).returncode == 0
    done = cli("cluster", "add-member", str(d), "host-c=192.0.2.7", "--days", "30")
    assert done.returncode == 0, done.stderr
    first = (d / "host-c.crt").read_bytes()
    refused(cli("cluster", "add-member", str(d), "host-c"), "has a certificate")
    assert (d / "host-c.crt").read_bytes() == first
    assert cli("cluster", "add-member", str(d), "host-c", "--force").returncode == 0
    assert (d / "host-c.crt").read_bytes() != first
    assert [r["name"] for r in show(d)] == ["nfvha cluster CA", "host-c"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["init", "{d}", "-m", "Host_A"], "a DNS name is expected"),
        (["init", "{d}", "-m", "host-a=10.0.0"], "'10.0.0' is not an IP address"),
        (["init", "{d}", "-m", "host-a="], "addresses expected after '='"),
        (["init", "{d}", "-m", "host-a", "-m", "host-a=10.0.0.1"], "given twice"),
        (["init", "{d}", "-m", "ca"], "a DNS name is expected"),
        (["add-member", "{d}", "host-a"], "no cluster CA there"),
        (["show", "{d}"], "missing (nfvha cluster init creates the cluster CA)"),
        (["revoke", "{d}", "host-a"], "no cluster CA there"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    d = tmp_path / "cluster"
    refused(cli("cluster", *(a.format(d=d) for a in args)), message)
    assert not d.exists()


def test_revoke_lists_the_member_as_revoked_once_and_refuses_bad_input(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    assert cli("cluster", "init", str(d), "-m", "host-a", "-m", "host-b").returncode == 0
    done = cli("cluster", "revoke", str(d), "host-a")
    assert done.returncode == 0, done.stderr
    assert "member host-a: revoked" in done.stdout and "ca.crl" in done.stdout
    again = cli("cluster", "revoke", str(d), "host-a")
    assert again.returncode == 0 and "already revoked" in again.stdout
    rows = {r["name"]: r for r in show(d)}
    assert (rows["host-a"]["state"], rows["host-b"]["state"]) == ("revoked", "valid")
    assert int(rows["host-a"]["serial"], 16) in tls.revoked(d)
    assert "revoked" in cli("cluster", "show", str(d)).stdout
    before = tls.crl_path(d).read_bytes()
    refused(cli("cluster", "revoke", str(d), "host-z"), "member 'host-z' has no certificate")
    refused(cli("cluster", "revoke", str(d), "ca"), "a DNS name is expected")
    assert tls.crl_path(d).read_bytes() == before
    assert cli("cluster", "add-member", str(d), "host-a", "--force").returncode == 0
    assert {r["name"]: r["state"] for r in show(d)}["host-a"] == "valid"  # a new serial


def test_members_issued_by_the_cli_authenticate_each_other(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    assert cli("cluster", "init", str(d), "-m", "mgr-1=127.0.0.1", "-m", "host-a").returncode == 0

    async def scenario() -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"{tls.peer_member(writer)}\n".encode())
            await writer.drain()

        srv = await tls.start_server(handler, "127.0.0.1", 0, tls.server_context(d, "mgr-1"))
        port = srv.sockets[0].getsockname()[1]
        context = tls.client_context(d, "host-a")
        reader, writer = await tls.open_connection("127.0.0.1", port, context, "mgr-1")
        answer = (await reader.readline()).decode().strip()
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        return answer

    assert asyncio.run(scenario()) == "host-a"
