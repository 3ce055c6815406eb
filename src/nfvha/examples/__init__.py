"""Example network functions managed by nfvha: the counter and its deployments."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The counter's deployment for each redundancy model (use cases 1, 5 and 3).
EXAMPLE_FOR = {
    "2n": "counter-2n.yaml",
    "n+m": "counter-stateless.yaml",
    "none": "counter-single.yaml",
}


def example_path(model: str) -> Path:
    return Path(str(resources.files("nfvha.examples") / EXAMPLE_FOR[model]))
