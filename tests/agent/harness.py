"""A node for agent-process tests: real OVS in a namespace, the lab API server and the real `sluice-agent`
process inside that namespace, and a kubelet stand-in that execs the real `sluice-cni` binary.

The API server must be reachable from the agent, which runs inside the node's namespace, so the
in-process `ApiServer` is started from a thread that has entered that namespace: its listening
socket lives there, on the node's loopback. The test's own client calls run on such a thread too
(`InNetns`); nothing is added to the machine's own namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from flows.cluster import Cluster, NodeSpec, PodSpec
from flows.compiler import compile_node
from flows.ofctl import render_flows
from lab import netns as lab_netns
from lab.apiserver import ApiServer
from lab.ovs import OvsNode
from tests.cni.conftest import PluginRun, plugin_path, run_plugin
from tests.conftest import NETNS_PREFIX, OVS_PREFIX, _teardown
from tests.support import meta, require_root_and_ovs

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NODE = "node-1"
POD_CIDR = ipaddress.IPv4Network("100.64.1.0/24")
GATEWAY = ipaddress.IPv4Address("100.64.1.1")
UNDERLAY = ipaddress.IPv4Interface("198.18.0.11/24")
UNDERLAY_IF = "uplink0"
BRIDGE = "br-int"
FLOW_WAIT = 4.0
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def vswitchd_stopped(node: OvsNode) -> Iterator[Callable[[], None]]:
    """Hold ovs-vswitchd stopped (SIGSTOP: ovsdb-server keeps committing, nobody applies the
    changes) for the block; yields a function that lets it run again early. Always resumed."""
    vswitchd = node.pids.vswitchd
    assert vswitchd is not None
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        yield lambda: os.kill(vswitchd, signal.SIGCONT)
    finally:
        os.kill(vswitchd, signal.SIGCONT)


class InNetns:
    """Worker threads (one unless asked) that entered a network namespace; `run(fn, ...)` calls
    `fn` on one of them, and so does `submit`, without waiting. Processes they start live there too."""

    def __init__(self, path: str, workers: int = 1) -> None:
        def enter() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({path}) failed")
            finally:
                os.close(fd)

        self._pool = ThreadPoolExecutor(max_workers=workers, initializer=enter)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Return fn(*args, **kwargs) run inside the namespace."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Start fn(*args, **kwargs) inside the namespace; return its future."""
        return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=True)


@dataclass
class AgentProcess:
    """A running `sluice-agent` inside the node's namespace."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    socket_path: Path

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the agent (by PID), wait, return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        """The agent's log so far."""
        return self.log_path.read_text(errors="replace")


