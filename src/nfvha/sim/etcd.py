"""etcd as a simulated store for leadership: leases that expire, revisions, lost quorum, on virtual
time, with the guarded semantics of runtime/etcd_leadership.py; deterministic.

``SimEtcd`` is the store: every write raises the revision; a lease expires ``ttl`` after the last
renewal it *received* and takes its keys with it; without a quorum nothing is read, written,
renewed or expired (etcd's lessor runs on the raft leader), and when the quorum returns every
lease gets its whole TTL again from then (etcd's lessor on a new leader does the same).

``SimMember`` is a manager instance campaigning for one kind. Its belief is core/lease.py's Tenure,
as in the runtime; its requests are sent at one instant, applied by the store at a later one (or
never, or after the member gave up on them) and answered later still. A reply later than
``retry_s`` after the send is a failure, whatever the store did.

A member can crash and start again (``crash``): what it sent may still be applied, and its
witness revokes its term's lease at once (runtime/witness.py), unless its machine was lost with it.

``LeadershipWorld`` runs members against the store one action at a time and checks after each:
- ``one-believer``: at no virtual instant do two members believe they lead;
- ``believer-holds-key``: a member that believes it leads has the leader key with its token;
- ``fenced-write``: a guarded write applied by the store carries the newest token ever issued.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

from nfvha.core.lease import LeaseTiming, Tenure

LEADER_KEY = "leader"
Op = Literal["campaign", "renew", "write"]


class SimUnavailable(Exception):
    """No quorum: the store did nothing."""


class SimViolation(AssertionError):
    pass


@dataclass(slots=True)
class SimKey:
    value: str
    create_revision: int
    lease: int | None


@dataclass(slots=True)
class SimEtcd:
    ttl: float
    revision: int = 0
    quorum: bool = True
    keys: dict[str, SimKey] = field(default_factory=dict)
    leases: dict[int, float] = field(default_factory=dict)  # lease -> expires at
    _next_lease: int = 1

    def expire(self, now: float) -> None:
        if not self.quorum:
            return
        for lease in [lease for lease, at in self.leases.items() if at <= now]:
            self.revoke(lease)

    def set_quorum(self, now: float, quorum: bool) -> None:
        if quorum and not self.quorum:
            self.leases = {lease: max(at, now + self.ttl) for lease, at in self.leases.items()}
        self.quorum = quorum

    def new_lease_id(self) -> int:
        self._next_lease += 1
        return self._next_lease

    def grant(self, lease: int, now: float) -> None:
        self._available()
        self.leases[lease] = now + self.ttl

    def keepalive(self, lease: int, now: float) -> float:
        """The TTL left after the renewal; 0: the lease is gone."""
        self._available()
        if lease not in self.leases:
            return 0.0
        self.leases[lease] = now + self.ttl
        return self.ttl

    def revoke(self, lease: int) -> None:
        self._available()
        self.leases.pop(lease, None)
        for name in [n for n, k in self.keys.items() if k.lease == lease]:
            del self.keys[name]
            self.revision += 1

    def create(self, key: str, value: str, lease: int) -> int | None:
        """The key's create revision, or None if it exists (create_revision != 0)."""
        self._available()
        if key in self.keys or lease not in self.leases:
            return None
        self.revision += 1
        self.keys[key] = SimKey(value, self.revision, lease)
        return self.revision

    def guarded_put(self, token: int, key: str, value: str) -> bool:
        """The put, only if the leader key has create revision ``token``."""
        self._available()
        held = self.keys.get(LEADER_KEY)
        if held is None or held.create_revision != token:
            return False
        self.revision += 1
        self.keys[key] = SimKey(value, self.revision, None)
        return True

    def _available(self) -> None:
        if not self.quorum:
            raise SimUnavailable("no quorum")


@dataclass(slots=True)
class SimRequest:
    op: Op
    sent_at: float
    token: int | None  # the term it was sent in
    lease: int | None
    applied: bool = False
    ok: bool = False  # what the store answered, once applied
    token_won: int = 0


@dataclass(slots=True)
class SimMember:
    name: str
    tenure: Tenure
    lease: int | None = None
    stale: list[int] = field(default_factory=list)
    pending: dict[str, SimRequest] = field(default_factory=dict)  # "loop" and "write"
    demotions: list[str] = field(default_factory=list)

    def lost(self, why: str) -> None:
        self._ended(self.tenure.lost(why))

    def expire(self, now: float) -> None:
        self._ended(self.tenure.expire(now))

    def _ended(self, sentence: str | None) -> None:
        if sentence is not None:
            self.demotions.append(sentence)
            if self.lease is not None:
                self.stale.append(self.lease)  # revoked at the next campaign
                self.lease = None


