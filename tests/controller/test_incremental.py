"""Incremental snapshot and compile: after any sequence of changes, the same as from scratch."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import ClusterModel, Kind
from flows.cluster import Cluster
from flows.compiler import CompileCache, compile_node
from flows.example import GATEWAY_OFPORT
from tests.controller.kube import node_obj, pod_obj

NODES = ("node-1", "node-2", "node-3")
PODS = ("a", "b", "c", "d", "e")
PORTS = ("p-x", "p-y", "p-z")

# (kind of change, node index, pod index, variant): variants pick addresses and ports from
# small pools so that conflicts (shared IPs, shared port names, overlapping podCIDRs, a pod's
# ofport equal to the gateway's) happen often.
Op = tuple[str, int, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(("node", "node_del", "pod", "pod_del", "ports")),
        st.integers(0, len(NODES) - 1),
        st.integers(0, len(PODS) - 1),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=25,
)


def node_variant(index: int, variant: int) -> dict[str, Any]:
    name = NODES[index]
    # Variant 5 of node-3 takes node-1's podCIDR (a conflict); variant 4 renumbers its tunnel.
    cidr_index = 0 if (index == 2 and variant == 5) else index
    tunnel = f"198.18.0.{index + 1 + (50 if variant == 4 else 0)}"
    created = f"2024-01-0{index + 1}T00:00:00Z"
    return node_obj(
        name, f"100.64.{cidr_index}.0/24", tunnel, datapath_id=f"{index + 1:016x}", created=created
    )


def pod_variant(node: int, pod: int, variant: int) -> dict[str, Any]:
    # Variant picks the IP (.10-.12, or .1: the gateway's) and the port name.
    host = 1 if variant == 5 else 10 + variant % 3
    obj = pod_obj(
        "ns", PODS[pod], NODES[node], f"100.64.{node}.{host}", port_name=PORTS[(pod + variant) % len(PORTS)]
    )
    if variant == 3:
        obj["metadata"]["deletionTimestamp"] = "2024-02-01T00:00:00Z"
    return obj


def ports_variant(variant: int) -> dict[str, int]:
    if variant == 5:
        return {"p-x": GATEWAY_OFPORT, "p-y": 4}
    return {port: 3 + (i + variant) % 4 for i, port in enumerate(PORTS[: 1 + variant % 3])}


class World:
    """The objects as the API server and switches hold them now, and the model fed the events."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, int]] = {}
        self.model = ClusterModel()

    def apply(self, op: Op) -> None:
        kind, n, p, variant = op
        if kind == "node":
            obj = node_variant(n, variant)
            self.nodes[NODES[n]] = obj
            self.model.upsert(Kind.NODE, obj)
        elif kind == "node_del":
            self.nodes.pop(NODES[n], None)
            self.model.delete(Kind.NODE, NODES[n])
        elif kind == "pod":
            obj = pod_variant(n, p, variant)
            self.pods[f"ns/{PODS[p]}"] = obj
            self.model.upsert(Kind.POD, obj)
        elif kind == "pod_del":
            self.pods.pop(f"ns/{PODS[p]}", None)
            self.model.delete(Kind.POD, f"ns/{PODS[p]}")
        else:
            self.ports[NODES[n]] = ports_variant(variant)
            self.model.set_ports(NODES[n], self.ports[NODES[n]])

    def from_scratch(self) -> ClusterModel:
        fresh = ClusterModel()
        fresh.replace(Kind.NODE, self.nodes.values())
        fresh.replace(Kind.POD, self.pods.values())
        for node, ports in self.ports.items():
            fresh.set_ports(node, ports)
        return fresh


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_incremental_model_and_compile_equal_a_from_scratch_build(sequence: list[Op]) -> None:
    world = World()
    for op in sequence:
        world.apply(op)
        fresh = world.from_scratch()
        expected: Cluster = fresh.snapshot()
        assert world.model.snapshot() == expected
        assert world.model.problems() == fresh.problems()
        for node in expected.nodes:
            # The model compiles through its CompileCache; compile_node without one is the reference.
            assert world.model.compile(node.name) == compile_node(expected, node.name)


def test_compile_cache_reuses_unchanged_nodes_and_follows_changes() -> None:
    world = World()
    for op in [("node", 0, 0, 0), ("node", 1, 0, 0), ("pod", 0, 0, 0), ("ports", 0, 0, 2)]:
        world.apply(op)
    cache = CompileCache()
    cluster = world.model.snapshot()
    first = cache.compile_node(cluster, "node-1")
    assert cache.compile_node(cluster, "node-1") is first  # nothing changed: the same FlowSet
    world.apply(("pod", 0, 1, 1))
    changed = world.model.snapshot()
    assert cache.compile_node(changed, "node-1") == compile_node(changed, "node-1") != first
    world.apply(("node_del", 1, 0, 0))
    assert cache.compile_node(world.model.snapshot(), "node-1") == compile_node(
        world.model.snapshot(), "node-1"
    )