@dataclass
class AgentBed:
    """One node: OVS, the API server, the agent process, and helpers acting as kubelet and controller."""

    node: OvsNode
    tmp: Path
    apiserver: ApiServer
    in_node: InNetns
    core: client.CoreV1Api
    netns_factory: Callable[..., lab_netns.Netns]
    interface_type: str
    node_name: str = NODE
    pod_cidr: ipaddress.IPv4Network = POD_CIDR
    agent: AgentProcess | None = None
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> its netns path

    @property
    def socket_path(self) -> Path:
        """The agent's CNI socket."""
        return self.tmp / "run" / "cni.sock"

    @property
    def ipam_dir(self) -> Path:
        """The agent's IPAM store."""
        return self.tmp / "state" / "ipam"

    def write_config(self, **overrides: Any) -> Path:
        """Write the agent config file (with `overrides`) and return its path."""
        kubeconfig = self.apiserver.write_kubeconfig(self.tmp / "kubeconfig")
        config: dict[str, Any] = {
            "node_name": self.node_name,
            "kubeconfig": str(kubeconfig),
            "cni_socket": str(self.socket_path),
            "state_dir": str(self.tmp / "state"),
            "bridge": BRIDGE,
            "datapath_type": "netdev",
            "interface_type": self.interface_type,
            "ovs_rundir": str(self.node.rundir),
            "ovsdb": self.node.db_target,
            "underlay_interface": UNDERLAY_IF,
            "flow_wait_seconds": FLOW_WAIT,
            "metrics_address": "",
            "log_level": "debug",
            **overrides,
        }
        path = self.tmp / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start_agent(
        self, *, wait_ready: bool = True, env: dict[str, str] | None = None, **overrides: Any
    ) -> AgentProcess:
        """Start `sluice-agent --config` inside the node's namespace; wait for STATUS 0 if asked.

        `env` adds environment variables (e.g. the crash-point hook `SLUICE_TEST_CRASH_AT`)."""
        config_path = self.write_config(**overrides)
        log_path = self.tmp / "agent.log"
        agent_bin = Path(sys.executable).parent / "sluice-agent"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.node.netns, str(agent_bin), "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={
                    **{
                        k: v
                        for k, v in os.environ.items()
                        if not k.startswith("SLUICE_AGENT_") and k != "SLUICE_TEST_CRASH_AT"
                    },
                    # The kubernetes client writes the kubeconfig's CA to a temporary file, which
                    # an agent killed with SIGKILL never removes: keep it inside the bed.
                    "TMPDIR": str(self.tmp),
                    **(env or {}),
                },
            )
        self.agent = AgentProcess(proc, config_path, log_path, self.socket_path)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited with {proc.returncode}:\n{self.agent.log()}")
            if self.socket_path.exists() and (not wait_ready or self.cni("STATUS").returncode == 0):
                return self.agent
            if time.monotonic() > deadline:
                raise AssertionError(f"agent not ready within 20s:\n{self.agent.log()}")
            time.sleep(0.1)

    # ---- kubelet stand-in ---------------------------------------------------------------------

    def create_pod(self, name: str, namespace: str = "default") -> str:
        """Create the Pod (bound to this node) and its sandbox namespace; return the netns path."""
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": self.node_name, "containers": [{"name": "main", "image": "busybox:1.36"}]},
        }
        self.in_node.run(self.core.create_namespaced_pod, namespace, body)
        ns = self.netns_factory()
        self.pods[name] = str(ns.path)
        return str(ns.path)

    def pod_uid(self, name: str, namespace: str = "default") -> str:
        """The Pod's uid."""
        pod = self.in_node.run(self.core.read_namespaced_pod, name, namespace)
        return str(meta(pod).uid)

    def annotations(self, name: str, namespace: str = "default") -> dict[str, str]:
        """The Pod's annotations."""
        pod = self.in_node.run(self.core.read_namespaced_pod, name, namespace)
        return dict(meta(pod).annotations or {})

    def node_annotations(self) -> dict[str, str]:
        """The Node's annotations."""
        node = self.in_node.run(self.core.read_node, self.node_name)
        return dict(meta(node).annotations or {})

    def cni(
        self,
        command: str,
        pod: str | None = None,
        *,
        container_id: str | None = None,
        ifname: str = "eth0",
        netns: str | None = None,
        version: str = "1.1.0",
        namespace: str = "default",
        args: str | None = None,
        **config: Any,
    ) -> PluginRun:
        """Exec the real plugin for `command` on `pod` the way a kubelet-driven runtime does."""
        env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
        if pod is not None:
            uid = self.pod_uid(pod, namespace) if args is None else ""
            env.update(
                CNI_CONTAINERID=container_id or f"c-{pod}",
                CNI_NETNS=self.pods.get(pod, "") if netns is None else netns,
                CNI_IFNAME=ifname,
                CNI_ARGS=args
                if args is not None
                else f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
                f"K8S_POD_INFRA_CONTAINER_ID={container_id or f'c-{pod}'};K8S_POD_UID={uid}",
            )
        stdin = {
            "cniVersion": version,
            "name": "sluice",
            "type": "sluice-cni",
            "agentSocket": str(self.socket_path),
            **config,
        }
        return run_plugin(plugin_path(), env, stdin)

    # ---- controller stand-in --------------------------------------------------------------------

    def ofport(self, port: str) -> int | None:
        """The port's ofport as OVSDB has it, or None while it has none."""
        raw = self.node.vsctl("--if-exists", "get", "Interface", port, "ofport").strip()
        return int(raw) if raw.lstrip("-").isdigit() and int(raw) > 0 else None

    def node_spec(self) -> NodeSpec:
        """This node as the controller sees it, from the annotations the agent published."""
        ann = self.node_annotations()
        return NodeSpec(
            self.node_name,
            self.pod_cidr,
            ipaddress.IPv4Address(ann["sluice.io/tunnel-ip"]),
            int(ann["sluice.io/gateway-ofport"]),
            int(ann["sluice.io/tunnel-ofport"]),
        )

    def pod_spec(self, pod: str) -> PodSpec:
        """A pod of this node as the controller sees it (IP from its annotation, ofport from OVSDB)."""
        from ovsagent.naming import port_name

        ofport = self.ofport(port_name("default", pod))
        ip = ipaddress.IPv4Address(_wait_annotation(self, pod))
        return PodSpec("default", pod, self.node_name, ip, ofport)

    def install_flows(self, pods: dict[str, tuple[str, ipaddress.IPv4Address, int]]) -> None:
        """Install the flows `flows/` compiles for this node and `pods` (name -> (port, ip, ofport))."""
        specs = tuple(
            PodSpec("default", name, self.node_name, ip, ofport) for name, (_, ip, ofport) in pods.items()
        )
        self.node.add_flows(
            BRIDGE, render_flows(compile_node(Cluster((self.node_spec(),), specs), self.node_name))
        )

    def reinstall_flows(self, pods: list[str]) -> None:
        """Install the flows of `pods` as they are now (address from the annotation, ofport from
        OVSDB), as the controller does for a bridge that came back or a restarted vswitchd."""
        from ovsagent.naming import port_name

        flows: dict[str, tuple[str, ipaddress.IPv4Address, int]] = {}
        for pod in pods:
            spec = self.pod_spec(pod)
            assert spec.ofport is not None, f"{pod} has no ofport"
            flows[pod] = (port_name("default", pod), spec.ip, spec.ofport)
        self.install_flows(flows)

    def agent_log(self) -> str:
        """The agent's log so far ("" before any agent was started): a wait's detail."""
        return self.agent.log() if self.agent is not None else ""

    def add_ready(self, pod: str, **kwargs: Any) -> tuple[PluginRun, float]:
        """ADD `pod` while acting as the controller: once its port is on br-int, install its flows.

        Returns the plugin run and how long ADD took after the flows were installed.
        """
        from ovsagent.naming import port_name

        port = port_name("default", pod)
        result: dict[str, PluginRun] = {}
        thread = threading.Thread(target=lambda: result.setdefault("run", self.cni("ADD", pod, **kwargs)))
        thread.start()
        try:
            deadline = time.monotonic() + FLOW_WAIT
            ofport = None
            while ofport is None and time.monotonic() < deadline and thread.is_alive():
                ofport = self.ofport(port)
                if ofport is None:
                    time.sleep(0.02)
            assert ofport is not None, f"port {port} never got an ofport"
            status = _wait_annotation(self, pod)
            ip = ipaddress.IPv4Address(status)
            self.install_flows({pod: (port, ip, ofport)})
            installed = time.monotonic()
        finally:
            thread.join(30)
        return result["run"], time.monotonic() - installed


