"""Helpers of the integration tests: real processes, real sockets, no mocks. One module per
concern: deployments (names, ports, configurations), runs (the CLI, `nfvha run`, an in-process
engine), consumers, trace (reading records), processes, cgroups, waiting.

Nothing here asserts on wall-clock durations; the timeouts are liveness bounds only (how long
to wait before declaring that something that should happen did not happen at all).
"""
