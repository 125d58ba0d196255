"""ovsagent.ovsdb against a real ovsdb-server + ovs-vswitchd: bridge set-up, node ports, pod ports."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from lab.ovs import OvsNode
from lab.procs import run
from ovsagent.naming import PodIdentity
from ovsagent.ovsdb import Connection, OvsdbError, PortSpec, _PortChange
from tests.agent.conftest import BRIDGE, DATAPATH_ID, GATEWAY_PORT, AgentNode
from tests.agent.harness import vswitchd_stopped
from tests.conftest import OvsNodeFactory
from tests.support import wait_until

DB = "Open_vSwitch"
MARK_FLOW = "table=0,priority=7,ip,nw_dst=100.64.9.9,actions=drop"


def _vsctl_get(node: OvsNode, table: str, record: str, column: str) -> str:
    return node.vsctl("get", table, record, column).strip()


def _controller_column(node: OvsNode, column: str) -> str:
    return node.vsctl("--bare", f"--columns={column}", "list", "Controller").strip()


def _versions(node: OvsNode, table: str) -> dict[str, str]:
    """Return name -> `_version` of every row of `table` (a row's version changes on any write)."""
    query = [DB, {"op": "select", "table": table, "where": [], "columns": ["_uuid", "_version"]}]
    out = run(["ovsdb-client", "transact", node.db_target, json.dumps(query)]).stdout
    return {row["_uuid"][1]: row["_version"][1] for row in json.loads(out)[0]["rows"]}


def _all_versions(node: OvsNode) -> dict[str, dict[str, str]]:
    return {t: _versions(node, t) for t in ("Bridge", "Port", "Interface", "Controller")}


def test_ensure_bridge_builds_the_bridge_as_asked(agent_node: AgentNode) -> None:
    node = agent_node.node
    assert _vsctl_get(node, "Bridge", BRIDGE, "datapath_type") == "netdev"
    assert _vsctl_get(node, "Bridge", BRIDGE, "fail_mode") == "secure"
    assert _vsctl_get(node, "Bridge", BRIDGE, "protocols") == "[OpenFlow13, OpenFlow15]"
    # vswitchd adopted the requested datapath id, and the bridge speaks OpenFlow 1.3/1.5
    assert _vsctl_get(node, "Bridge", BRIDGE, "datapath_id") == f'"{DATAPATH_ID}"'
    assert node.dump_flows(BRIDGE) == []  # fail_mode=secure: no NORMAL flow
    record = agent_node.ovsdb.bridge(BRIDGE)
    assert record is not None and record.datapath_id == DATAPATH_ID
    assert GATEWAY_PORT in record.ports


def test_ensure_bridge_again_changes_nothing_and_keeps_flows(agent_node: AgentNode) -> None:
    node, ovsdb = agent_node.node, agent_node.ovsdb

    def ensure(probe_ms: int = 5000, backoff_ms: int = 1000) -> bool:
        return ovsdb.ensure_bridge(
            BRIDGE,
            datapath_type="netdev",
            protocols=("OpenFlow13", "OpenFlow15"),
            datapath_id=DATAPATH_ID,
            controllers=["tcp:127.0.0.1:6653"],
            inactivity_probe_ms=probe_ms,
            max_backoff_ms=backoff_ms,
            external_ids={"sluice.io/node": "node-1"},
        )

    # adding the controller is a change (and flushes flows: vswitchd does that when a bridge
    # gains its first controller), so add the marker flow after it
    assert ensure() is True
    # the reconnect backoff came with the Controller row (OVS default: 8 s)
    assert _controller_column(node, "max_backoff") == "1000"
    node.add_flows(BRIDGE, MARK_FLOW + "\n")
    before = _all_versions(node)

    assert ensure() is False

    assert _all_versions(node) == before  # not one row written
    assert any("nw_dst=100.64.9.9" in f for f in node.dump_flows(BRIDGE))

    # a real change (the probe interval) is applied in place: same Controller row, flows kept
    uuid_before = node.vsctl("--columns=_uuid", "list", "Controller")
    assert ensure(probe_ms=7000, backoff_ms=2000) is True
    assert node.vsctl("--columns=_uuid", "list", "Controller") == uuid_before
    assert _controller_column(node, "inactivity_probe") == "7000"
    assert _controller_column(node, "max_backoff") == "2000"
    assert any("nw_dst=100.64.9.9" in f for f in node.dump_flows(BRIDGE))
    assert _vsctl_get(node, "Bridge", BRIDGE, "external_ids") == '{"sluice.io/node"=node-1}'


def test_ensure_bridge_refuses_a_bad_datapath_id(agent_node: AgentNode) -> None:
    with pytest.raises(ValueError, match="16 hex digits"):
        agent_node.ovsdb.ensure_bridge(BRIDGE, datapath_type="netdev", datapath_id="xyz")


def test_gateway_and_tunnel_ports_get_their_fixed_ofports(agent_node: AgentNode) -> None:
    node, ovsdb = agent_node.node, agent_node.ovsdb
    assert node.ofport(GATEWAY_PORT) == 2
    assert _vsctl_get(node, "Interface", GATEWAY_PORT, "type") == "internal"
    assert _vsctl_get(node, "Interface", GATEWAY_PORT, "mac_in_use") == '"0a:58:64:40:01:01"'

    assert ovsdb.ensure_tunnel_port(BRIDGE) == 10
    assert _vsctl_get(node, "Interface", "sluice-tun0", "type") == "geneve"
    assert _vsctl_get(node, "Interface", "sluice-tun0", "options") == "{key=flow, remote_ip=flow}"
    before = _all_versions(node)
    # idempotent: nothing rewritten
    assert ovsdb.ensure_tunnel_port(BRIDGE) == 10
    assert ovsdb.ensure_internal_port(BRIDGE, GATEWAY_PORT, ofport_request=2, mac="0a:58:64:40:01:01") == 2
    assert _all_versions(node) == before


def test_pod_ports_are_added_and_deleted_in_batches(agent_node: AgentNode) -> None:
    ovsdb = agent_node.ovsdb
    specs = [PortSpec(f"bp{i}", "internal", external_ids={"sluice.io/name": f"p{i}"}) for i in range(5)]
    ofports = ovsdb.add_pod_ports(BRIDGE, specs)
    assert sorted(ofports) == [f"bp{i}" for i in range(5)]
    assert len(set(ofports.values())) == 5 and all(p > 0 for p in ofports.values())
    # adding again is a no-op that returns the same ofports
    assert ovsdb.add_pod_ports(BRIDGE, specs) == ofports
    assert ovsdb.wait_for_ofport("bp3", timeout=1.0) == ofports["bp3"]

    assert ovsdb.del_ports(["bp1", "bp2", "never-there"]) == ["bp1", "bp2"]
    assert ovsdb.del_ports(["bp1"]) == []
    names = {p.name for p in ovsdb.ports_by_external_ids()}
    assert names == {"bp0", "bp3", "bp4"}
    assert agent_node.node.vsctl("list-ports", BRIDGE).split() == sorted(["bp0", "bp3", "bp4", GATEWAY_PORT])


def test_a_port_vswitchd_cannot_open_is_reported(agent_node: AgentNode) -> None:
    # a "system" interface with no such device: vswitchd sets ofport -1 and an error
    with pytest.raises(OvsdbError, match="could not open nosuchdev0"):
        agent_node.ovsdb.add_pod_ports(BRIDGE, [PortSpec("nosuchdev0")], timeout=5.0)
    with pytest.raises(OvsdbError, match="bridge br-nope does not exist"):
        agent_node.ovsdb.add_pod_ports("br-nope", [PortSpec("x0", "internal")])


def test_a_new_connection_finds_the_pods_by_external_ids(agent_node: AgentNode) -> None:
    pods = [agent_node.pod(f"web-{i}", f"100.64.1.{10 + i}")[1] for i in range(3)]
    specs = [PortSpec(p.port_name, "internal", external_ids=p.external_ids()) for p in pods]
    ofports = agent_node.ovsdb.add_pod_ports(BRIDGE, specs)
    agent_node.ovsdb.close()  # the agent "restarts"

    with Connection(agent_node.node.db_target) as fresh:
        found = fresh.ports_by_external_ids()
    assert [r.name for r in found] == sorted(p.port_name for p in pods)
    assert {PodIdentity.from_external_ids(r.external_ids) for r in found} == set(pods)
    assert {r.name: r.ofport for r in found} == ofports
    assert all(r.bridge == BRIDGE for r in found)


def test_connection_to_a_missing_server_fails_clearly() -> None:
    with pytest.raises(OvsdbError, match=r"cannot connect|no OVSDB replica"):
        Connection("unix:/nonexistent/sluice-test/db.sock", timeout=0.5).start()


def test_ensure_bridge_creates_from_nothing_with_a_controller(ovs_node_factory: OvsNodeFactory) -> None:
    node = ovs_node_factory("node-2", bridge=None)
    with Connection(node.db_target) as ovsdb:
        assert ovsdb.bridge("br-x") is None
        assert ovsdb.ensure_bridge(
            "br-x", datapath_type="netdev", controllers=["tcp:127.0.0.1:6653"], inactivity_probe_ms=3000
        )
        record = ovsdb.bridge("br-x")
        assert record is not None
        assert record.controllers == ("tcp:127.0.0.1:6653",)
        assert record.fail_mode == "secure"
        assert _controller_column(node, "connection_mode") == "out-of-band"
        assert ovsdb.del_bridge("br-x") is True
        assert ovsdb.del_bridge("br-x") is False
        assert node.vsctl("list-br").strip() == ""


def test_concurrent_callers_each_get_their_ports(agent_node: AgentNode) -> None:
    ovsdb = agent_node.ovsdb

    def add(i: int) -> dict[str, int]:
        specs = [
            PortSpec(f"c{i}-{j}", "internal", external_ids={"sluice.io/name": f"c{i}"}) for j in range(2)
        ]
        return ovsdb.add_pod_ports(BRIDGE, specs)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(add, range(8)))
    ofports = [p for r in results for p in r.values()]
    assert len(ofports) == 16 and len(set(ofports)) == 16
    assert len(ovsdb.ports_by_external_ids()) == 16


