"""The agent's readiness probe against a real bridge: flows by pod cookie over the mgmt socket."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from flows import cookies
from flows.cluster import Cluster
from flows.compiler import compile_node
from flows.example import example_cluster
from flows.ofctl import render_flows
from lab.ovs import OvsNode
from ovsagent.flowprobe import FlowProbe, FlowProbeError, pod_cookie
from tests.conftest import OvsNodeFactory


def test_agent_pod_cookie_matches_the_pipeline_cookie_layout() -> None:
    for ns, name in [("default", "web-1"), ("kube-system", "coredns-5d78c9869d-abcde"), ("x", "")]:
        assert cookies.pod_cookie(ns, name) & ((1 << 56) - 1) == pod_cookie(ns, name)


@pytest.fixture
def node(ovs_node_factory: OvsNodeFactory) -> OvsNode:
    return ovs_node_factory("probe")


@pytest.fixture
def probe(node: OvsNode) -> Iterator[FlowProbe]:
    """A probe on the node's br-int, closed at teardown (a wait starts its monitor thread)."""
    probe = FlowProbe(node.paths.mgmt("br-int"))
    yield probe
    probe.close()


def test_probe_sees_a_pods_flows_only_once_they_are_installed(node: OvsNode, probe: FlowProbe) -> None:
    web = pod_cookie("default", "web-1")
    assert not probe.has_flows(web)
    flows = render_flows(compile_node(example_cluster(), "node-1"))
    timer = threading.Timer(0.3, node.add_flows, ("br-int", flows))
    timer.start()
    try:
        started = time.monotonic()
        assert probe.wait_for_flows(web, timeout=10)
        waited = time.monotonic() - started
    finally:
        timer.join()
    # it returned because the flows appeared, not because it gave up
    assert 0.25 <= waited < 5, waited
    assert not probe.has_flows(pod_cookie("default", "web-2"))  # a pod of the other node


def test_with_an_address_only_the_flows_for_that_address_count(node: OvsNode, probe: FlowProbe) -> None:
    # web-1's flows are on the bridge with 100.64.1.10; a new incarnation of web-1 (another
    # sandbox, or the Pod made again under the same name) got 100.64.1.20: same cookie
    cluster = example_cluster()
    old, new = ipaddress.IPv4Address("100.64.1.10"), ipaddress.IPv4Address("100.64.1.20")
    node.add_flows("br-int", render_flows(compile_node(cluster, "node-1")))
    web = pod_cookie("default", "web-1")
    assert probe.has_flows(web) and probe.has_flows(web, address=old)
    assert not probe.has_flows(web, address=new)
    assert not probe.wait_for_flows(web, timeout=0.3, address=new)
    # the controller catches up: the flows for the new address wake the wait (the monitor)
    pods = tuple(dataclasses.replace(p, ip=new) if p.name == "web-1" else p for p in cluster.pods)
    moved = Cluster(cluster.nodes, pods)
    timer = threading.Timer(0.3, node.add_flows, ("br-int", render_flows(compile_node(moved, "node-1"))))
    timer.start()
    try:
        before = probe.stats().monitor_wakeups
        assert probe.wait_for_flows(web, timeout=10, address=new)
    finally:
        timer.join()
    assert probe.stats().monitor_wakeups == before + 1
    assert probe.has_flows(web, address=new)


def test_wait_gives_up_after_the_timeout(probe: FlowProbe) -> None:
    started = time.monotonic()
    assert not probe.wait_for_flows(pod_cookie("default", "never"), timeout=0.4)
    assert 0.4 <= time.monotonic() - started < 2


def test_missing_bridge_is_an_error_not_a_false(node: OvsNode, probe: FlowProbe) -> None:
    assert not probe.has_flows(pod_cookie("default", "web-1"))
    node.del_bridge("br-int")
    with pytest.raises(FlowProbeError, match="cannot query flows"):
        probe.has_flows(pod_cookie("default", "web-1"))
