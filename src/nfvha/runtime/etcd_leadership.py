"""Leadership of one manager kind across machines, on an etcd lease, with fencing tokens.

``EtcdCoordinator(endpoints, prefix, kind, member, ttl_s)`` implements the ``Coordinator``
contract (leadership.py) for one manager kind ("vim", "vnfm", "ha:<vnf>" ...) among the manager
instances of a deployment, wherever they run:

- Campaign: when ``<prefix>/leader/<kind>`` is absent, grant a lease of ``ttl_s`` and create the
  key with it, in one transaction that requires the key to be absent (create revision 0). Lost
  the race: not leading, no error; etcd unreachable: not leading either, and tried again later.
- Fencing token: the key's create revision. etcd's revision only grows, so every later term has a
  higher token, whoever holds it; agents check it (core/fencing.py), never trusting the sender.
- Renewal: a keep-alive every ``renew_s`` after the last reply, each attempt retried across the
  members for at most ``retry_s``. The belief (core/lease.py's Tenure) lasts until the send of
  the last successful renewal + ``ttl_s`` on the event loop's monotonic clock: etcd expires the
  lease ``ttl_s`` after *receiving* it, later, so the holder stops believing first. A failed
  attempt, a lease etcd says has expired, or held-until passing (a timer, whatever the loop does)
  demotes at once; ``on_change`` is told of every election and demotion with one sentence.
- ``renew_s + 2 * retry_s <= ttl_s`` is enforced at construction (``TimingError``).
- Guarded writes: ``guarded_put``/``guarded_txn`` run only while this member believes it leads,
  and in etcd only if the leader key still has this term's create revision (one transaction).
  Otherwise ``Deposed`` (a ``StoreRefused``) says who leads now, and this member demotes; an
  unreachable etcd raises ``StoreUnavailable``. Nothing is written in either case.
- A demoted member revokes its old lease as soon as etcd answers (so the key goes at once, not
  after its TTL) and campaigns again. A member that does not lead watches the key and campaigns
  the moment it is deleted (at the latest every ``renew_s``).

``try_lead`` never blocks: it starts the campaign on the running event loop and says whether
this member leads now; ``wait_to_lead`` waits for the election. ``close`` (or ``release``, which
schedules it) ends the term and revokes the lease: the next leader is elected without waiting
for the TTL. A member that dies leaves its key until its lease expires (at most ``ttl_s`` plus
etcd's expiry granularity: its lessor looks every 0.5 s) unless its witness revokes it
(``EtcdLeadership``, runtime/witness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nfvha.core.lease import LeaseTiming, Tenure
from nfvha.runtime import witness
from nfvha.runtime.leadership import Coordinator
from nfvha.runtime.recorded_state import StateConflict
from nfvha.sdk.stores import (
    EtcdEndpoints,
    StoreRefused,
    StoreUnavailable,
    aetcd_module,
    parse_endpoints,
)

R = TypeVar("R")
RETRY_PAUSE_S = 0.05
START_WITHIN_S = 30.0  # a manager started to lead that etcd cannot elect by then fails
CALLS_PER_ATTEMPT = 3  # between two passes over the members within one renewal attempt


class Deposed(StoreRefused):
    """A guarded write by a member that does not lead (any more); nothing was written."""


@dataclass(frozen=True, slots=True)
class Leader:
    member: str
    token: int


@dataclass(frozen=True, slots=True)
class LeadershipChange:
    """An election (``leading``) or a demotion, on the event loop's monotonic clock."""

    at: float
    kind: str
    member: str
    leading: bool
    token: int
    held_until: float  # for a demotion: the belief it ended (at <= held_until unless stalled)
    why: str


