"""The agent's pure parts and its socket server: annotation names, datapath ids, keyed locks, prevResult
comparison, static-IP requests, and the CNI server on a real unix socket."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cni.errors import CniError
from cni.protocol import CniArgs, Command, Request, Response, call
from controller import annotations as controller_annotations
from ovsagent import kube, netns
from ovsagent.agent import KeyedLocks, OperationGate, _check_prev_result, _requested_ip
from ovsagent.config import AgentConfig, load_config
from ovsagent.node import (
    UNDERLAY_MEMORY,
    NodeSetupError,
    NodeState,
    UnderlayMemory,
    _recall_underlay,
    _remember_underlay,
    datapath_id_for,
    resolve_pod_cidr,
)
from ovsagent.server import CniServer, ServerError


def _request(command: Command = Command.STATUS, **config: Any) -> Request:
    return Request(
        command=command,
        container_id="c1" if command is not Command.STATUS else "",
        netns="/run/netns/p1" if command is not Command.STATUS else "",
        ifname="eth0" if command is not Command.STATUS else "",
        args=CniArgs(pod_namespace="default", pod_name="web-1", ip=config.pop("args_ip", None)),
        path=("/opt/cni/bin",),
        cni_version="1.1.0",
        config={"cniVersion": "1.1.0", "name": "sluice", **config},
        timeout_seconds=5.0,
    )


def test_annotation_names_match_the_controllers() -> None:
    assert kube.NODE_TUNNEL_IP == controller_annotations.NODE_TUNNEL_IP
    assert kube.NODE_GATEWAY_OFPORT == controller_annotations.NODE_GATEWAY_OFPORT
    assert kube.NODE_TUNNEL_OFPORT == controller_annotations.NODE_TUNNEL_OFPORT
    assert kube.NODE_DATAPATH_ID == controller_annotations.NODE_DATAPATH_ID
    assert kube.POD_PORT_NAME == controller_annotations.POD_PORT_NAME
    assert kube.NETWORK_STATUS == controller_annotations.NETWORK_STATUS


def test_datapath_id_is_deterministic_16_hex_digits_per_node() -> None:
    a = datapath_id_for("node-1")
    assert a == datapath_id_for("node-1") != datapath_id_for("node-2")
    assert len(a) == 16 and int(a, 16) != 0


def test_keyed_locks_serialize_one_key_and_not_others() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def hold_a() -> None:
        with locks.hold("a"):
            inside.set()
            release.wait(5)
            order.append("first a done")

    t = threading.Thread(target=hold_a)
    t.start()
    assert inside.wait(5)
    with locks.hold("b", ""):  # another key: not blocked
        order.append("b")

    def hold_a_again() -> None:
        with locks.hold("a"):
            order.append("second a")

    second = threading.Thread(target=hold_a_again)
    second.start()
    time.sleep(0.1)
    assert order == ["b"]  # the second holder of "a" waits
    release.set()
    t.join(5)
    second.join(5)
    assert order == ["b", "first a done", "second a"]


def test_operation_gate_resync_waits_for_operations_and_holds_new_ones_back() -> None:
    gate = OperationGate()
    order: list[str] = []
    in_op = threading.Event()
    finish_op = threading.Event()

    def operation() -> None:
        with gate.shared():
            in_op.set()
            finish_op.wait(5)
            order.append("op done")

    def resync() -> None:
        with gate.exclusive():
            order.append("resync")

    def late_operation() -> None:
        with gate.shared():
            order.append("late op")

    first = threading.Thread(target=operation)
    first.start()
    assert in_op.wait(5)
    with gate.shared():  # operations run together
        order.append("second op")
    waiting = threading.Thread(target=resync)
    waiting.start()
    deadline = time.monotonic() + 5
    while not gate._waiting:  # the resync is queued behind the running operation
        assert time.monotonic() < deadline
        time.sleep(0.01)
    late = threading.Thread(target=late_operation)
    late.start()
    time.sleep(0.1)
    assert order == ["second op"]  # neither the resync nor the late operation got in
    finish_op.set()
    for t in (first, waiting, late):
        t.join(5)
    assert order == ["second op", "op done", "resync", "late op"]


def test_keyed_locks_forget_unused_keys() -> None:
    locks = KeyedLocks()
    with locks.hold("x", "y"):
        assert len(locks) == 2
    assert len(locks) == 0


PREV = {
    "interfaces": [
        {"name": "web1-1234"},
        {"name": "eth0", "mac": "0a:58:64:40:01:05", "sandbox": "/run/netns/p1"},
    ],
    "ips": [{"address": "100.64.1.5/24", "gateway": "100.64.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.1.1"}],
}


def test_prev_result_matching_the_record_has_no_problems() -> None:
    assert _check_prev_result(PREV, "eth0", "/run/netns/p1", ipaddress.IPv4Interface("100.64.1.5/24")) == []


def test_prev_result_differences_are_named() -> None:
    problems = _check_prev_result(PREV, "net1", "/run/netns/other", ipaddress.IPv4Interface("100.64.1.6/24"))
    text = "; ".join(problems)
    assert "'eth0' is not 'net1'" in text
    assert "/run/netns/other" in text
    assert "100.64.1.5/24 differs from the recorded 100.64.1.6/24" in text
    assert "MAC 0a:58:64:40:01:05 is not 0a:58:64:40:01:06" in text
    assert "no IP address" in "; ".join(_check_prev_result({}, "eth0", "", None))


def test_static_ip_comes_from_runtime_config_then_cni_args() -> None:
    assert _requested_ip(
        _request(Command.ADD, runtimeConfig={"ips": ["100.64.1.9/24"]}, args_ip="100.64.1.8")
    ) == ("100.64.1.9/24")
    assert _requested_ip(_request(Command.ADD, args_ip="100.64.1.8")) == "100.64.1.8"
    assert _requested_ip(_request(Command.ADD)) is None
    with pytest.raises(CniError) as info:
        _requested_ip(_request(Command.ADD, runtimeConfig={"ips": ["fd00::5/64"]}))
    assert info.value.code == 7


# ---- the server, on a real unix socket ---------------------------------------------------------


def test_server_socket_is_0600_and_serves_in_parallel(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cni.sock"
    barrier = threading.Barrier(3, timeout=5)

    def handler(request: Request) -> Response:
        barrier.wait()  # three requests in flight at once, or this times out
        return Response.success(None)

    server = CniServer(path, handler).start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        results: list[Response] = []
        threads = [
            threading.Thread(target=lambda: results.append(call(str(path), _request(), 10.0)))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert [r.ok for r in results] == [True, True, True]
    finally:
        server.stop()
    assert not path.exists()


def test_server_answers_garbage_with_a_decoding_error(tmp_path: Path) -> None:
    path = tmp_path / "cni.sock"
    server = CniServer(path, lambda r: Response.success(None)).start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(b"not json\n")
            reply = s.makefile("rb").readline()
        assert b'"code": 6' in reply or b'"code":6' in reply
    finally:
        server.stop()


def test_server_replaces_a_stale_socket_but_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cni.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    server = CniServer(path, lambda r: Response.success(None)).start()
    try:
        assert call(str(path), _request(), 5.0).ok
    finally:
        server.stop()
    path.write_text("precious")
    with pytest.raises(ServerError, match="not a socket"):
        CniServer(path, lambda r: Response.success(None)).start()
    assert path.read_text() == "precious"


# ---- the Kubernetes seam, with a fake --------------------------------------------------------


class FakeKube:
    """A `KubeApi` holding one Node in memory."""

    def __init__(self, pod_cidr: str | None) -> None:
        self.node = kube.NodeInfo("node-1", pod_cidr)
        self.patches: list[dict[str, str | None]] = []

    def get_node(self, name: str) -> kube.NodeInfo:
        if name != self.node.name:
            raise kube.NotFound(f"get Node {name}: not found", 404)
        return self.node

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        self.patches.append(dict(annotations))

    def list_pods_on_node(self, node: str) -> list[kube.PodInfo]:
        return []

    def get_pod(self, namespace: str, name: str) -> kube.PodInfo:
        raise kube.NotFound(f"get Pod {namespace}/{name}: not found", 404)

    def patch_pod_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        raise kube.NotFound(f"patch Pod {namespace}/{name}: not found", 404)


def _config(**values: Any) -> AgentConfig:
    return load_config(AgentConfig, {"node_name": "node-1", "metrics_address": "", **values}, {}, "")


def test_pod_cidr_comes_from_the_node_unless_overridden() -> None:
    fake: kube.KubeApi = FakeKube("100.64.1.0/24")
    assert resolve_pod_cidr(_config(), fake) == ipaddress.IPv4Network("100.64.1.0/24")
    assert resolve_pod_cidr(_config(pod_cidr_override="100.64.9.0/24"), fake) == ipaddress.IPv4Network(
        "100.64.9.0/24"
    )
    assert resolve_pod_cidr(_config(), FakeKube(None)) is None
    with pytest.raises(NodeSetupError, match=re.escape("podCIDR '100.64.1.5/24' is invalid")):
        resolve_pod_cidr(_config(), FakeKube("100.64.1.5/24"))
    with pytest.raises(kube.NotFound):
        resolve_pod_cidr(_config(node_name="node-2"), fake)


def test_the_underlay_record_round_trips_and_a_bad_one_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(state_dir=str(tmp_path / "state"), underlay_interface="uplink0")
    memory = UnderlayMemory(
        "uplink0",
        (ipaddress.IPv4Interface("198.18.0.11/24"),),
        (netns.GatewayRoute(ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("198.18.0.1")),),
    )
    assert _recall_underlay(config) is None  # nothing recorded yet
    _remember_underlay(config, memory)  # creates state_dir
    path = tmp_path / "state" / UNDERLAY_MEMORY
    assert json.loads(path.read_text()) == {
        "interface": "uplink0",
        "addresses": ["198.18.0.11/24"],
        "routes": [{"dst": "0.0.0.0/0", "gateway": "198.18.0.1"}],
    }
    assert _recall_underlay(config) == memory
    # another interface's record is not put on this one
    assert _recall_underlay(_config(state_dir=str(tmp_path / "state"), underlay_interface="eth1")) is None
    assert "records the underlay of uplink0, not of eth1" in caplog.text
    for bad in (
        b"{",
        b'{"interface": "uplink0"}',
        b'{"interface": "uplink0", "addresses": ["nope"], "routes": []}',
    ):
        path.write_bytes(bad)
        caplog.clear()
        assert _recall_underlay(config) is None
        assert "cannot read the recorded underlay addresses" in caplog.text, bad


def test_node_state_annotations_are_what_the_controller_reads() -> None:
    state = NodeState(
        pod_cidr=ipaddress.IPv4Network("100.64.1.0/24"),
        gateway=ipaddress.IPv4Interface("100.64.1.1/24"),
        gateway_ofport=2,
        tunnel_ofport=10,
        tunnel_ip=ipaddress.IPv4Address("198.18.0.11"),
        datapath_id="00000000000000a1",
        mtu=1442,
    )
    assert state.annotations() == {
        controller_annotations.NODE_TUNNEL_IP: "198.18.0.11",
        controller_annotations.NODE_GATEWAY_OFPORT: "2",
        controller_annotations.NODE_TUNNEL_OFPORT: "10",
        controller_annotations.NODE_DATAPATH_ID: "00000000000000a1",
    }


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(kube.KubeError, match=r"cannot load the kubeconfig .*missing"):
        kube.Kube(tmp_path / "missing")


def test_agent_process_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("node_name: node-1\nflow_wait: 3\n")
    agent = Path(sys.executable).parent / "sluice-agent"
    proc = subprocess.run([str(agent), "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "flow_wait" in proc.stderr and "unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_crash_hook_is_a_no_op_unless_asked_and_refuses_unknown_stages() -> None:
    from ovsagent.crashpoints import CRASH_ENV, CrashConfigError, Stage, crash_hook_from_env, no_crash

    assert crash_hook_from_env({}) is no_crash
    assert crash_hook_from_env({CRASH_ENV: ""}) is no_crash
    armed = crash_hook_from_env({CRASH_ENV: "del:ip-released"})
    armed(Stage.ADD_IP_RESERVED)  # another stage: this process lives on
    with pytest.raises(CrashConfigError, match="add:ip-reserved"):
        crash_hook_from_env({CRASH_ENV: "add:nowhere"})
    # every stage name is "<operation>:<step>", and the ones of each operation are in order
    assert [s.value.split(":")[0] for s in Stage] == ["add"] * 5 + ["del"] * 4 + ["restore"] * 2
