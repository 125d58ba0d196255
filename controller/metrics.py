"""The controller's Prometheus metrics, and the in-process counters tests and `/readyz` read.

One `ControllerMetrics` per process, on its own CollectorRegistry (never the global one, so
tests can build several). Every name starts with `sluice_controller_`.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Push latency buckets: a small plan commits in milliseconds, 50k flows in seconds.
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Handling one watch event: parse, update the model, mark nodes (microseconds to milliseconds).
EVENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class ControllerMetrics:
    """Counters, gauges and histograms of the controller; thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.switches_connected = Gauge(
            "sluice_controller_switches_connected", "OpenFlow switches connected now.", registry=r
        )
        self.leader = Gauge(
            "sluice_controller_leader", "1 while this replica holds the Lease (OpenFlow master).", registry=r
        )
        self.switches_waiting = Gauge(
            "sluice_controller_switches_waiting",
            "Connected switches whose datapath id matches no Node (not programmed).",
            registry=r,
        )
        self.node_flows = Gauge(
            "sluice_controller_node_flows", "Flows the node's bridge should hold.", ["node"], registry=r
        )
        self.table_flows = Gauge(
            "sluice_controller_table_flows",
            "Flows the node's bridge should hold, by table.",
            ["node", "table"],
            registry=r,
        )
        self.plan_flows = Counter(
            "sluice_controller_plan_flows",
            "Flows in reconcile plans, by kind (add, modify, delete).",
            ["node", "kind"],
            registry=r,
        )
        self.reconciles = Counter(
            "sluice_controller_reconciles",
            "Reconciles by node and result (in_sync, pushed, failed).",
            ["node", "result"],
            registry=r,
        )
        self.push_seconds = Histogram(
            "sluice_controller_push_seconds",
            "Time from bundle open to commit reply.",
            ["node"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.openflow_errors = Counter(
            "sluice_controller_openflow_errors",
            "OpenFlow error messages received from switches.",
            ["node"],
            registry=r,
        )
        self.flow_mods_sent = Counter(
            "sluice_controller_flow_mods_sent",
            "Flow-mods sent to switches (inside bundles).",
            ["node"],
            registry=r,
        )
        self.flowmod_cache_entries = Gauge(
            "sluice_controller_flowmod_cache_entries",
            "Serialized flow-mods the controller keeps for re-pushes (flows some switch holds).",
            registry=r,
        )
        self.informer_events = Counter(
            "sluice_controller_informer_events",
            "Watch events received, by resource and type.",
            ["resource", "type"],
            registry=r,
        )
        self.informer_fresh = Gauge(
            "sluice_controller_informer_last_update_timestamp_seconds",
            "When the informer last heard from the API server (list, event or bookmark); "
            "time() minus this is the informer's lag.",
            ["resource"],
            registry=r,
        )
        self.informer_staleness = Gauge(
            "sluice_controller_informer_staleness_seconds",
            "Seconds since the informer last knew it was up to date with the API server: a list, "
            "any watch event or bookmark, or a watch the server ended normally. Grows without "
            "bound while the API server is unreachable or the watch is stuck; since start before "
            "the first list.",
            ["resource"],
            registry=r,
        )
        self.informer_event_seconds = Histogram(
            "sluice_controller_informer_event_seconds",
            "Time from a watch event's arrival to the model updated and its nodes marked dirty.",
            ["resource"],
            buckets=EVENT_BUCKETS,
            registry=r,
        )
        self.reconcile_lag_seconds = Histogram(
            "sluice_controller_reconcile_lag_seconds",
            "Time from a node's switch being asked to reconcile (a change marked its node dirty, "
            "a port changed, a resync or role change) to the switch being in line (commit reply, "
            "or nothing to send). A failed reconcile keeps the clock running until one succeeds.",
            ["node"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.informer_relists = Counter(
            "sluice_controller_informer_relists",
            "Full lists of a resource (start, 410 Gone, periodic resync).",
            ["resource"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._flow_mods: dict[str, int] = {}

    def count_flow_mods(self, node: str, count: int) -> None:
        """Record `count` flow-mods sent to `node`'s switch."""
        self.flow_mods_sent.labels(node).inc(count)
        with self._lock:
            self._flow_mods[node] = self._flow_mods.get(node, 0) + count

    def flow_mods(self, node: str | None = None) -> int:
        """Return the flow-mods sent so far, to one node's switch or (None) to all."""
        with self._lock:
            if node is None:
                return sum(self._flow_mods.values())
            return self._flow_mods.get(node, 0)
