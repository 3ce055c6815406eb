"""Builders shared by the unit tests."""

from __future__ import annotations

from typing import Any

from nfvha.config import Vnf


def vnf_spec(model: str = "2n", count: int | None = None, **extra: Any) -> Vnf:
    redundancy: dict[str, Any] = {"model": model}
    if model == "n+m":
        redundancy.update(active=extra.pop("active", 1), spare=extra.pop("spare", 1))
        redundancy["spare_start"] = extra.pop("spare_start", "prestarted")
        count = count or redundancy["active"] + redundancy["spare"]
    count = count or {"2n": 2, "none": 1}.get(model, 2)
    policies = {
        "restart_max": extra.pop("restart_max", 3),
        "restart_probation_s": extra.pop("probation", 60.0),
        "cleanup_grace_ms": 500,
        "health_check": {"kind": "sdk", "interval_ms": 50, "failure_threshold": 3},
    }
    return Vnf.model_validate(
        {
            "name": "vnf",
            "redundancy": redundancy,
            "service": {"name": "svc", "address": "127.0.0.1:9999"},
            "vnfcs": [{"name": f"c{i}", "command": "true"} for i in range(count)],
            "policies": policies,
            **extra,
        }
    )
