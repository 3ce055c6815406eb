"""A provider network for one test, removed afterwards even on failure, with proof that none
of its namespaces is left."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

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
