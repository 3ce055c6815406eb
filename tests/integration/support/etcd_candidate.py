"""A manager instance campaigning for one kind in its own process (the etcd leadership tests kill
it): ``python -m tests.integration.support.etcd_candidate ENDPOINTS PREFIX KIND MEMBER TTL``
prints ``leading <token>`` or ``demoted <token>`` at each change, and runs until killed."""

from __future__ import annotations

import asyncio
import sys

from nfvha.runtime.etcd_leadership import EtcdCoordinator, LeadershipChange


def say(change: LeadershipChange) -> None:
    print("leading" if change.leading else "demoted", change.token, flush=True)


async def main(endpoints: str, prefix: str, kind: str, member: str, ttl: str) -> None:
    coordinator = EtcdCoordinator(
        endpoints.split(","), prefix, kind, member, int(ttl), on_change=say
    )
    await coordinator.wait_to_lead(asyncio.Event())
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
