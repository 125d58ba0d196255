"""Crash safety: the real agent SIGKILLed at every stage of ADD and of DEL, restarted, leaks nothing.

The agent is started with the crash-point test hook `SLUICE_TEST_CRASH_AT=<stage>`
(`ovsagent.crashpoints`), so it kills itself with SIGKILL exactly at that stage of the CNI call
the test makes through the real plugin. Then it is restarted (restart reconciliation) and the test
checks, right after the restart and again after the runtime's follow-up calls (DEL of the failed
sandbox and ADD of a new one for an ADD crash, the retried DEL for a DEL crash):

* every IPAM record belongs to an OVS port carrying that address, and every such port has its
  record (no leaked address, no port without one);
* no device named like a pod port exists on the node without its OVS port, and no sandbox without
  a port still holds a pod interface (no orphan port or interface);
* a live pod, plumbed before any crash, keeps the same ofport, devices and address, and still
  reaches its gateway.

One node (OVS, API server, agent, live pod) serves all stages of one attachment kind, to keep the
run short; each stage uses a fresh pod.

The `restore:` stages kill the agent while, at its start after br-int was deleted, it restores
the pods the bridge carried; the next start must still restore them all with their addresses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab import netns as lab_netns
from lab.traffic import ping
from ovsagent.agent import RESTORE_MARK
from ovsagent.crashpoints import CRASH_ENV, Stage
from ovsagent.naming import PORT_NAME_RE, port_name
from tests.agent.harness import BRIDGE, GATEWAY, AgentBed, agent_bed, standalone_factories

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
ADD_STAGES = [s for s in Stage if s.value.startswith("add:")]
DEL_STAGES = [s for s in Stage if s.value.startswith("del:")]
RESTORE_STAGES = [s for s in Stage if s.value.startswith("restore:")]


@dataclass(frozen=True)
class LivePod:
    """What must not change about the live pod."""

    name: str
    netns: str
    ip: str
    ofport: int | None
    host_ifindex: int | None
    pod_ifindex: int


@dataclass
class CrashBed:
    """A node with the agent running and one live pod."""

    bed: AgentBed
    live: LivePod


def _ifindex(netns_name: str, ifname: str) -> int | None:
    out = lab_netns.Netns(netns_name).ip("-o", "link", "show", "dev", ifname, check=False).stdout
    return int(out.split(":", 1)[0]) if out.strip() else None


def _live_state(bed: AgentBed, name: str) -> LivePod:
    netns_name = os.path.basename(bed.pods[name])
    port = port_name("default", name)
    ip = json.loads(bed.annotations(name)[NETWORK_STATUS])[0]["ips"][0]
    pod_ifindex = _ifindex(netns_name, "eth0")
    assert pod_ifindex is not None
    return LivePod(name, netns_name, ip, bed.ofport(port), _ifindex(bed.node.netns, port), pod_ifindex)


def _crash_bed(interface_type: str) -> Iterator[CrashBed]:
    with (
        standalone_factories() as (make_node, make_netns),
        agent_bed(make_node, make_netns, interface_type=interface_type) as bed,
    ):
        bed.start_agent(resync_seconds=0)  # only the restarts reconcile here
        bed.create_pod("live")
        run, _ = bed.add_ready("live")
        run.ok()
        yield CrashBed(bed, _live_state(bed, "live"))


@pytest.fixture(scope="module")
def veth_crash_bed() -> Iterator[CrashBed]:
    """One veth node for every stage."""
    yield from _crash_bed("veth")


@pytest.fixture(scope="module")
def internal_crash_bed() -> Iterator[CrashBed]:
    """One internal-port node for every stage."""
    yield from _crash_bed("internal")


def _ports(bed: AgentBed) -> dict[str, dict[str, str]]:
    """OVS interface name -> external_ids, for every interface."""
    out = bed.node.vsctl("--format=json", "--columns=name,external_ids", "list", "Interface")
    rows = json.loads(out)["data"]
    return {name: dict(ids[1]) for name, ids in rows}


def _ip_records(bed: AgentBed) -> set[str]:
    alloc = bed.ipam_dir / "allocations"
    return {p.name for p in alloc.iterdir() if not p.name.startswith(".")} if alloc.exists() else set()


def _assert_consistent(bed: AgentBed) -> None:
    """No leaked address, no port without its address, no orphan device or pod interface."""
    ports = _ports(bed)
    pod_ports = {name: ids for name, ids in ports.items() if "sluice.io/ip" in ids}
    port_ips = {ids["sluice.io/ip"].split("/")[0] for ids in pod_ports.values()}
    assert _ip_records(bed) == port_ips, (_ip_records(bed), pod_ports)
    for name in pod_ports:
        assert bed.ofport(name) is not None, f"port {name} has no ofport"
    devices = lab_netns.Netns(bed.node.netns).ip("-o", "link", "show").stdout
    names = {line.split(":", 2)[1].strip().split("@")[0] for line in devices.splitlines()}
    orphans = {n for n in names if PORT_NAME_RE.match(n) and n not in ports}
    assert not orphans, f"devices without an OVS port: {orphans}"
    with_port = {ids["sluice.io/netns"] for ids in pod_ports.values()}
    for name, path in bed.pods.items():
        if path not in with_port and os.path.exists(path):
            netns_name = os.path.basename(path)
            assert _ifindex(netns_name, "eth0") is None, f"pod {name} has eth0 but no port"


def _assert_live_untouched(bed: AgentBed, live: LivePod) -> None:
    assert _live_state(bed, live.name) == live
    assert live.ip in _ip_records(bed)
    result = ping(live.netns, GATEWAY, count=1)
    assert result.received >= 1, result.output


def _assert_released(bed: AgentBed, pod: str) -> None:
    port = port_name("default", pod)
    assert port not in _ports(bed)
    assert not lab_netns.link_exists(bed.node.netns, port)
    assert _ifindex(os.path.basename(bed.pods[pod]), "eth0") is None
    ann = bed.annotations(pod)
    assert NETWORK_STATUS not in ann and "sluice.io/port-name" not in ann


def _crash_at(crash_bed: CrashBed, stage: Stage) -> None:
    bed, live = crash_bed.bed, crash_bed.live
    pod = f"crash-{stage.value.replace(':', '-')}"
    bed.create_pod(pod)
    if stage in DEL_STAGES:
        run, _ = bed.add_ready(pod)
        run.ok()
    assert bed.agent is not None and bed.agent.stop() == 0
    agent = bed.start_agent(env={CRASH_ENV: stage.value}, resync_seconds=0)
    err = bed.cni("ADD" if stage in ADD_STAGES else "DEL", pod).error()
    assert err["code"] == 11, err  # the plugin reports the agent it lost as "try again later"
    assert agent.proc.wait(10) == -signal.SIGKILL
    assert f"crash point {stage.value} reached" in agent.log()
    bed.start_agent(resync_seconds=0)
    _assert_consistent(bed)
    _assert_live_untouched(bed, live)
    if stage in ADD_STAGES:
        # containerd tears the failed sandbox down with DEL; the kubelet then makes a new one
        bed.cni("DEL", pod).ok()
        _assert_released(bed, pod)
        assert bed.ofport(port_name("default", pod)) is None
        run, _ = bed.add_ready(pod, container_id=f"new-{pod}")
        address = ipaddress.IPv4Interface(run.ok()["ips"][0]["address"])
        assert ping(os.path.basename(bed.pods[pod]), GATEWAY, count=1).received >= 1
        assert str(address.ip) in _ip_records(bed)
        bed.cni("DEL", pod, container_id=f"new-{pod}").ok()
    else:
        bed.cni("DEL", pod).ok()  # the runtime retries the DEL that failed
    _assert_released(bed, pod)
    _assert_consistent(bed)
    assert _ip_records(bed) == {live.ip}
    _assert_live_untouched(bed, live)


@pytest.mark.parametrize("stage", ADD_STAGES + DEL_STAGES, ids=lambda s: s.value)
def test_veth_agent_killed_at_each_stage_leaks_nothing(veth_crash_bed: CrashBed, stage: Stage) -> None:
    _crash_at(veth_crash_bed, stage)


@pytest.mark.parametrize(
    "stage",
    [Stage.ADD_PORT_CREATED, Stage.ADD_INTERFACE_CONFIGURED, Stage.DEL_PORT_REMOVED],
    ids=lambda s: s.value,
)
def test_internal_agent_killed_at_each_kind_specific_stage_leaks_nothing(
    internal_crash_bed: CrashBed, stage: Stage
) -> None:
    _crash_at(internal_crash_bed, stage)


def test_unknown_crash_point_is_refused_by_name(veth_crash_bed: CrashBed) -> None:
    bed = veth_crash_bed.bed
    assert bed.agent is not None and bed.agent.stop() == 0
    with pytest.raises(AssertionError, match="names no crash point"):
        bed.start_agent(env={CRASH_ENV: "add:nowhere"})
    assert bed.agent is not None and bed.agent.proc.returncode == 2
    bed.start_agent(resync_seconds=0)
    _assert_live_untouched(bed, veth_crash_bed.live)


@pytest.mark.parametrize("stage", RESTORE_STAGES, ids=lambda s: s.value)
def test_agent_killed_while_restoring_a_lost_bridge_restores_every_pod_at_restart(
    veth_crash_bed: CrashBed, stage: Stage
) -> None:
    bed = veth_crash_bed.bed
    other = f"other-{stage.value.replace(':', '-')}"
    bed.create_pod(other)
    run, _ = bed.add_ready(other)
    run.ok()
    records = _ip_records(bed)
    assert bed.agent is not None and bed.agent.stop() == 0
    bed.node.vsctl("del-br", BRIDGE)
    # the restart after the bridge's loss is killed part way through restoring its two pods
    with pytest.raises(AssertionError, match="agent exited with -9"):
        bed.start_agent(env={CRASH_ENV: stage.value}, resync_seconds=0)
    assert f"crash point {stage.value} reached" in bed.agent.log()
    bed.start_agent(resync_seconds=0)
    _assert_consistent(bed)
    assert _ip_records(bed) == records
    assert not (bed.tmp / "state" / RESTORE_MARK).exists()
    for pod in ("live", other):
        assert bed.ofport(port_name("default", pod)) is not None, f"{pod} was not restored"
    bed.reinstall_flows(["live", other])  # as the controller does for the new bridge
    veth_crash_bed.live = _live_state(bed, "live")  # restored: a new interface and ofport
    _assert_live_untouched(bed, veth_crash_bed.live)
    bed.cni("DEL", other).ok()
    _assert_released(bed, other)
    assert _ip_records(bed) == {veth_crash_bed.live.ip}