def _add_port_transactions(node: OvsNode) -> list[str]:
    """The comments of the agent's port transactions that add ports, oldest first."""
    return [c for c in _port_transactions(node) if "add ports [" in c]


def _queued_behind_a_busy_idl_thread(ovsdb: Connection, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` concurrently while the IDL thread is held busy, until all have queued their
    requests; then let it go. Returns their results (or exceptions), in order."""
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=len(calls) + 1) as pool:
        blocker = pool.submit(ovsdb._call, lambda: gate.wait(10), 15)
        futures = [pool.submit(call) for call in calls]
        deadline = time.monotonic() + 10
        while len(ovsdb._port_changes) < len(calls) and time.monotonic() < deadline:
            time.sleep(0.005)
        queued = len(ovsdb._port_changes)
        gate.set()
        blocker.result()
        assert queued == len(calls), f"only {queued} of {len(calls)} requests queued"
        return [f.exception() or f.result() for f in futures]


def test_a_caller_that_gives_up_on_vswitchd_leaves_nothing_waiting(agent_node: AgentNode) -> None:
    node, ovsdb = agent_node.node, agent_node.ovsdb
    with vswitchd_stopped(node):  # ovsdb-server commits; nobody opens the port
        gave_up = r"'slow0'\] to br-int: ovs-vswitchd did not open them within 0.5s"
        with pytest.raises(OvsdbError, match=gave_up):
            ovsdb.add_pod_ports(BRIDGE, [PortSpec("slow0", "internal")], timeout=0.5)
        # the abandoned caller's waiter goes at the IDL loop's next pass, though its port is
        # still not open: nothing accumulates while vswitchd is stuck
        ovsdb._call(lambda: None, 1.0)
        assert ovsdb._call(lambda: list(ovsdb._waiters), 1.0) == []
    # the port was committed: once vswitchd runs again, a retry finds it open
    assert ovsdb.add_pod_ports(BRIDGE, [PortSpec("slow0", "internal")], timeout=5.0)["slow0"] > 0


def test_concurrent_adds_share_one_transaction(agent_node: AgentNode) -> None:
    ovsdb = agent_node.ovsdb
    before = _add_port_transactions(agent_node.node)

    def add(i: int) -> Callable[[], dict[str, int]]:
        return lambda: ovsdb.add_pod_ports(BRIDGE, [PortSpec(f"g{i}", "internal")])

    results = _queued_behind_a_busy_idl_thread(ovsdb, [add(i) for i in range(8)])
    assert all(isinstance(r, dict) for r in results), results
    ofports = [r[f"g{i}"] for i, r in enumerate(results)]
    assert len(set(ofports)) == 8 and all(p > 0 for p in ofports)
    [shared] = _add_port_transactions(agent_node.node)[len(before) :]
    assert all(f"'g{i}'" in shared for i in range(8)), shared


def test_port_adds_wait_together_while_vswitchd_catches_up(agent_node: AgentNode) -> None:
    node, ovsdb = agent_node.node, agent_node.ovsdb
    before = _add_port_transactions(node)
    # the first add commits, and vswitchd stays behind
    with vswitchd_stopped(node) as resume, ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(ovsdb.add_pod_ports, BRIDGE, [PortSpec("h0", "internal")])
        wait_until(lambda: len(_add_port_transactions(node)) == len(before) + 1, 5, "h0's transaction")
        rest = [pool.submit(ovsdb.add_pod_ports, BRIDGE, [PortSpec(f"h{i}", "internal")]) for i in (1, 2, 3)]
        # held, not committed: a caller giving up meanwhile says what it waited for
        with pytest.raises(OvsdbError, match="ovs-vswitchd did not apply the changes before them within"):
            ovsdb.add_pod_ports(BRIDGE, [PortSpec("h9", "internal")], timeout=0.3)
        assert len(_add_port_transactions(node)) == len(before) + 1
        resume()
        ofports = [f.result(10)[f"h{i}"] for i, f in enumerate([first, *rest])]
    assert len(set(ofports)) == 4 and all(p > 0 for p in ofports)
    # vswitchd reconfigured twice, not four times: h1-h3 went in one transaction
    first_txn, shared = _add_port_transactions(node)[len(before) :]
    assert "'h0'" in first_txn and all(f"'h{i}'" in shared for i in (1, 2, 3)), shared
    assert ovsdb.port("h9") is None


def test_deletions_and_adds_held_meanwhile_share_one_transaction(agent_node: AgentNode) -> None:
    node, ovsdb = agent_node.node, agent_node.ovsdb
    ovsdb.add_pod_ports(BRIDGE, [PortSpec(f"d{i}", "internal") for i in range(3)])
    before = _port_transactions(node)
    with vswitchd_stopped(node) as resume, ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(ovsdb.add_pod_ports, BRIDGE, [PortSpec("e0", "internal")])
        wait_until(lambda: len(_port_transactions(node)) == len(before) + 1, 5, "e0's transaction")
        dels = [pool.submit(ovsdb.del_ports, [f"d{i}"]) for i in range(3)]
        add = pool.submit(ovsdb.add_pod_ports, BRIDGE, [PortSpec("e1", "internal")])
        nothing = pool.submit(ovsdb.del_ports, ["never-there"])
        wait_until(lambda: len(ovsdb._port_changes) == 5, 5, "all five held behind e0")
        resume()
        assert first.result(10)["e0"] > 0 and add.result(10)["e1"] > 0
        assert [d.result(10) for d in dels] == [["d0"], ["d1"], ["d2"]]
        assert nothing.result(10) == []
    [shared] = _port_transactions(node)[len(before) + 1 :]
    assert all(name in shared for name in ("'d0'", "'d1'", "'d2'", "'e1'", "'never-there'")), shared
    ports = set(node.vsctl("list-ports", BRIDGE).split())
    assert {"e0", "e1"} <= ports and not ports & {"d0", "d1", "d2"}


def _port_transactions(node: OvsNode) -> list[str]:
    """The comments of the agent's port add/delete transactions in the database log, oldest first."""
    comments = []
    for line in node.paths.db.read_text().splitlines():
        if line.startswith("{") and "ports [" in line and "sluice-agent:" in line:
            comments.append(json.loads(line)["_comment"])
    return comments


def test_a_bad_request_in_a_shared_transaction_fails_alone(agent_node: AgentNode) -> None:
    ovsdb = agent_node.ovsdb
    same = PortSpec("dup0", "internal")
    results = _queued_behind_a_busy_idl_thread(
        ovsdb,
        [
            lambda: ovsdb.add_pod_ports(BRIDGE, [PortSpec("ok0", "internal")]),
            lambda: ovsdb.add_pod_ports("br-nope", [PortSpec("lost0", "internal")]),
            lambda: ovsdb.add_pod_ports(BRIDGE, [same]),
            lambda: ovsdb.add_pod_ports(BRIDGE, [same]),  # same port again: waits for the next batch
        ],
    )
    assert isinstance(results[0], dict) and results[0]["ok0"] > 0
    assert isinstance(results[1], OvsdbError) and "bridge br-nope does not exist" in str(results[1])
    assert isinstance(results[2], dict) and results[2] == results[3]
    assert ovsdb.port("lost0") is None


def test_calls_after_close_fail_clearly_and_start_reconnects(agent_node: AgentNode) -> None:
    agent_node.ovsdb.close()
    with pytest.raises(OvsdbError, match="not started"):
        agent_node.ovsdb.port(GATEWAY_PORT)
    agent_node.ovsdb.start()
    record = agent_node.ovsdb.port(GATEWAY_PORT)
    assert record is not None and record.ofport == 2


def test_lookups_follow_other_clients_and_failed_transactions(agent_node: AgentNode) -> None:
    # The IDL thread indexes rows by name; the index must follow every change of the replica.
    node, ovsdb = agent_node.node, agent_node.ovsdb
    node.vsctl("add-port", BRIDGE, "ext0", "--", "set", "Interface", "ext0", "type=internal")
    wait_until(lambda: (r := ovsdb.port("ext0")) is not None and r.bridge == BRIDGE, 5, "ext0 in the replica")
    node.vsctl("add-br", "br-other", "--", "set", "Bridge", "br-other", "datapath_type=netdev")
    node.vsctl("add-port", "br-other", "ext1", "--", "set", "Interface", "ext1", "type=internal")
    wait_until(
        lambda: (r := ovsdb.port("ext1")) is not None and r.bridge == "br-other", 5, "ext1 on br-other"
    )
    with pytest.raises(OvsdbError, match="port ext1 exists on bridge br-other, not br-int"):
        ovsdb.add_pod_ports(BRIDGE, [PortSpec("ext1", "internal")])
    node.vsctl("del-port", "ext0")
    wait_until(lambda: ovsdb.port("ext0") is None, 5, "ext0 gone from the replica")

    # An index built during a transaction does not outlive it: here a deletion in the transaction
    # is followed by a lookup that finds the index stale (as when an update arrived since the
    # last one) and rebuilds it without the deleted port; then the transaction fails.
    ovsdb.add_pod_ports(BRIDGE, [PortSpec("keep0", "internal")])

    def delete_then_fail(txn: Any) -> bool:
        assert ovsdb._build_port_del(_PortChange(None, (), ("keep0",), Future(), 0.0))
        ovsdb._forget_derived()
        assert ovsdb._find("Port", "keep0") is None and ovsdb._find("Interface", "keep0") is None
        raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError, match="the build failed"):
        ovsdb._transact(delete_then_fail, "test: delete then fail", 5.0)
    record = ovsdb.port("keep0")
    assert record is not None and record.bridge == BRIDGE and record.ofport is not None and record.ofport > 0
    assert "keep0" in node.vsctl("list-ports", BRIDGE).split()


def test_an_ofport_request_outside_the_openflow_range_is_refused() -> None:
    with pytest.raises(ValueError, match="ofport_request 70000 is not in 1-65279"):
        PortSpec("bad0", "internal", ofport_request=70000)
    with pytest.raises(ValueError, match="ofport_request 0 is not in 1-65279"):
        PortSpec("bad0", "internal", ofport_request=0)
    assert PortSpec("ok0", "internal", ofport_request=65279).ofport_request == 65279
