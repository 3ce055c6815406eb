"""Prometheus metrics of a running deployment, read from its trace (through ``Outcomes``).

Served over HTTP on a loopback address (``metrics: {port: 9464, address: 127.0.0.1}`` in the
deployment file; absent: no endpoint). Every metric has one source, the trace records the
engine makes anyway; nothing here decides or waits, and a scrape never touches the event loop
(prometheus-client serves from a thread of its own, reading values under its own locks).

- ``nfvha_failovers_total{vnf}``: the active role moved to another VNFC after a failure.
- ``nfvha_restarts_total{vnf,vnfc}``: a VNFC started again after a failure.
- ``nfvha_escalations_total{vnf,vnfc}``: a VNFC given up on and handed to the VNFM.
- ``nfvha_detection_seconds{vnf}``: first sign of a failure -> failure decided (cleanup).
- ``nfvha_recovery_seconds{vnf}``: failure of the active decided -> new active confirmed.
- ``nfvha_service_up{vnf,service}``: 1 while an active VNFC serves the service.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from nfvha.config import Deployment
from nfvha.runtime import outcomes as o

# Detection spans a pidfd wake-up (~ms) to a few health-check intervals; recovery a failover
# (~ms) to a restart from scratch (seconds): buckets from 1 ms to 30 s cover both.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, deployment: Deployment) -> None:
        self.registry = CollectorRegistry()  # one per deployment, not the process-wide default
        r = self.registry
        self.failovers = Counter(
            "nfvha_failovers", "Failovers of the active role", ["vnf"], registry=r
        )
        self.restarts = Counter(
            "nfvha_restarts", "VNFC restarts after a failure", ["vnf", "vnfc"], registry=r
        )
        self.escalations = Counter(
            "nfvha_escalations", "VNFCs escalated to the VNFM", ["vnf", "vnfc"], registry=r
        )
        self.detection = Histogram(
            "nfvha_detection_seconds",
            "First sign of a failure to the failure decided",
            ["vnf"],
            buckets=BUCKETS,
            registry=r,
        )
        self.recovery = Histogram(
            "nfvha_recovery_seconds",
            "Failure of the active decided to a new active confirmed",
            ["vnf"],
            buckets=BUCKETS,
            registry=r,
        )
        self.service_up = Gauge(
            "nfvha_service_up", "1 while an active VNFC serves", ["vnf", "service"], registry=r
        )
        self._zero(deployment)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _zero(self, deployment: Deployment) -> None:
        """Every series exists from the start at 0: a rate() needs the value before the first
        failover, and a missing series is not a healthy one."""
        for vnf in deployment.vnfs:
            self.failovers.labels(vnf.name)
            self.detection.labels(vnf.name)
            self.recovery.labels(vnf.name)
            self.service_up.labels(vnf.name, vnf.service.name).set(0)
            for vnfc in vnf.vnfcs:
                self.restarts.labels(vnf.name, vnfc.name)
                self.escalations.labels(vnf.name, vnfc.name)

    def apply(self, outcome: o.Outcome) -> None:
        if isinstance(outcome, o.Failover):
            self.failovers.labels(outcome.vnf).inc()
        elif isinstance(outcome, o.Restart):
            self.restarts.labels(outcome.vnf, outcome.vnfc).inc()
        elif isinstance(outcome, o.Escalation):
            self.escalations.labels(outcome.vnf, outcome.vnfc).inc()
        elif isinstance(outcome, o.Failed) and outcome.detection_s is not None:
            self.detection.labels(outcome.vnf).observe(outcome.detection_s)
        elif isinstance(outcome, o.Recovered):
            self.recovery.labels(outcome.vnf).observe(outcome.recovery_s)
        elif isinstance(outcome, o.ServiceState):
            self.service_up.labels(outcome.vnf, outcome.service).set(int(outcome.up))

    def serve(self, address: str, port: int) -> None:
        """Start the HTTP endpoint (/metrics); raises OSError when the port is taken."""
        self._server, self._thread = start_http_server(port, address, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
