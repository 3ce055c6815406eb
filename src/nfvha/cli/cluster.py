"""The cluster's identities (issue 10): the CA that signs every member's certificate and the
members themselves (managers and host agents), for mutual TLS between hosts. Thin: issuing
and checking are drivers/tls.py's; these parse, call and print. Bad input exits 2 with one
line and writes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from nfvha.cli.output import console, fail
from nfvha.drivers import tls

cluster_app = typer.Typer(
    help="The cluster CA and member certificates for mutual TLS between hosts.",
    no_args_is_help=True,
)

DirArg = Annotated[Path, typer.Argument(help="Cluster directory (ca.crt, ca.key, NAME.crt, ...).")]
DaysOpt = Annotated[int, typer.Option(help="Validity of each member certificate, in days.")]
MemberSpec = tuple[str, list[tls.IpAddress]]


def parse_member(spec: str) -> MemberSpec:
    """NAME or NAME=IP,IP,...: the member's name, and the addresses it is reached at."""
    name, _, ips = spec.partition("=")
    if "=" in spec and not ips.strip():
        raise tls.TlsSetupError(f"member {spec!r}: addresses expected after '='")
    return tls.check_member_name(name), tls.parse_ips(ips.split(",") if ips else [])


def _parse_all(specs: list[str]) -> list[MemberSpec]:
    members = [parse_member(spec) for spec in specs]
    names = [name for name, _ in members]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise tls.TlsSetupError(f"member {dupes[0]!r} given twice")
    return members


def _issue(directory: Path, member: MemberSpec, days: int, force: bool) -> None:
    name, ips = member
    path = tls.issue_member(directory, name, ips, days=days, force=force)
    addresses = ", ".join([name, *map(str, ips)])
    console.print(f"member {name}: {path} (for {addresses})", highlight=False)


@cluster_app.command()
def init(
    directory: DirArg,
    member: Annotated[
        list[str] | None,
        typer.Option(
            "--member",
            "-m",
            help="A member to issue a certificate for: NAME or NAME=IP,IP,... (repeatable).",
        ),
    ] = None,
    days: DaysOpt = tls.MEMBER_DAYS,
    ca_days: Annotated[int, typer.Option(help="Validity of the CA, in days.")] = tls.CA_DAYS,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing CA (its member certificates stop working)."
        ),
    ] = False,
) -> None:
    """Create the cluster CA in DIRECTORY and a certificate for each member."""
    try:
        members = _parse_all(member or [])
        path = tls.create_ca(directory, days=ca_days, force=force)
        console.print(f"cluster CA: {path} (key {tls.key_path(directory, tls.CA_NAME)}, 0600)")
        for spec in members:
            _issue(directory, spec, days, force)
    except (tls.TlsSetupError, OSError) as exc:
        raise fail(str(exc), code=2) from None


@cluster_app.command("add-member")
def add_member(
    directory: DirArg,
    member: Annotated[str, typer.Argument(help="NAME or NAME=IP,IP,...")],
    days: DaysOpt = tls.MEMBER_DAYS,
    force: Annotated[
        bool, typer.Option("--force", help="Reissue a member that has a certificate.")
    ] = False,
) -> None:
    """Issue one more member certificate from the directory's CA."""
    try:
        _issue(directory, parse_member(member), days, force)
    except (tls.TlsSetupError, OSError) as exc:
        raise fail(str(exc), code=2) from None


@cluster_app.command()
def show(
    directory: DirArg,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The CA and each member: names and addresses, expiry, SHA-256 fingerprint."""
    try:
        found = tls.members(directory)
    except (tls.TlsSetupError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    now = dt.datetime.now(dt.UTC)
    if as_json:
        print(json.dumps([_row(info, now) for info in found], indent=2))
        return
    for info in found:  # lines, not a table: a fingerprint is read (and compared) whole
        row = _row(info, now)
        label = f"{tls.CA_NAME} ({info.name})" if row["ca"] else info.name
        names = ", ".join(info.dns + info.ips) or "-"
        expires = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"{label}  {names}  expires {expires}  {row['state']}", highlight=False)
        console.print(f"  SHA-256 {info.fingerprint}", highlight=False, soft_wrap=True)


def _row(info: tls.CertInfo, now: dt.datetime) -> dict:
    is_ca = info.path.stem == tls.CA_NAME
    state = "valid"
    if not info.signed_by_ca:
        state = "not signed by this CA"
    elif info.revoked:
        state = "revoked"
    elif info.expired(now):
        state = "expired"
    elif info.not_before > now:
        state = "not yet valid"
    return {
        "name": info.name,
        "ca": is_ca,
        "dns": info.dns,
        "ips": info.ips,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "state": state,
        "fingerprint_sha256": info.fingerprint,
        "serial": format(info.serial, "x"),
        "path": str(info.path),
    }


@cluster_app.command()
def revoke(
    directory: DirArg,
    member: Annotated[str, typer.Argument(help="The member whose certificate is revoked.")],
) -> None:
    """Revoke a member's certificate (a lost key, a host retired): its serial goes on the CA's
    revocation list (ca.crl), and every member refuses it from its next handshake on, managers
    already listening too. Copy ca.crl to every host; reissue with add-member --force."""
    try:
        added = tls.revoke_member(directory, member)
    except (tls.TlsSetupError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    crl = tls.crl_path(directory)
    state = "revoked" if added else "already revoked"
    console.print(f"member {member}: {state} ({crl}; copy it to every host)", highlight=False)
