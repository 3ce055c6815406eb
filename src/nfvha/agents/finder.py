"""How an external host agent (``nfvha agent``) finds the leading manager: through etcd.

The leader of a deployment publishes where its NFVI listens at ``PREFIX/NAME/nfvi`` (a write
guarded by its term, under its lease: the record goes with the leader's lease, when it is
revoked by the leader's witness or expires). An agent reads it before every dial: a leader that
died is followed by whoever publishes next, with no address configured on the agent.

A record that is malformed, or that carries an older fencing token than one this agent already
followed (a deposed leader's, read from a lagging etcd member), is refused and logged
(``nfvha event=endpoint-refused agent=NAME reason="..."``); no record, no etcd, or a refused
one is a failed dial (``LeaderUnknown``), tried again by the agent's reconnect loop; with no
record it first watches the key for up to a second, so waiting agents do not poll etcd, and
reads it again at once when a leader has published it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from nfvha.agents.agent import Dial
from nfvha.agents.protocol import NfviEndpoint, decode_endpoint
from nfvha.sdk.protocol import ProtocolError
from nfvha.sdk.stores import EtcdEndpoints, StoreUnavailable, aetcd_module, parse_endpoints

CALL_TIMEOUT_S = 0.5
WAIT_FOR_LEADER_S = 1.0


def endpoint_key(prefix: str, deployment: str) -> bytes:
    return f"{prefix}/{deployment}/nfvi".encode()


class LeaderUnknown(OSError):
    """No leading manager to dial now (none published, etcd unreachable, a record refused)."""


class LeaderFinder:
    def __init__(
        self, endpoints: list[str], key: bytes, cluster_dir: Path, member: str, agent: str
    ) -> None:
        self.key, self.cluster_dir, self.member, self.agent = key, cluster_dir, member, agent
        self._etcd = EtcdEndpoints(parse_endpoints(endpoints), timeout=CALL_TIMEOUT_S)
        self.followed: NfviEndpoint | None = None  # the newest leader dialled so far
        self._refusal = ""  # the last one logged: a retry loop does not repeat it

    async def __call__(self) -> Dial:
        got = await self._read()
        if got is None:  # read again once a leader publishes: dialled at once, not retried later
            await self._published()
            got = await self._read()
        if got is None:
            raise LeaderUnknown("no leading manager has published its NFVI endpoint")
        try:
            record = decode_endpoint(bytes(got.value))
        except ProtocolError as exc:
            raise self._refused(str(exc)) from None
        if self.followed is not None and record.token < self.followed.token:
            why = f"token {record.token} is older than {self.followed.token}, already followed"
            raise self._refused(why)
        if self.followed != record:
            where = f"{record.address}:{record.port}"
            where += f" in {record.netns}" if record.netns else ""
            print(
                f"nfvha event=leader-found agent={self.agent} leader={record.member} "
                f"token={record.token} at={where}",
                file=sys.stderr,
                flush=True,
            )
        self.followed = record
        return Dial(
            record.address, record.port, self.cluster_dir, self.member, record.server, record.netns
        )

    async def _read(self) -> Any:
        try:
            return await self._etcd.call(lambda client: client.get(self.key))
        except StoreUnavailable as exc:
            raise LeaderUnknown(str(exc)) from None

    async def _published(self) -> None:
        """Wait for a leader's record (a watch, at most ``WAIT_FOR_LEADER_S``): agents waiting
        for a leader do not poll etcd at their reconnect rate; a put missed between the read
        and the watch costs one wait."""
        with contextlib.suppress(TimeoutError, aetcd_module().ClientError):  # read again
            async with asyncio.timeout(WAIT_FOR_LEADER_S):
                await self._etcd.put(self.key)

    async def close(self) -> None:
        await self._etcd.close()

    def _refused(self, why: str) -> LeaderUnknown:
        if why != self._refusal:
            self._refusal = why
            print(
                f'nfvha event=endpoint-refused agent={self.agent} reason="{why}"',
                file=sys.stderr,
                flush=True,
            )
        return LeaderUnknown(why)
