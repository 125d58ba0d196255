"""`sluice lab up --ha`: two controller replicas (node 1 and node 2); killing the leader hands the
OpenFlow master role to the other within the Lease duration, and cross-node traffic loses nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lab import cluster
from lab.components import LabPaths
from lab.kubeapi import KubeClient
from tests.e2e.conftest import LabFactory
from tests.e2e.helpers import PingRun, ofports, warm_up
from tests.support import wait_until

pytestmark = pytest.mark.ovs

LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sluice-controller"


def test_leader_failover_during_traffic(lab_factory: LabFactory) -> None:
    store, state = lab_factory(nodes=2, pods_per_node=1, ha=True, serve=())
    api = KubeClient.from_kubeconfig(LabPaths(store.dir).host_kubeconfig)
    wait_until(lambda: api.get(LEASE)["spec"].get("holderIdentity") is not None, 20, "a leader")
    leader = str(api.get(LEASE)["spec"]["holderIdentity"])
    leader_node = leader.removeprefix("controller-")
    other_node = "node-2" if leader_node == "node-1" else "node-1"
    other_target = f"tcp:{state.node(other_node).underlay_ip}:6653"

    def roles() -> dict[str, dict[str, str]]:
        return {n.name: {t: r for t, r, c in cluster.controller_rows(n) if c} for n in state.nodes}

    wait_until(
        lambda: all(len(r) == 2 and r.get(other_target) == "slave" for r in roles().values()),
        20,
        "both replicas connected, the follower as slave",
    )
    a, b = (next(p for p in state.pods if p.node == n) for n in ("node-1", "node-2"))
    ports_before = {n.name: ofports(n) for n in state.nodes}
    warm_up(a, b)
    run_ab, run_ba = PingRun(a.netns, b.ip), PingRun(b.netns, a.ip)
    try:
        time.sleep(0.5)
        rec = store.load().process(f"controller/{leader_node}")
        assert rec is not None and rec.alive()
        os.kill(rec.pid, signal.SIGKILL)
        wait_until(
            lambda: api.get(LEASE)["spec"].get("holderIdentity") == f"controller-{other_node}",
            cluster.LEASE_DURATION * 3,
            "the other replica to take the Lease",
        )
        wait_until(
            lambda: all(r.get(other_target) == "master" for r in roles().values()),
            10,
            f"every bridge to make {other_target} its master",
        )
        time.sleep(0.5)
    finally:
        sent, lost, out = run_ab.stop()
        sent2, lost2, out2 = run_ba.stop()
    assert sent > 20 and lost == [], (lost, out)
    assert sent2 > 20 and lost2 == [], (lost2, out2)
    assert {n.name: ofports(n) for n in state.nodes} == ports_before
    # The killed replica comes back as the follower.
    cluster.restart_component(store, f"controller/{leader_node}")
    wait_until(
        lambda: all(
            len(r) == 2 and "slave" in r.values() and "master" in r.values() for r in roles().values()
        ),
        20,
        "the restarted replica to connect as slave",
    )
