"""Deployments and scenarios for a test: unique names and free ports, the examples with
overrides, a counter without the SDK."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import nfvha.examples
from nfvha import config as cfg

EXAMPLES = Path(nfvha.examples.__file__).parent
EXAMPLE_FOR = {
    "2n": "counter-2n.yaml",
    "n+m": "counter-stateless.yaml",
    "none": "counter-single.yaml",
}

# A health check that a noisy 2-core machine does not trip by itself: a process that is
# descheduled for a moment is not taken for hung. Kills are seen through the pidfd anyway.
# (500 ms of silence fails it; a probe may take the whole interval, never longer.)
RELAXED_HEALTH = {"interval_ms": 250, "timeout_ms": 250, "failure_threshold": 2}


def unique_name(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held at once while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def example_raw(model: str) -> dict[str, Any]:
    deployment, _ = cfg.load(EXAMPLES / EXAMPLE_FOR[model])
    return deployment.model_dump()


def customize(
    raw: dict[str, Any],
    *,
    name: str,
    port: int,
    vnf: dict[str, Any] | None = None,
    policies: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of a deployment dict with a unique name and port (first VNF) and overrides."""
    raw = json.loads(json.dumps(raw))
    raw["name"] = name
    v = raw["vnfs"][0]
    v["service"]["address"] = f"127.0.0.1:{port}"
    v.update(vnf or {})
    v["policies"].update(policies or {})
    v["policies"]["health_check"].update(health or {})
    return raw


def plain_counter(address: str, policies: dict[str, Any], name: str | None = None) -> dict:
    """A deployment (raw) of one counter without the SDK: supervised and health-checked only."""
    return {
        "name": name or unique_name(),
        "vnfs": [
            {
                "name": "plain",
                "redundancy": {"model": "none"},
                "state": "none",
                "sdk": False,
                "service": {"name": "count", "address": address},
                "vnfcs": [
                    {
                        "name": "plain-1",
                        "command": f"nfvha-counter --standalone --address {address}",
                    }
                ],
                "policies": policies,
            }
        ],
    }


def deployment(raw: dict[str, Any]) -> cfg.Deployment:
    return cfg.Deployment.model_validate(raw)


def example(model: str, *, name: str, port: int, **overrides: Any) -> cfg.Deployment:
    return deployment(customize(example_raw(model), name=name, port=port, **overrides))


def write_config(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def unique_scenario(name: str) -> Any:
    """Scenario ``name`` (uc1 ... uc9) with a deployment name and a service port of its own, so
    that a test does not collide with a developer's run of the same scenario (fixed names and
    ports 7721-7729). Scenario is frozen: rebuilt from a modified dump."""
    from nfvha.lab import scenario as sc

    raw = sc.load(name).model_dump()
    raw["deployment"]["name"] = f"{name}-{uuid.uuid4().hex[:6]}"
    raw["deployment"]["vnfs"][0]["service"]["address"] = f"127.0.0.1:{free_udp_port()}"
    return sc.Scenario.model_validate(raw)


def config_2n(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None
) -> tuple[str, Path, str]:
    """A copy of the 2n example on a free port, written to a file: (name, path, address).
    ``edit`` may change the deployment dict before it is written."""
    name, port = unique_name(), free_udp_port()
    raw = customize(example_raw("2n"), name=name, port=port, health=RELAXED_HEALTH)
    if edit is not None:
        edit(raw)
    return name, write_config(raw, tmp_path / f"{name}.yaml"), f"127.0.0.1:{port}"