class EtcdCoordinator(Coordinator):
    def __init__(
        self,
        endpoints: list[str],
        prefix: str,
        kind: str,
        member: str,
        ttl_s: int = 2,
        *,
        renew_s: float | None = None,
        retry_s: float | None = None,
        on_change: Callable[[LeadershipChange], None] | None = None,
    ) -> None:
        default = LeaseTiming.for_ttl(ttl_s) if isinstance(ttl_s, int) and ttl_s >= 1 else None
        self.timing = LeaseTiming(  # TimingError: a belief could outlive the lease
            ttl_s,
            renew_s if renew_s is not None else default.renew_s if default else 0.0,
            retry_s if retry_s is not None else default.retry_s if default else 0.0,
        )
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"a prefix is like /nfvha/<deployment>, not {prefix!r}")
        if not kind or "/" in kind or not member:
            raise ValueError(f"a manager kind has no '/' and a member a name: {kind!r}, {member!r}")
        self.kind, self.member, self.endpoints = kind, member, endpoints
        self.key = f"{prefix}/leader/{kind}".encode()
        # A call is given a third of an attempt: one sent to a member while etcd elects a leader
        # may hang until etcd's own timeout, and the next pass has to have time to answer.
        call_s = self.timing.retry_s / CALLS_PER_ATTEMPT
        self._etcd = EtcdEndpoints(parse_endpoints(endpoints), timeout=call_s)
        self._tenure = Tenure(self.timing)
        self._lease: int | None = None  # the lease of the current term
        self._seen_revision = 0  # of the leader key when last read: a vacancy is a later delete
        self._stale: list[int] = []  # leases of ended terms, revoked once etcd answers
        self._on_change = on_change
        self._elected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    # --- the Coordinator contract ------------------------------------------------------------

    def try_lead(self) -> bool:
        self._start()
        return self.leads()

    async def wait_to_lead(self, give_up: asyncio.Event) -> bool:
        self._start()
        while not self.leads():
            if give_up.is_set():
                return False
            elected = asyncio.ensure_future(self._elected.wait())
            stop = asyncio.ensure_future(give_up.wait())
            try:
                await asyncio.wait({elected, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                elected.cancel()
                stop.cancel()
        return True

    def release(self) -> None:
        """Stop leading now; the lease is revoked in the background (``close`` awaits it)."""
        self._demote("released")
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        self._demote("released")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timing.retry_s):
                await self._revoke_stale()
        await self._etcd.close()

    # --- what it believes and what etcd says ----------------------------------------------------

    def leads(self) -> bool:
        return self._tenure.leads(self._now())

    @property
    def token(self) -> int | None:
        """The fencing token of the term this member leads now, else None."""
        return self._tenure.token if self.leads() else None

    @property
    def lease_id(self) -> int | None:
        """The lease of the term this member leads now, else None."""
        return self._lease if self.leads() else None

    @property
    def held_until(self) -> float:
        return self._tenure.held_until

    async def leader(self) -> Leader | None:
        """Who leads this kind according to etcd (a linearizable read), with its token."""
        got = await self._etcd.call(lambda client: client.get(self.key))
        return _leader(got)

    async def read(self, key: bytes) -> bytes | None:
        """A key's value (a linearizable read), or None if it is absent."""
        got = await self._etcd.call(lambda client: client.get(key))
        return None if got is None else bytes(got.value)

    async def read_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        """(key, value, mod revision) of every key under ``prefix`` (a linearizable read)."""
        got = await self._etcd.call(lambda client: client.get_prefix(prefix))
        return [(bytes(kv.key), bytes(kv.value), int(kv.mod_revision)) for kv in got]

    def describe(self) -> dict[str, object]:
        remaining = max(0.0, self.held_until - self._now()) if self.leads() else 0.0
        return {
            "coordination": "etcd",
            "key": self.key.decode(),
            "member": self.member,
            "token": self.token,
            "lease_ttl_s": self.timing.ttl_s,
            "lease_remaining_ms": round(remaining * 1000),
        }

    async def revoke_dead(self, dead: Callable[[str], bool]) -> Leader | None:
        """Revoke the lease of the leader etcd knows if ``dead(member)`` says its holder is
        known dead (not merely silent): its successor is elected at once instead of after the
        lease's TTL. The leader it revoked, or None (nobody leads, or one not known dead)."""
        got = await self._etcd.call(lambda client: client.get(self.key))
        leader = _leader(got)
        if leader is None or not dead(leader.member):
            return None
        await self._etcd.call(functools.partial(_revoke, lease=got.lease))
        return leader

    # --- guarded writes ----------------------------------------------------------------------

    async def guarded_put(self, key: bytes, value: bytes) -> None:
        await self.guarded_txn([], [_txn().Put(key, value)], [])

    async def guarded_txn(
        self, compare: list[Any], success: list[Any], failure: list[Any]
    ) -> tuple[bool, list[Any]]:
        """``compare``/``success``/``failure`` (aetcd transaction ops) as one etcd transaction,
        run only if this term still holds the leader key: (succeeded, aetcd's responses of the
        branch run). Deposed if it does not, StoreUnavailable if etcd does not answer within
        ``retry_s`` (nor before held-until). It is retried across the members within that time,
        and one that timed out may have been applied: make it safe to repeat."""
        token = self.token
        if token is None:
            raise Deposed(f"{self.member} does not lead {self.kind}: nothing written")
        t = _txn()
        inner = t.Txn(compare, success, failure)
        (ok, responses), _ = await self._retrying(
            lambda client: client.transaction(
                [_created(self.key) == token], [inner], [t.Get(self.key)]
            ),
            self._tenure.attempt_deadline(self._now()),
        )
        if not ok:
            now = _leader(responses[0][0][1] if responses[0] else None)
            self._demote(f"deposed: the leader key is {_describe(now)}")
            raise Deposed(
                f"{self.member} (token {token}) no longer leads {self.kind}: the leader key is "
                f"{_describe(now)}; nothing written"
            )
        result = responses[0].response_txn
        return bool(result.succeeded), list(result.responses)

    # --- the loop ----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._step()
                except (StoreUnavailable, TimeoutError, _client_error()) as exc:
                    self._demote(f"etcd failed: {exc}")  # rule 2 of core/lease.py; try again
                    await asyncio.sleep(self.timing.renew_s)
        finally:  # cancelled, or a bug: a member that stopped campaigning does not lead
            self._demote("the campaign stopped")

    async def _step(self) -> None:
        if self._tenure.token is None:
            await self._revoke_stale()
            if not await self._campaign():
                await self._vacancy()
        else:
            await asyncio.sleep(self.timing.renew_s)
            await self._renew()

    async def _campaign(self) -> bool:
        """One attempt; whether this member leads now."""
        got = await self._etcd.call(lambda client: client.get(self.key))
        if got is not None:  # a read first: no lease granted while somebody leads
            self._seen_revision = int(got.mod_revision)
            return False
        sent = self._now()
        lease = await self._etcd.call(lambda client: client.lease(self.timing.ttl_s))
        self._stale.append(lease.id)  # until the key is ours (a call that timed out may be applied)
        t = _txn()
        ok, responses = await self._etcd.call(
            lambda client: client.transaction(
                [_created(self.key) == 0],
                [t.Put(self.key, self.member.encode(), lease=lease.id), t.Get(self.key)],
                [],
            )
        )
        if not ok:
            return False  # lost the race
        self._stale.remove(lease.id)
        self._lease = lease.id
        self._tenure.won(responses[1][0][1].create_revision, sent)
        self._arm_expiry()
        self._elected.set()
        self._tell(True, "elected: created the leader key with this member's lease")
        return True

    async def _vacancy(self) -> None:
        """Wait until the leader key is deleted (its lease revoked or expired) or ``renew_s``
        has passed: a standby campaigns the moment the key goes, not a period later."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.timing.renew_s
        with contextlib.suppress(TimeoutError, StoreUnavailable, _client_error()):
            async with asyncio.timeout_at(until):
                await self._etcd.deleted(self.key, self._seen_revision + 1)
                return
        await asyncio.sleep(max(0.0, until - loop.time()))  # a failed watch: no busy loop

    async def _renew(self) -> None:
        lease, token = self._lease, self._tenure.token
        deadline = self._tenure.attempt_deadline(self._now())
        try:
            reply, sent = await self._retrying(lambda c: c.refresh_lease(lease), deadline)
        except StoreUnavailable as exc:
            self._demote(f"lease renewal failed: {exc}")
            return
        if self._tenure.token != token:
            return  # demoted meanwhile (held-until passed): a late renewal does not undo it
        if reply is None or reply.TTL <= 0:
            self._demote("etcd says the lease expired (renewed too late)")
            return
        self._tenure.renewed(sent)
        self._arm_expiry()

    async def _retrying(
        self, op: Callable[[Any], Awaitable[R]], deadline: float
    ) -> tuple[R, float]:
        """``op`` on the members, pass after pass (riding out an etcd election) until one answers
        or ``deadline``: its result and when the pass that answered began. StoreUnavailable with
        the last error once the deadline passed."""
        last = "no answer in time"
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    sent = self._now()
                    try:
                        return await self._etcd.call(op), sent
                    except StoreUnavailable as exc:
                        last = str(exc)
                        await asyncio.sleep(RETRY_PAUSE_S)
        except TimeoutError:
            raise StoreUnavailable(f"etcd did not answer by {deadline:.3f}: {last}") from None

    async def _revoke_stale(self) -> None:
        while self._stale:
            await self._etcd.call(functools.partial(_revoke, lease=self._stale[0]))
            self._stale.pop(0)

    # --- demotion ----------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(self._tenure.held_until, self._expire)

    def _expire(self) -> None:
        held_until = self._tenure.held_until
        token = self._tenure.token
        if (why := self._tenure.expire(self._now())) is not None and token is not None:
            self._ended(token, held_until, why)

    def _demote(self, why: str) -> None:
        held_until, token = self._tenure.held_until, self._tenure.token
        if self._tenure.lost(why) is not None and token is not None:
            self._ended(token, held_until, why)

    def _ended(self, token: int, held_until: float, why: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._elected.clear()
        if self._lease is not None:
            self._stale.append(self._lease)
            self._lease = None
        self._tell(False, why, token, held_until)

    def _tell(
        self, leading: bool, why: str, token: int | None = None, held: float | None = None
    ) -> None:
        if self._on_change is None:
            return
        token = token if token is not None else self._tenure.token or 0
        held = held if held is not None else self._tenure.held_until
        self._on_change(
            LeadershipChange(self._now(), self.kind, self.member, leading, token, held, why)
        )

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _leader(got: Any) -> Leader | None:
    if got is None:
        return None
    return Leader(got.value.decode(errors="replace"), int(got.create_revision))


def _describe(leader: Leader | None) -> str:
    return "absent" if leader is None else f"{leader.member}'s (token {leader.token})"


async def _revoke(client: Any, lease: int) -> None:
    try:
        await client.revoke_lease(lease)
    except _client_error() as exc:
        if "lease not found" not in str(exc):  # expired already: what revoking was for
            raise


def _records(
    prefix: bytes, kvs: list[tuple[bytes, bytes, int]]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The state records under ``prefix`` by name, and the names of those that are not JSON
    objects (refused: a record is only ever read, never trusted to be well formed)."""
    records: dict[str, dict[str, Any]] = {}
    malformed: list[str] = []
    for key, value, _ in kvs:
        name = key[len(prefix) :].decode(errors="replace")
        try:
            record = json.loads(value)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records[name] = record
        else:
            malformed.append(name)
    return records, malformed


async def read_recorded(
    endpoints: list[str], prefix: str, timeout_s: float = 2.0
) -> dict[str, Any]:
    """What etcd holds of a deployment (``prefix``: ``PREFIX/NAME``), for anyone to read: who
    leads, whose term runs the VNFCs, and the state records. StoreUnavailable if etcd does not
    answer."""
    etcd = EtcdEndpoints(parse_endpoints(endpoints), timeout=timeout_s)
    base, state = prefix.encode(), f"{prefix}/state/".encode()
    try:
        leader = _leader(await etcd.call(lambda c: c.get(base + b"/leader/managers")))
        deployed = await etcd.call(lambda c: c.get(base + b"/deployed"))
        got = await etcd.call(lambda c: c.get_prefix(state))
    finally:
        await etcd.close()
    records, malformed = _records(state, [(bytes(kv.key), bytes(kv.value), 0) for kv in got])
    return {
        "leader": None if leader is None else {"member": leader.member, "token": leader.token},
        "deployed_by": None if deployed is None else bytes(deployed.value).decode(errors="replace"),
        "records": records,
        "malformed": malformed,
    }


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _prefix_end(prefix: bytes) -> bytes:
    return bytes(aetcd_module().utils.prefix_range_end(prefix))


def _txn() -> Any:
    return aetcd_module().transactions


def _created(key: bytes) -> Any:
    return _txn().Create(key)


def _client_error() -> type[Exception]:
    error: type[Exception] = aetcd_module().ClientError
    return error


class EtcdLeadership(Coordinator):
    """Leadership of a deployment's managers elected on etcd, with the machine's own lock taken
    first. A manager takes the local lock (``LocalLock``) before it campaigns and keeps it while
    it lives, so a standby on the same machine that gets the lock knows that any leader of this
    machine is dead (the kernel released its lock): it revokes that leader's lease and is
    elected at once. A standby on another machine is elected once the leader's witness, started
    with each term, revokes a dead leader's lease (or, the machine lost, once it expires). The
    member name is ``HOST:PID``; the fencing token is etcd's (the leader key's create revision)."""

    records_state = True

    def __init__(self, lock: Coordinator, election: EtcdCoordinator, host: str) -> None:
        self.lock, self.election, self.host = lock, election, host
        self._witness: subprocess.Popen[bytes] | None = None
        self._revisions: dict[bytes, int] = {}  # of each state record, as this term last saw it

    def try_lead(self) -> bool:
        return self._witnessed(self.lock.try_lead() and self.election.try_lead())

    async def wait_to_lead(self, give_up: asyncio.Event) -> bool:
        if not await self.lock.wait_to_lead(give_up):
            return False
        with contextlib.suppress(StoreUnavailable, TimeoutError, _client_error()):
            await self.election.revoke_dead(self._dead_here)  # else: its lease expires
        return self._witnessed(await self.election.wait_to_lead(give_up))

    async def lead_at_start(self) -> bool:
        if not self.lock.try_lead():
            return False
        if await self.election.leader() is not None:  # led from another machine
            return False
        async with asyncio.timeout(START_WITHIN_S):
            return self._witnessed(await self.election.wait_to_lead(asyncio.Event()))

    def _witnessed(self, leads: bool) -> bool:
        """A term starts with its witness (runtime/witness.py): when this process dies, its
        lease is revoked at once and a standby anywhere is elected without waiting out the TTL."""
        lease = self.election.lease_id
        if leads and lease is not None and self._witness is None:
            self._witness = witness.spawn(os.getpid(), lease, self.election.endpoints)
            self._reap_when_done(self._witness)
        return leads

    @staticmethod
    def _reap_when_done(proc: subprocess.Popen[bytes]) -> None:
        """A witness ends with its term: reaped then, not left a zombie while this one lives."""
        pidfd = os.pidfd_open(proc.pid)
        loop = asyncio.get_running_loop()

        def reap() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            proc.wait()

        loop.add_reader(pidfd, reap)

    def release(self) -> None:
        self.election.release()

    async def close(self) -> None:
        self.stopping = True
        if self.election.leads():
            await self.record_stopped()
        await self.election.close()  # revoked first: the lock is held while it may lead
        await self.lock.close()
        if self._witness is not None and self._witness.poll() is None:
            self._witness.kill()  # it ignores SIGTERM: the leader's exit is what ends it
            with contextlib.suppress(ChildProcessError):
                self._witness.wait()

    @property
    def token(self) -> int | None:
        return self.election.token

    def describe(self) -> dict[str, object]:
        return self.election.describe()

    # --- what a term left: whether VNFCs may run where this leader cannot see them -----------

    @property
    def _base(self) -> bytes:
        return self.election.key.rpartition(b"/leader/")[0]

    @property
    def _deployed_key(self) -> bytes:
        return self._base + b"/deployed"

    @property
    def _state_prefix(self) -> bytes:
        return self._base + b"/state/"

    async def previous_term_left(self) -> str | None:
        """The member whose term started the deployment's VNFCs and did not stop them (its
        record in etcd), or None: a leader that finds one and has nothing of it to adopt here
        must wait for them to fence themselves before it starts any (ADR 014)."""
        value = await self.election.read(self._deployed_key)
        member = None if value is None else value.decode(errors="replace")
        if member is None or member.rpartition(":")[0] == self.host:
            return None  # this machine's VNFCs were adopted, or removed as leftovers
        return member

    async def record_deployed(self) -> None:
        """This term runs the deployment's VNFCs (a guarded write: only while leading)."""
        await self.election.guarded_put(self._deployed_key, self.election.member.encode())

    async def publish(self, name: str, record: dict[str, object]) -> None:
        """``PREFIX/NAME/<name>`` = ``record`` with this term's member and token, as JSON,
        under the term's lease (gone with it) and only while this term holds the leader key."""
        value = {**record, "member": self.election.member, "token": self.election.token}
        key = self._base + b"/" + name.encode()
        put = _txn().Put(key, json.dumps(value).encode(), lease=self.election.lease_id)
        await self.election.guarded_txn([], [put], [])

    async def record_stopped(self) -> None:
        """A deliberate stop: nothing is left running for a next leader to wait for, nor any
        state of it to continue."""
        t, prefix = _txn(), self._state_prefix
        deletes = [t.Delete(self._deployed_key), t.Delete(prefix, _prefix_end(prefix))]
        with contextlib.suppress(StoreUnavailable, Deposed, TimeoutError, _client_error()):
            await self.election.guarded_txn([], deletes, [])

    # --- the deployment's state, recorded for the next term (runtime/recorded_state.py) --------

    async def read_state(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        kvs = await self.election.read_prefix(self._state_prefix)
        self._revisions = {key: revision for key, _, revision in kvs}
        return _records(self._state_prefix, kvs)

    async def write_state(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """One transaction, guarded by this term's leader key and, per record, by the mod
        revision this term last saw (0: absent). StateConflict (with what etcd holds now) if a
        record changed meanwhile; Deposed or StoreUnavailable as any guarded write."""
        t = _txn()
        keys = {name: self._state_prefix + name.encode() for name in changes}
        compare = [t.Mod(key) == self._revisions.get(key, 0) for key in keys.values()]
        ops = [
            t.Delete(keys[name]) if value is None else t.Put(keys[name], _json(value))
            for name, value in changes.items()
        ]
        written = [keys[name] for name, value in changes.items() if value is not None]
        ok, responses = await self.election.guarded_txn(
            compare, ops + [t.Get(key) for key in written], []
        )
        if not ok:
            records, _ = await self.read_state()
            raise StateConflict(records, f"records changed in etcd meanwhile: {sorted(changes)}")
        for key in keys.values():
            self._revisions.pop(key, None)
        for response in responses[len(ops) :]:
            for kv in response.response_range.kvs:
                self._revisions[bytes(kv.key)] = int(kv.mod_revision)

    def _dead_here(self, member: str) -> bool:
        host, _, pid = member.rpartition(":")
        return host == self.host and pid.isdigit() and _gone(int(pid))


def _gone(pid: int) -> bool:
    """No such process, or only its zombie: belt and braces beside the lock, whose release
    already says that every leader of this machine is dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
