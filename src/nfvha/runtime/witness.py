"""The leader's witness: a small process beside an etcd-elected leader, on its machine, that
revokes the leader's lease the moment the kernel says the leader is dead.

    python -m nfvha.runtime.witness PID LEASE ENDPOINTS

A leader that dies leaves its key in etcd until its lease expires (TTL + up to 0.5 s): a
standby on another machine cannot tell a dead leader from a silent one, so it must wait. The
witness can: it holds a pidfd on the leader, which becomes readable only once that process has
exited (a crash, a SIGKILL, a deposed leader leaving). It then revokes the lease, etcd deletes
the leader key, and the standbys watching it campaign at once. It guesses nothing: a leader that
is alive but cut off from etcd keeps its key until its lease expires, as before, and a machine
that dies takes its witness with it (the lease expires then too).

Its own death changes nothing but the speed of the next takeover. It logs
``nfvha event=witnessing pid=PID lease=LEASE`` once it watches, and exits once it has revoked
the lease, logging ``nfvha event=leader-exited pid=PID lease=LEASE revoked=yes revoke_ms=...``
(from the exit seen to etcd's answer), or once etcd has forgotten the lease (the term is over:
``revoked=no``). It ignores SIGTERM and SIGINT (a terminal's Ctrl-C, a unit's stop signal to the
group): the leader's own exit is what ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

from nfvha.sdk.stores import EtcdEndpoints, StoreUnavailable, parse_endpoints

CHECK_LEASE_S = 1.0  # how often it asks etcd whether the term it witnesses is still on
REVOKE_WITHIN_S = 5.0  # bounded: an etcd down longer lets the lease expire by itself


def spawn(pid: int, lease: int, endpoints: list[str]) -> subprocess.Popen[bytes]:
    """Start the witness of ``pid``'s term (its lease), in its own session: a signal to the
    leader's process group does not reach it."""
    argv = [sys.executable, "-m", "nfvha.runtime.witness", str(pid), str(lease)]
    return subprocess.Popen(
        [*argv, ",".join(endpoints)], stdin=subprocess.DEVNULL, start_new_session=True
    )


async def witness(pid: int, lease: int, etcd: EtcdEndpoints) -> float | None:
    """Wait for ``pid`` to exit, then revoke ``lease``: how long the revocation took from the
    exit seen (s), or None if this call did not revoke it (the term ended otherwise, or etcd
    did not answer in time)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None  # dead before it could be watched: revoke at once
    if pidfd is not None:
        print(f"nfvha event=witnessing pid={pid} lease={lease}", file=sys.stderr, flush=True)
        try:
            if not await _exited(pidfd, etcd, lease):
                return None  # the term is over (released, deposed, expired)
        finally:
            os.close(pidfd)
    seen = time.monotonic()
    return time.monotonic() - seen if await _revoke(etcd, lease) else None


async def _exited(pidfd: int, etcd: EtcdEndpoints, lease: int) -> bool:
    """Whether the process exited (True) before its lease ended otherwise (False)."""
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, exited.set)
    try:
        while not exited.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), CHECK_LEASE_S)
            if not exited.is_set() and not await _alive(etcd, lease):
                return False
        return True
    finally:
        loop.remove_reader(pidfd)


async def _alive(etcd: EtcdEndpoints, lease: int) -> bool:
    """Whether etcd still has the lease: its TTL left is -1 once it is gone (0 is a lease of
    less than a second left, in etcd's whole seconds: a TTL of 1 s renewed on time)."""
    try:
        reply = await etcd.call(lambda client: client.get_lease_info(lease))
    except StoreUnavailable:
        return True  # cannot tell: keep watching
    return reply.TTL >= 0


async def _revoke(etcd: EtcdEndpoints, lease: int) -> bool:
    deadline = time.monotonic() + REVOKE_WITHIN_S
    while time.monotonic() < deadline:
        try:
            await etcd.call(lambda client: client.revoke_lease(lease))
            return True
        except StoreUnavailable as exc:
            if "lease not found" in str(exc):
                return False  # expired or revoked already
            await asyncio.sleep(0.05)
    return False


async def _main(pid: int, lease: int, endpoints: str) -> None:
    etcd = EtcdEndpoints(parse_endpoints(endpoints.split(",")), timeout=0.5)
    try:
        took = await witness(pid, lease, etcd)
    finally:
        await etcd.close()
    revoked = "no" if took is None else f"yes revoke_ms={took * 1000:.1f}"
    print(f"nfvha event=leader-exited pid={pid} lease={lease} revoked={revoked}", file=sys.stderr)


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid, lease, endpoints = sys.argv[1:4]
    asyncio.run(_main(int(pid), int(lease), endpoints))


if __name__ == "__main__":
    main()
