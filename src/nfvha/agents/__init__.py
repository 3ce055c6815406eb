"""The NFVI's agent processes on one machine: host agents run guests (VMs), guest agents run
VNFCs (``python -m nfvha.agents.agent host|guest ...``, started by drivers.nfvi).

Fault zones are cgroups (cgroup v2, drivers.cgroups) where the machine has them: a VM is a
cgroup under its host's, so crashing a VM (``cgroup.kill``), hanging it (``cgroup.freeze``) or
crashing or fencing a host takes everything inside at once. Without a writable cgroup v2 they
are process groups, signalled one by one.
"""
