"""The agent's Prometheus metrics (names start with `sluice_agent_`), on a registry of its own."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# ADD takes tens of milliseconds plumbing plus the wait for the controller; DEL is faster.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The controller reacts within milliseconds when it is well; seconds mean it is not.
FLOW_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    """Counters and histograms of the CNI server; thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sluice_agent_cni_requests",
            "CNI requests answered, by command and CNI result code (0: success).",
            ["command", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "sluice_agent_cni_request_duration_seconds",
            "Time from receiving a CNI request to its answer, by command.",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ready = Gauge(
            "sluice_agent_ready", "1 when the agent can serve ADD (podCIDR known).", registry=r
        )
        self.flow_wait = Histogram(
            "sluice_agent_flow_wait_seconds",
            "Time an ADD waited, with the pod plumbed and published, for its flows to appear on "
            "the bridge (the controller's reaction), by result (ready, timeout).",
            ["result"],
            buckets=FLOW_WAIT_BUCKETS,
            registry=r,
        )
        self.ipam_allocated = Gauge(
            "sluice_agent_ipam_allocated_addresses",
            "Pod addresses allocated on this node (NaN until the podCIDR is known).",
            registry=r,
        )
        self.ipam_usable = Gauge(
            "sluice_agent_ipam_usable_addresses",
            "Addresses of the node's podCIDR that pods can get (NaN until the podCIDR is known).",
            registry=r,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def track_ipam(self, allocated: Callable[[], int | None], usable: Callable[[], int | None]) -> None:
        """Read the IPAM gauges from `allocated()` and `usable()` at each scrape (None: unknown)."""

        def gauge(read: Callable[[], int | None]) -> Callable[[], float]:
            return lambda: math.nan if (value := read()) is None else float(value)

        self.ipam_allocated.set_function(gauge(allocated))
        self.ipam_usable.set_function(gauge(usable))

    def observe(self, command: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(command=command, code=str(code)).inc()
        self.duration.labels(command=command).observe(seconds)

    def serve(self, address: str) -> None:
        """Serve /metrics on `address` (`IP:PORT` or `[IPv6]:PORT`). Raises OSError, ValueError."""
        host, _, port = address.rpartition(":")
        self._server, self._thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        log.info("metrics on http://%s/metrics", address)

    def close(self) -> None:
        """Stop the HTTP endpoint, if serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