@dataclass(slots=True)
class LeadershipWorld:
    timing: LeaseTiming
    members: list[SimMember]
    store: SimEtcd
    now: float = 0.0
    issued: list[int] = field(default_factory=list)  # every token, in order
    applied_writes: list[tuple[str, int]] = field(default_factory=list)
    late: list[tuple[SimMember, SimRequest]] = field(
        default_factory=list
    )  # given up, maybe applied

    @classmethod
    def of(cls, n: int, timing: LeaseTiming) -> LeadershipWorld:
        members = [SimMember(f"m{i}", Tenure(timing)) for i in range(n)]
        return cls(timing, members, SimEtcd(float(timing.ttl_s)))

    # --- actions -----------------------------------------------------------------------------

    def advance(self, dt: float) -> None:
        self.now += dt
        for member in self.members:
            member.expire(self.now)
        self.store.expire(self.now)
        self.check()

    def send(self, i: int, write: bool = False) -> None:
        """Member ``i`` sends its loop's next request (campaign or renewal), or a guarded write
        (refused at once if it does not believe it leads)."""
        member = self.members[i]
        slot = "write" if write else "loop"
        if slot in member.pending:
            return
        token = member.tenure.token if member.tenure.leads(self.now) else None
        if write:
            if token is not None:
                member.pending[slot] = SimRequest("write", self.now, token, None)
            return
        if token is not None:
            member.pending[slot] = SimRequest("renew", self.now, token, member.lease)
        else:
            lease = self.store.new_lease_id()
            member.stale.append(lease)  # until the member learns the key is its own
            member.pending[slot] = SimRequest("campaign", self.now, None, lease)

    def deliver(self, i: int, slot: str) -> None:
        """The store applies member ``i``'s pending request now (if it has a quorum)."""
        member = self.members[i]
        request = member.pending.get(slot)
        if request is not None and not request.applied:
            self._apply(member, request)
        self.check()

    def reply(self, i: int, slot: str, lost: bool = False) -> None:
        """Member ``i`` gets the answer to its pending request now, or gives up on it."""
        member = self.members[i]
        request = member.pending.pop(slot, None)
        if request is None:
            return
        late = self.now > request.sent_at + self.timing.retry_s
        if lost or late or not request.applied:
            if not request.applied:
                self.late.append((member, request))  # etcd may still apply it
            self._failed(member, request)
        else:
            self._answered(member, request)
        self.check()

    def deliver_late(self, k: int) -> None:
        """A request its member gave up on is applied now after all (a slow proposal)."""
        if self.late:
            member, request = self.late.pop(k % len(self.late))
            self._apply(member, request)
            self.check()

    def set_quorum(self, quorum: bool) -> None:
        self.store.set_quorum(self.now, quorum)
        self.check()

    def crash(self, i: int, witnessed: bool = True) -> None:
        """Member ``i`` dies and is started again, believing nothing. What it had sent may still
        be applied (``late``). Its witness (runtime/witness.py), started once it knew it had
        won, revokes the lease of that term at once if the store has a quorum (else it expires);
        a lost machine takes the witness with it (``witnessed`` False)."""
        member = self.members[i]
        self.late.extend((member, request) for request in member.pending.values())
        if witnessed and member.lease is not None:
            with contextlib.suppress(SimUnavailable):
                self.store.revoke(member.lease)
        self.members[i] = SimMember(member.name, Tenure(self.timing))
        self.check()

    # --- the store's side and the member's side ----------------------------------------------

    def _apply(self, member: SimMember, request: SimRequest) -> None:
        request.applied = True
        try:
            if request.op == "campaign":
                self._apply_campaign(member, request)
            elif request.op == "renew":
                assert request.lease is not None
                request.ok = self.store.keepalive(request.lease, self.now) > 0
            else:
                assert request.token is not None
                request.ok = self.store.guarded_put(request.token, "state", member.name)
                if request.ok:
                    self.applied_writes.append((member.name, request.token))
                    if request.token != max(self.issued):
                        raise SimViolation(
                            f"fenced-write at {self.now}: {member.name}'s write with token "
                            f"{request.token} applied, newest token {max(self.issued)}"
                        )
        except SimUnavailable:  # not applied: it may be, later
            request.applied = request.ok = False

    def _apply_campaign(self, member: SimMember, request: SimRequest) -> None:
        for lease in [x for x in member.stale if x != request.lease]:
            self.store.revoke(lease)
            member.stale.remove(lease)
        assert request.lease is not None
        self.store.grant(request.lease, self.now)
        token = self.store.create(LEADER_KEY, member.name, request.lease)
        request.ok = token is not None
        if token is not None:
            request.token_won = token
            self.issued.append(token)

    def _answered(self, member: SimMember, request: SimRequest) -> None:
        if request.op == "campaign":
            if request.ok and member.tenure.token is None and request.lease in member.stale:
                member.stale.remove(request.lease)
                member.lease = request.lease
                member.tenure.won(request.token_won, request.sent_at)
        elif request.op == "renew":
            if member.tenure.token != request.token:
                return  # a reply for an ended term
            if request.ok:
                member.tenure.renewed(request.sent_at)
            else:
                member.lost("the store says the lease expired")
        elif not request.ok and member.tenure.token == request.token:
            member.lost("deposed: guarded write refused")

    def _failed(self, member: SimMember, request: SimRequest) -> None:
        if request.op == "renew" and member.tenure.token == request.token:
            member.lost("lease renewal failed")
        # a campaign's lease stays in ``stale``: revoked at the next campaign

    # --- invariants --------------------------------------------------------------------------

    def check(self) -> None:
        believers = [m for m in self.members if m.tenure.leads(self.now)]
        if len(believers) > 1:
            names = ", ".join(f"{m.name} (token {m.tenure.token})" for m in believers)
            raise SimViolation(f"one-believer at {self.now}: {names} all believe they lead")
        for member in believers:
            held = self.store.keys.get(LEADER_KEY)
            if held is None or held.create_revision != member.tenure.token:
                raise SimViolation(
                    f"believer-holds-key at {self.now}: {member.name} believes it leads with "
                    f"token {member.tenure.token}, the leader key is {held}"
                )
