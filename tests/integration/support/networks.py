"""A provider network for one test, removed afterwards even on failure, with proof that none
of its namespaces is left."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

from nfvha.drivers import network
from nfvha.drivers.network import ProviderNetwork


@contextlib.contextmanager
def provider_network(prefix: str) -> Iterator[ProviderNetwork]:
    """A ProviderNetwork of a deployment named ``<prefix>-<random>``."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    net = ProviderNetwork(name)
    try:
        yield net
    finally:
        net.remove()
        left = network.namespaces_of(name)
        network.remove_leftovers(name)
        assert left == [], f"namespaces left behind (removed now): {left}"


def vip_holders(status: dict[str, Any], vip: str) -> list[str]:
    """The nodes of a running deployment (its status) whose interface has ``vip``, read from
    their kernels."""
    found = []
    for node, where in status["network"]["nodes"].items():
        addrs = subprocess.run(
            ["ip", "-n", where["netns"], "-4", "-o", "addr", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if f" {vip}/" in addrs:
            found.append(node)
    return found
