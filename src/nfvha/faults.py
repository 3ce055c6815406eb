"""The fault vocabulary: one name per fault, entity first (``vnfc-crash``, ``vm-hang``), the same
in the CLI, the control socket, the runtime's trace, scenario files, benchmarks and the
simulator. Which entity a fault hits is in its name, so a name alone says what its target is.
"""

from __future__ import annotations

from typing import Literal, get_args

# Failures of an entity: injected for real (runtime) and simulated alike.
FailureKind = Literal["vnfc-crash", "vnfc-hang", "vm-crash", "vm-hang", "host-crash"]
# What a running deployment takes (nfvha fault, the control socket): failures, and the end of
# a VNFC's hang (SIGCONT).
RuntimeKind = Literal[FailureKind, "vnfc-resume"]
# What the simulator takes: failures, conditions that last ``duration`` and then heal, and the
# death of the manager (all of it: one process), replaced by a new one after ``duration``
# (default: the takeover latency), which adopts the VNFCs still running.
SimKind = Literal[FailureKind, "link-cut", "slow-disk", "disk-full", "port-taken", "manager-crash"]

FAILURES: tuple[str, ...] = get_args(FailureKind)
RUNTIME: tuple[str, ...] = get_args(RuntimeKind)
SIMULATED: tuple[str, ...] = get_args(SimKind)
LASTING = ("link-cut", "slow-disk", "disk-full", "port-taken")  # simulated, with a duration
NFVI = ("vm-crash", "vm-hang", "host-crash")  # need hosts and VMs in the deployment
# The manager's own death; simulated with or without hosts (the host and guest agents outlive
# it as the VNFCs do, and the next manager adopts them).
MANAGER = ("manager-crash",)

TARGET_OF = {
    "vnfc-crash": "vnfc",
    "vnfc-hang": "vnfc",
    "vnfc-resume": "vnfc",
    "vm-crash": "vm",
    "vm-hang": "vm",
    "host-crash": "host",
    "link-cut": "host",
    "slow-disk": "vnf",  # checkpoint fsyncs 50x slower for ``duration``
    "disk-full": "vnf",  # checkpoint writes fail for ``duration``
    "port-taken": "vnf",  # a stranger holds the service address for ``duration``
    "manager-crash": "manager",  # the deployment's manager ("manager"); a new one leads after
    # ``duration`` (default: the takeover latency)
}

# The names of release 0.1 (verb first), still taken by the CLI and the control socket and read
# in old traces and result files; to be dropped in the next release.
ALIASES = {
    "kill": "vnfc-crash",
    "hang": "vnfc-hang",
    "resume": "vnfc-resume",
    "crash-vm": "vm-crash",
    "hang-vm": "vm-hang",
    "crash-host": "host-crash",
}


def canonical(kind: str) -> str:
    """The current name of a fault kind (an old name translated; anything else unchanged)."""
    return ALIASES.get(kind, kind)
