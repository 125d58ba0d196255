"""The cluster model: Kubernetes objects to the compiler's Cluster, bad objects skipped and logged once."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest
from kubernetes import client as k8s

from controller import annotations as ann
from controller.model import ClusterModel, Kind, MalformedObject, parse_node, parse_pod
from flows.cluster import Cluster, NodeSpec
from flows.compiler import compile_cluster
from flows.example import example_cluster
from tests.controller.kube import example_objects, network_status, node_obj, pod_obj


def loaded_model(**kwargs: Any) -> ClusterModel:
    nodes, pods, ports = example_objects()
    model = ClusterModel(**kwargs)
    model.replace(Kind.NODE, nodes)
    model.replace(Kind.POD, pods)
    for node, mapping in ports.items():
        model.set_ports(node, mapping)
    return model


def canonical(cluster: Cluster) -> Cluster:
    """Return `cluster` in the model's order (Cluster compares tuples in order): nodes by name,
    pods grouped by node in that order, then by namespace/name."""
    return Cluster(
        tuple(sorted(cluster.nodes, key=lambda n: n.name)),
        tuple(sorted(cluster.pods, key=lambda p: (p.node, p.namespace, p.name))),
    )


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_example_objects_give_the_example_cluster() -> None:
    model = loaded_model()
    assert model.snapshot() == canonical(example_cluster())
    assert compile_cluster(model.snapshot()) == compile_cluster(example_cluster())
    assert model.problems() == {}


def test_objects_from_the_kubernetes_client_models_parse_too() -> None:
    """`ApiClient.sanitize_for_serialization` of V1Node/V1Pod gives the same dict shape."""
    api = k8s.ApiClient()
    node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(
            name="node-1",
            annotations={
                ann.NODE_TUNNEL_IP: "198.18.0.11",
                ann.NODE_GATEWAY_OFPORT: "2",
                ann.NODE_TUNNEL_OFPORT: "10",
                ann.NODE_DATAPATH_ID: "00000000000000ab",
            },
        ),
        spec=k8s.V1NodeSpec(pod_cidr="100.64.1.0/24", pod_cidrs=["100.64.1.0/24"]),
    )
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name="web-1",
            namespace="default",
            annotations={
                ann.NETWORK_STATUS: network_status("100.64.1.10"),
                ann.POD_PORT_NAME: "p-web-1",
            },
        ),
        spec=k8s.V1PodSpec(node_name="node-1", containers=[k8s.V1Container(name="c")]),
        status=k8s.V1PodStatus(phase="Running"),
    )
    node_info = parse_node(api.sanitize_for_serialization(node))  # type: ignore[no-untyped-call]
    assert node_info.spec == NodeSpec(
        "node-1",
        ipaddress.IPv4Network("100.64.1.0/24"),
        ipaddress.IPv4Address("198.18.0.11"),
        2,
        10,
    )
    assert node_info.datapath_id == 0xAB
    pod_info = parse_pod(api.sanitize_for_serialization(pod))  # type: ignore[no-untyped-call]
    assert pod_info is not None
    assert (pod_info.key, pod_info.node, str(pod_info.ip), pod_info.port_name) == (
        "default/web-1",
        "node-1",
        "100.64.1.10",
        "p-web-1",
    )


def test_pod_ofport_comes_from_the_switch_port_map() -> None:
    nodes, pods, _ = example_objects()
    model = ClusterModel()
    model.replace(Kind.NODE, nodes)
    model.replace(Kind.POD, pods)
    assert all(p.ofport is None for p in model.snapshot().pods)
    assert model.set_ports("node-1", {"p-web-1": 7, "other": 9}) == {"node-1"}
    ofports = {p.name: p.ofport for p in model.snapshot().pods}
    assert ofports == {"web-1": 7, "db-1": None, "web-2": None, "db-2": None}
    assert model.set_ports("node-1", {"p-web-1": 7, "other": 9}) == set()


@pytest.mark.parametrize(
    "pod",
    [
        pod_obj("default", "not-attached", "node-1", None, port_name=None),
        pod_obj("default", "half-attached", "node-1", "100.64.1.20", port_name=None),
        pod_obj("default", "no-status-yet", "node-1", None),
        pod_obj("default", "host", "node-1", "198.18.0.11", host_network=True),
        pod_obj("default", "done", "node-1", "100.64.1.21", phase="Succeeded"),
        pod_obj("default", "crashed", "node-1", "100.64.1.22", phase="Failed"),
        pod_obj("default", "pending", None, None),
    ],
    ids=lambda p: p["metadata"]["name"],
)
def test_pods_without_flows_of_their_own_are_skipped_silently(
    pod: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model = loaded_model()
    model.upsert(Kind.POD, pod)
    assert model.snapshot() == loaded_model().snapshot()
    assert warnings_about(caplog, pod["metadata"]["name"]) == []
    assert model.problems() == {}


BAD_OBJECTS: list[tuple[Kind, dict[str, Any], str]] = [
    (
        Kind.POD,
        pod_obj("default", "garbage", "node-1", None, status_annotation="{not json"),
        "not JSON",
    ),
    (
        Kind.POD,
        pod_obj("default", "not-a-list", "node-1", None, status_annotation='{"ips": []}'),
        "not a list",
    ),
    (
        Kind.POD,
        pod_obj(
            "default",
            "no-default",
            "node-1",
            None,
            status_annotation=network_status("100.64.1.30", default=False),
        ),
        "no default network",
    ),
    (
        Kind.POD,
        pod_obj("default", "v6-only", "node-1", None, status_annotation=network_status("fd00::5")),
        "no IPv4",
    ),
    (Kind.POD, pod_obj("default", "bad-port", "node-1", "100.64.1.31", port_name="a/b"), "port name"),
    (Kind.POD, pod_obj("default", "outside", "node-1", "100.64.2.50"), "not a pod address"),
    (Kind.POD, pod_obj("default", "gateway-ip", "node-1", "100.64.1.1"), "not a pod address"),
    (
        Kind.POD,
        pod_obj("default", "copycat", "node-1", "100.64.1.10", created="2025-01-01T00:00:00Z"),
        "belongs to pod default/web-1",
    ),
    (
        Kind.POD,
        pod_obj(
            "default", "twin", "node-1", "100.64.1.50", port_name="p-web-1", created="2025-01-01T00:00:00Z"
        ),
        "port p-web-1 on node-1 belongs to pod default/web-1",
    ),
    (Kind.NODE, node_obj("node-3", None, "198.18.0.13"), "no spec.podCIDR"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/24", None), "no sluice.io/tunnel-ip"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/24", "not-an-ip"), "not an IPv4 address"),
    (Kind.NODE, node_obj("node-3", "100.64.3.7/24", "198.18.0.13"), "not a network"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/31", "198.18.0.13"), "too small"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/24", "198.18.0.13", gateway_ofport="x"), "gateway-ofport"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/24", "198.18.0.13", tunnel_ofport=None), "tunnel-ofport"),
    (Kind.NODE, node_obj("node-3", "100.64.3.0/24", "198.18.0.13", tunnel_ofport=70000), "tunnel-ofport"),
    (
        Kind.NODE,
        node_obj("node-3", "100.64.1.128/25", "198.18.0.13", created="2025-01-01T00:00:00Z"),
        "overlaps node node-1",
    ),
    (
        Kind.NODE,
        node_obj("node-3", "100.64.3.0/24", "198.18.0.11", created="2025-01-01T00:00:00Z"),
        "tunnel IP 198.18.0.11 is node node-1's too",
    ),
]


@pytest.mark.parametrize(
    ("kind", "obj", "reason"), BAD_OBJECTS, ids=[f"{k.value}-{r}" for k, _, r in BAD_OBJECTS]
)
def test_a_bad_object_is_skipped_and_logged_once(
    kind: Kind, obj: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = loaded_model().snapshot()
    model = loaded_model()
    name = obj["metadata"]["name"]
    for _ in range(3):  # the same object seen again (a resync, a status update) logs nothing new
        model.upsert(kind, obj)
        cluster = model.snapshot()
        model.replace(kind, [*_example_of(kind), obj])
        cluster = model.snapshot()
    assert cluster == good  # everything else keeps compiling, unchanged
    lines = warnings_about(caplog, name)
    assert len(lines) == 1, lines
    assert kind.value in lines[0] and reason in lines[0]


def _example_of(kind: Kind) -> list[dict[str, Any]]:
    nodes, pods, _ = example_objects()
    return nodes if kind is Kind.NODE else pods


def test_a_fixed_object_is_used_and_a_relapse_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    model = loaded_model()
    bad = pod_obj("default", "flaky", "node-1", None, status_annotation="garbage")
    good = pod_obj("default", "flaky", "node-1", "100.64.1.40")
    assert model.upsert(Kind.POD, bad) == set()
    assert "flaky" not in {p.name for p in model.snapshot().pods}
    assert model.upsert(Kind.POD, good) == {"node-1"}
    assert "flaky" in {p.name for p in model.snapshot().pods}
    model.upsert(Kind.POD, bad)
    assert len(warnings_about(caplog, "flaky")) == 2


def test_a_pod_port_on_the_gateway_or_tunnel_ofport_gets_no_local_flows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = loaded_model()
    for _ in range(2):
        model.set_ports("node-1", {"p-web-1": 10, "p-db-1": 4})  # 10 is node-1's tunnel port
        ofports = {p.name: p.ofport for p in model.snapshot().pods if p.node == "node-1"}
        model.set_ports("node-1", {"p-web-1": 10})
        model.snapshot()
    assert ofports == {"web-1": None, "db-1": 4}
    compile_cluster(model.snapshot())  # compiles: no colliding classifier flows
    assert len(warnings_about(caplog, "default/web-1")) == 1


def test_a_live_pod_wins_an_ip_over_a_terminating_one(caplog: pytest.LogCaptureFixture) -> None:
    """The agent frees an IP at CNI DEL, before the old Pod object is gone: the new pod wins."""
    model = loaded_model()
    model.upsert(Kind.POD, pod_obj("default", "web-1", "node-1", "100.64.1.10", deleting=True))
    model.upsert(
        Kind.POD, pod_obj("default", "web-1b", "node-1", "100.64.1.10", created="2025-01-01T00:00:00Z")
    )
    owners = {str(p.ip): p.name for p in model.snapshot().pods}
    assert owners["100.64.1.10"] == "web-1b"
    assert len(warnings_about(caplog, "default/web-1:")) == 1
    # The old pod goes away: no more conflict, nothing logged for it again.
    model.delete(Kind.POD, "default/web-1")
    assert owners == {str(p.ip): p.name for p in model.snapshot().pods}
    assert model.problems() == {}


def test_a_conflict_that_ends_is_forgotten_and_logged_again_if_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = loaded_model()
    intruder = node_obj("node-3", "100.64.2.0/24", "198.18.0.13", created="2025-01-01T00:00:00Z")
    model.upsert(Kind.NODE, intruder)
    assert [n.name for n in model.snapshot().nodes] == ["node-1", "node-2"]
    model.delete(Kind.NODE, "node-2")
    assert [n.name for n in model.snapshot().nodes] == ["node-1", "node-3"]
    nodes, _, _ = example_objects()
    model.upsert(Kind.NODE, nodes[1])  # node-2 is back (and older): node-3 loses again
    assert [n.name for n in model.snapshot().nodes] == ["node-1", "node-2"]
    assert len(warnings_about(caplog, "node-3")) == 2


def test_a_bad_datapath_id_keeps_the_node_but_not_its_switch_match(caplog: pytest.LogCaptureFixture) -> None:
    model = loaded_model()
    model.upsert(Kind.NODE, node_obj("node-2", "100.64.2.0/24", "198.18.0.12", datapath_id="xyz"))
    model.upsert(Kind.NODE, node_obj("node-2", "100.64.2.0/24", "198.18.0.12", datapath_id="xyz"))
    assert model.snapshot() == canonical(example_cluster())
    assert model.node_for_datapath(2) is None
    assert model.node_for_datapath(1) == "node-1"
    assert len(warnings_about(caplog, "node-2")) == 1


def test_an_unnamed_object_is_reported_once() -> None:
    model = loaded_model()
    for _ in range(2):
        assert model.upsert(Kind.POD, {"metadata": {}}) == set()
    assert list(model.problems().values()) == ["object has no metadata.name"]


def test_parse_errors_say_what_is_wrong() -> None:
    with pytest.raises(MalformedObject, match="not JSON"):
        parse_pod(pod_obj("ns", "p", "node-1", None, status_annotation="[oops"))
    with pytest.raises(MalformedObject, match=r"no spec\.podCIDR"):
        parse_node(node_obj("n", None, "198.18.0.1"))


# ---- affected nodes --------------------------------------------------------------------------


def test_a_pod_change_affects_only_its_node() -> None:
    model = loaded_model()
    new = pod_obj("default", "web-3", "node-2", "100.64.2.12")
    assert model.affected_nodes(Kind.POD, None, new) == {"node-2"}
    assert model.upsert(Kind.POD, new) == {"node-2"}
    # A status-only update (nothing the flows use changed) affects nothing.
    updated = {**new, "status": {"phase": "Running", "podIP": "100.64.2.12"}}
    assert model.affected_nodes(Kind.POD, new, updated) == set()
    assert model.upsert(Kind.POD, updated) == set()
    moved = pod_obj("default", "web-3", "node-2", "100.64.2.13")
    assert model.upsert(Kind.POD, moved) == {"node-2"}
    assert model.delete(Kind.POD, moved) == {"node-2"}
    assert model.delete(Kind.POD, moved) == set()


def test_node_changes_affect_every_node_unless_only_its_own_ports_change() -> None:
    model = loaded_model()
    new = node_obj("node-3", "100.64.3.0/24", "198.18.0.13")
    assert model.upsert(Kind.NODE, new) == {"node-1", "node-2", "node-3"}
    assert model.upsert(Kind.NODE, new) == set()
    renumbered = node_obj("node-3", "100.64.3.0/24", "198.18.0.13", gateway_ofport=5)
    assert model.affected_nodes(Kind.NODE, new, renumbered) == {"node-3"}
    assert model.upsert(Kind.NODE, renumbered) == {"node-3"}
    moved = node_obj("node-3", "100.64.4.0/24", "198.18.0.13", gateway_ofport=5)
    assert model.upsert(Kind.NODE, moved) == {"node-1", "node-2", "node-3"}
    readdressed = node_obj("node-3", "100.64.4.0/24", "198.18.0.14", gateway_ofport=5)
    assert model.upsert(Kind.NODE, readdressed) == {"node-1", "node-2", "node-3"}
    assert model.delete(Kind.NODE, "node-3") == {"node-1", "node-2", "node-3"}
    # A node that turns malformed is gone for the others too.
    assert model.upsert(Kind.NODE, node_obj("node-2", None, "198.18.0.12")) == {"node-1", "node-2"}


def test_relist_replaces_and_reports_what_changed() -> None:
    model = loaded_model()
    nodes, pods, _ = example_objects()
    assert model.replace(Kind.POD, pods) == set()
    assert model.replace(Kind.POD, pods[:2]) == {"node-2"}
    assert {p.name for p in model.snapshot().pods} == {"web-1", "db-1"}
    assert model.replace(Kind.NODE, nodes[:1]) == {"node-1", "node-2"}
    assert model.snapshot() == canonical(
        Cluster((example_cluster().node("node-1"),), example_cluster().pods_on("node-1"))
    )


def test_snapshot_is_reused_until_something_changes() -> None:
    model = loaded_model()
    first = model.snapshot()
    assert model.snapshot() is first
    model.upsert(Kind.POD, example_objects()[1][0])  # unchanged object
    assert model.snapshot() is first
    model.set_ports("node-2", {"p-web-2": 3})
    assert model.snapshot() is not first
