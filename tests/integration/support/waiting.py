"""Waiting for something that should happen at all: liveness bounds, never assertions on
how fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

# Liveness bound for "this should happen at all"; never an assertion on how fast it happens.
PATIENCE_S = 30.0


async def wait_for(cond: Callable[[], Any], what: str, timeout_s: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def wait_for_sync(cond: Callable[[], Any], what: str, timeout_s: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
