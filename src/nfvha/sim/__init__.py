"""Deterministic simulation of the unchanged core managers (HA manager, VNFM, VIM).

A virtual clock, simulated processes, guests, hosts, links and checkpoint stores, and the
managers' own routing (``nfvha.core.routing``). A run is fully determined by (deployment, fault
schedule, seed): the same triple gives the same trace, byte for byte. Invariants are checked at
every step (``nfvha.sim.invariants``); a failing run can be shrunk to the shortest schedule that
still fails (``nfvha.sim.shrink``).
"""