def _wait_annotation(bed: AgentBed, pod: str) -> str:
    import json

    deadline = time.monotonic() + FLOW_WAIT
    while time.monotonic() < deadline:
        ann = bed.annotations(pod)
        if "k8s.v1.cni.cncf.io/network-status" in ann:
            return str(json.loads(ann["k8s.v1.cni.cncf.io/network-status"])[0]["ips"][0])
        time.sleep(0.02)
    raise AssertionError(f"pod {pod} never got its network-status annotation")


@contextlib.contextmanager
def agent_bed(
    ovs_node_factory: Callable[..., OvsNode],
    netns_factory: Callable[..., lab_netns.Netns],
    interface_type: str = "veth",
    pod_cidr: str | None = str(POD_CIDR),
    *,
    node_name: str = NODE,
    underlay: ipaddress.IPv4Interface = UNDERLAY,
    peer: tuple[str, str] | None = None,
) -> Iterator[AgentBed]:
    """Yield a node with OVS (no bridge yet), an underlay interface, the API server with the Node.

    The underlay interface `uplink0` is one end of a veth pair whose other end goes to `peer`
    (netns name, ifname), or stays inside the node when `peer` is None.
    """
    node = ovs_node_factory(node_name, bridge=None)
    # the kernel here has no dummy module: the underlay is a veth
    peer_ns, peer_if = peer or (node.netns, "uplink0p")
    lab_netns.create_veth(node.netns, UNDERLAY_IF, peer_ns, peer_if)
    lab_netns.Netns(node.netns).ip("addr", "add", str(underlay), "dev", UNDERLAY_IF)
    lab_netns.Netns(node.netns).ip("link", "set", UNDERLAY_IF, "up")
    lab_netns.Netns(peer_ns).ip("link", "set", peer_if, "up")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-agent-"))
    in_node = InNetns(f"/run/netns/{node.netns}")
    apiserver = in_node.run(ApiServer("127.0.0.1", 0).start)
    api_client = in_node.run(apiserver.api_client)
    cidr = ipaddress.IPv4Network(pod_cidr) if pod_cidr else POD_CIDR
    bed = AgentBed(
        node,
        tmp,
        apiserver,
        in_node,
        client.CoreV1Api(api_client),
        netns_factory,
        interface_type,
        node_name,
        cidr,
    )
    try:
        spec = {"podCIDR": pod_cidr} if pod_cidr else {}
        in_node.run(bed.core.create_node, {"metadata": {"name": node_name}, "spec": spec})
        yield bed
    finally:
        try:
            if bed.agent is not None:
                rc = bed.agent.stop()
                assert rc == 0, f"agent exited with {rc}:\n{bed.agent.log()}"
                assert not bed.socket_path.exists(), "the agent left its socket behind"
        finally:
            in_node.run(api_client.close)
            in_node.run(apiserver.stop)
            in_node.close()
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def standalone_factories() -> Iterator[tuple[partial[OvsNode], partial[lab_netns.Netns]]]:
    """The conftest factories' behaviour outside a test's scope (a module-wide node, a bench):
    yields (make_node, make_netns); everything made is removed at exit."""
    require_root_and_ovs()
    nodes: list[OvsNode] = []
    spaces: list[str] = []

    def make_node(name: str | None = None, bridge: str | None = "br-int") -> OvsNode:
        node = OvsNode.create(OVS_PREFIX, name=name)
        nodes.append(node)
        node.start()
        if bridge is not None:
            node.add_bridge(bridge)
        return node

    def make_netns(prefix: str = NETNS_PREFIX) -> lab_netns.Netns:
        ns = lab_netns.create_netns(lab_netns.unique_name(prefix))
        spaces.append(ns.name)
        return ns

    try:
        yield partial(make_node), partial(make_netns)
    finally:
        _teardown(
            [partial(lab_netns.delete_netns, n) for n in reversed(spaces)]
            + [n.close for n in reversed(nodes)]
        )


