"""The example counter, slow to take the active role: it waits $SLOW_ACTIVE_S seconds (0.5 by
default) before it binds the service port. This widens the window between a failover's
assignment and its confirmation, so that a test can act inside it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from nfvha.examples import counter

_serve = counter.serve


async def slow_serve(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(float(os.environ.get("SLOW_ACTIVE_S", "0.5")))
    await _serve(*args, **kwargs)


counter.serve = slow_serve

if __name__ == "__main__":
    counter.main()