class ControllerStandIn:
    """Stands in for the controller while running: installs the flows of every pod that has its
    network-status annotation and an OVS port, re-installing whenever that set grows."""

    def __init__(self, bed: AgentBed) -> None:
        self.bed = bed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="controller-stand-in", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> ControllerStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        import json

        from ovsagent.naming import port_name

        installed: set[str] = set()
        try:
            while not self._stop.wait(0.05):
                pods = self.bed.in_node.run(self.bed.core.list_namespaced_pod, "default").items
                ofports = self._ofports()
                ready: dict[str, tuple[str, ipaddress.IPv4Address, int]] = {}
                for pod in pods:
                    status = (meta(pod).annotations or {}).get("k8s.v1.cni.cncf.io/network-status")
                    name = str(meta(pod).name)
                    port = port_name("default", name)
                    if status and ofports.get(port):
                        ip = ipaddress.IPv4Address(json.loads(status)[0]["ips"][0])
                        ready[name] = (port, ip, ofports[port])
                if set(ready) - installed:
                    self.bed.install_flows(ready)
                    installed = set(ready)
        except BaseException as exc:
            self.error = exc

    def _ofports(self) -> dict[str, int]:
        out = self.bed.node.vsctl(
            "--format=csv", "--data=bare", "--no-headings", "--columns=name,ofport", "list", "Interface"
        )
        ports: dict[str, int] = {}
        for line in out.splitlines():
            name, _, ofport = line.partition(",")
            if ofport.strip().isdigit() and int(ofport) > 0:
                ports[name] = int(ofport)
        return ports
