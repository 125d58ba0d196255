"""A lab cluster for the controller's end-to-end tests: API server, real OVS nodes, the real program.

* The lab API server runs in this process on 127.0.0.1.
* `sluice-controller` runs as its own process in the host namespace (it reaches the API server
  on 127.0.0.1) and listens for OpenFlow on 127.0.0.1.
* Each OVS node runs in its own network namespace, where 127.0.0.1 is not the host's. A TCP
  relay (`lab.relay.Relay`) listening on 127.0.0.1:6653 *inside* the node's namespace forwards
  every connection the bridge makes to the controller's port on the host, without adding any
  address. Stopping the controller drops the relayed connections, as a real controller going
  away would; a second replica gets a second relay (6654).
* For real cross-node traffic, `connect_underlay` wires two nodes' namespaces with a veth on a
  `br-phy` bridge holding each node's tunnel IP (198.18.0.0/15), as OVS userspace tunnelling needs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from controller import annotations as ann
from flows.cluster import Cluster, NodeSpec, PodSpec
from flows.compiler import compile_node
from flows.flowset import FlowSet
from flows.identity import mac_for_ip
from flows.ofctl import parse_dump
from lab import netns as netns_lib
from lab.ovs import Daemon, FailMode, OvsError, OvsNode
from lab.relay import Relay
from lab.traffic import ping
from tests.support import metric

log = logging.getLogger(__name__)

RELAY_PORT = 6653
GATEWAY_OFPORT = 2
TUNNEL_OFPORT = 10
BRIDGE = "br-int"
# The console script installed next to the Python running the tests (`pip install -e .`).
CONTROLLER_BIN = Path(sys.executable).parent / "sluice-controller"


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabNode:
    """One node: its OVS, its relays (one per controller replica), and what its Node object says."""

    ovs: OvsNode
    relays: list[Relay]
    spec: NodeSpec
    datapath_id: str

    @property
    def relay(self) -> Relay:
        """The relay to the first controller."""
        return self.relays[0]

    def close(self) -> None:
        """Close the relays."""
        for relay in self.relays:
            relay.close()

    def use_controllers(self, *targets: str) -> None:
        """Point br-int at `targets` (e.g. `ssl:127.0.0.1:6653`), reconnecting fast (OVS backs
        off up to 8s by default), out-of-band as the agent sets them (in-band control adds
        hidden flows and, with a loopback target, warns every second)."""
        self.ovs.vsctl("set-controller", BRIDGE, *targets)
        for uuid in self.ovs.vsctl("--bare", "--columns=_uuid", "list", "Controller").split():
            self.ovs.vsctl(
                "set",
                "Controller",
                uuid,
                "max_backoff=1000",
                "inactivity_probe=5000",
                "connection_mode=out-of-band",
            )

    def controller_roles(self) -> dict[int, str]:
        """Return {controller port: role} of the bridge's connected controllers (OVSDB's view)."""
        out = self.ovs.vsctl("--format=json", "--columns=target,role,is_connected", "list", "Controller")
        roles: dict[int, str] = {}
        for target, role, connected in json.loads(out)["data"]:
            if connected is True:
                roles[int(str(target).rsplit(":", 1)[1])] = str(role)
        return roles

    @property
    def name(self) -> str:
        return self.spec.name

    def flows(self) -> FlowSet:
        """Return the bridge's flows as ovs-ofctl dumps them, parsed."""
        return parse_dump("\n".join(self.ovs.dump_flows(BRIDGE)))

    def node_object(self, *, with_datapath_id: bool = True) -> dict[str, Any]:
        """Return the Node object the agent would publish for this node."""
        annotations = {
            ann.NODE_TUNNEL_IP: str(self.spec.tunnel_ip),
            ann.NODE_GATEWAY_OFPORT: str(self.spec.gateway_ofport),
            ann.NODE_TUNNEL_OFPORT: str(self.spec.tunnel_ofport),
        }
        if with_datapath_id:
            annotations[ann.NODE_DATAPATH_ID] = self.datapath_id
        cidr = str(self.spec.pod_cidr)
        return {
            "metadata": {"name": self.name, "annotations": annotations},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        }

    def add_pod_port(self, port_name: str, ofport: int) -> None:
        """Add an internal port for a pod (what the agent's veth would be, as far as flows go)."""
        self.ovs.vsctl(
            "add-port", BRIDGE, port_name, "--", "set", "Interface", port_name,
            "type=internal", f"ofport_request={ofport}",
        )  # fmt: skip


def setup_node(ovs: OvsNode, name: str, index: int, controller_ports: list[int]) -> LabNode:
    """Give `ovs`'s br-int a gateway and a Geneve port and point it at one relay per controller.

    The relay to controller i listens on 127.0.0.1:(6653 + i) in the node's namespace.
    """
    spec = NodeSpec(
        name,
        ipaddress.IPv4Network(f"100.64.{index}.0/24"),
        ipaddress.IPv4Address(f"198.18.0.{10 + index}"),
        GATEWAY_OFPORT,
        TUNNEL_OFPORT,
    )
    ovs.vsctl(
        "add-port", BRIDGE, "sluice-gw0", "--", "set", "Interface", "sluice-gw0", "type=internal",
        f"ofport_request={GATEWAY_OFPORT}", f'mac="{mac_for_ip(spec.gateway_ip)}"',
    )  # fmt: skip
    ovs.vsctl(
        "add-port", BRIDGE, "sluice-tun0", "--", "set", "Interface", "sluice-tun0", "type=geneve",
        "options:remote_ip=flow", "options:key=flow", f"ofport_request={TUNNEL_OFPORT}",
    )  # fmt: skip
    dpid = ovs.vsctl("get", "Bridge", BRIDGE, "datapath_id").strip().strip('"')
    relays: list[Relay] = []
    try:
        for i, port in enumerate(controller_ports):
            relays.append(Relay(ovs.netns, port, RELAY_PORT + i))
        node = LabNode(ovs, relays, spec, dpid)
        node.use_controllers(*(f"tcp:127.0.0.1:{RELAY_PORT + i}" for i in range(len(controller_ports))))
    except BaseException:
        for relay in relays:
            relay.close()
        raise
    return node


def expected(nodes: list[LabNode], pods: list[PodSpec], name: str) -> FlowSet:
    """Return what node `name`'s bridge should hold for this cluster."""
    return compile_node(Cluster(tuple(n.spec for n in nodes), tuple(pods)), name)


class ControllerProcess:
    """`sluice-controller --config FILE` as a child process, its stderr in a log file."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        *,
        resync_seconds: int = 2,
        identity: str = "replica-a",
        lease_duration: int = 4,
    ) -> None:
        self.openflow_port = free_port()
        self.metrics_port = free_port()
        self.workdir = workdir
        self.identity = identity
        self.config = workdir / f"controller-{identity}.yaml"
        self.config.write_text(
            "\n".join(
                [
                    "openflow_address: 127.0.0.1",
                    f"openflow_port: {self.openflow_port}",
                    "metrics_address: 127.0.0.1",
                    f"metrics_port: {self.metrics_port}",
                    f"kubeconfig: {kubeconfig}",
                    f"resync_seconds: {resync_seconds}",
                    f"identity: {identity}",
                    "lease_namespace: kube-system",
                    f"lease_duration_seconds: {lease_duration}",
                    "lease_renew_seconds: 1",
                    "log_level: INFO",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = workdir / f"{identity}-0.log"

    def add_settings(self, **settings: str) -> None:
        """Append settings to the config file (for the next start)."""
        with open(self.config, "a") as fh:
            fh.writelines(f"{key}: {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start the program and wait until /readyz answers 200."""
        self.runs += 1
        self.log_path = self.workdir / f"{self.identity}-{self.runs}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_CONTROLLER_")}
        # The kubernetes client writes the kubeconfig's CA to a temporary file, which a controller
        # killed with SIGKILL never removes: keep it inside the test's work directory.
        env["TMPDIR"] = str(self.workdir)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(CONTROLLER_BIN), "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(lambda: self.http("/readyz")[0] == 200, 20, "controller /readyz", self.log_text)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig` and wait; return (exit code, seconds it took). Kills it after `timeout`."""
        proc = self.proc
        if proc is None:
            return 0, 0.0
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
            raise AssertionError(
                f"controller ignored {sig.name} for {timeout}s:\n{self.log_text()}"
            ) from None
        finally:
            self.proc = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Kill the process if it still runs (teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        """Return the current run's output."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def http(self, path: str) -> tuple[int, str]:
        """GET `path` from the metrics server; (0, "") if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """Return the sum of the samples of `name` whose labels include `labels` (0 if none)."""
        code, text = self.http("/metrics")
        assert code == 200, f"/metrics answered {code}"
        return metric(text, name, **labels)

    def reconciled(self, node: str) -> bool:
        """Whether the current run has reconciled `node` and found it in sync at least once."""
        return self.metric("sluice_controller_reconciles_total", node=node, result="in_sync") >= 1

    def flow_mods(self, node: str | None = None) -> int:
        """Return the flow-mods the current run has sent (to `node`, or to all)."""
        labels = {"node": node} if node else {}
        return int(self.metric("sluice_controller_flow_mods_sent_total", **labels))


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, details: Callable[[], str] | None = None
) -> None:
    """Poll `check` until it is true; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.1)


def warm_tunnel(pod_netns: str, destination: str, nodes: Sequence[LabNode], timeout: float = 15.0) -> None:
    """Ping from `pod_netns` until `destination` answers once (fail after `timeout` seconds).

    The first packets to a tunnel endpoint OVS has not resolved yet are dropped while it
    resolves the endpoint's MAC (tnl/arp); on a loaded machine that can take more than a few
    pings. Tests of loss start after this. A failure shows what each of `nodes`' vswitchd
    knows of the underlay (its routes and tunnel neighbours) and what br-phy and br-int did.
    """
    wait_for(
        lambda: ping(pod_netns, destination, count=1, wait=0.5).received == 1,
        timeout,
        f"a first reply from {destination} through the tunnel",
        lambda: "\n".join(underlay_state(node) for node in nodes),
    )


def underlay_state(node: LabNode) -> str:
    """Return what `node`'s vswitchd knows of the underlay, for a failure message."""
    parts = [f"--- {node.spec.name}"]
    ovs = node.ovs
    questions: list[tuple[str, Callable[[], str]]] = [
        ("tnl/ports/show -v", partial(ovs.appctl, "tnl/ports/show", "-v")),
        ("tnl/neigh/show", partial(ovs.appctl, "tnl/neigh/show")),
        ("ovs/route/show", partial(ovs.appctl, "ovs/route/show")),
        ("br-phy ports", partial(ovs.ofctl, "dump-ports", "br-phy")),
        ("br-int flows", partial(ovs.ofctl, "--no-names", "dump-flows", BRIDGE)),
    ]
    for what, run in questions:
        try:
            parts.append(f"{what}:\n{run()}")
        except OvsError as exc:
            parts.append(f"{what}: {exc}")
    log_path = ovs.paths.log(Daemon.VSWITCHD)
    tail = log_path.read_text(errors="replace").splitlines()[-30:] if log_path.exists() else []
    parts.append("ovs-vswitchd.log (last 30 lines):\n" + "\n".join(tail))
    return "\n".join(parts)


def make_pki(directory: Path) -> dict[str, Path]:
    """Make a CA and two certificates it signs (controller, switch) with openssl; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.key", "ca.crt")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=sluice-test-ca",
        "-keyout", str(paths["ca.key"]), "-out", str(paths["ca.crt"]),
    )  # fmt: skip
    for who in ("controller", "switch"):
        key, csr, crt = (directory / f"{who}.{ext}" for ext in ("key", "csr", "crt"))
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={who}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(paths["ca.crt"]), "-CAkey", str(paths["ca.key"]),
            "-CAcreateserial", "-days", "1", "-out", str(crt),
        )  # fmt: skip
        paths[f"{who}.key"], paths[f"{who}.crt"] = key, crt
    return paths


def connect_underlay(a: LabNode, b: LabNode) -> None:
    """Join two nodes' namespaces by a veth "wire" on a `br-phy` bridge holding each tunnel IP.

    The userspace datapath's native tunnelling sends a Geneve packet by routing its tun_dst
    (ovs-vswitchd reads the namespace's routes) out of the bridge that owns the local tunnel IP,
    and terminates a tunnel packet when that bridge delivers it to its LOCAL port: so the
    tunnel IP sits on br-phy's own interface, and the wire is a port of br-phy.

    phy0 answers ARP only for its own addresses (none), as the agent sets its underlay
    interface: the userspace datapath reads phy0 without taking it from the kernel, so with
    Linux's default the kernel also answered the peer's ARP for the tunnel IP, with phy0's MAC.
    When that answer won, the peer sent its Geneve packets to phy0's MAC, which the tunnel's
    receive side (it matches br-phy's MAC) ignores, and no reply ever came.
    """
    netns_lib.create_veth(a.ovs.netns, "phy0", b.ovs.netns, "phy0")
    for node in (a, b):
        wire = netns_lib.Netns(node.ovs.netns)
        wire.exec("sysctl", "-q", "-w", "net.ipv4.conf.phy0.arp_ignore=1")
        netns_lib.configure_link(node.ovs.netns, "phy0", up=True)
        wire.exec("ethtool", "-K", "phy0", "tx", "off")
        node.ovs.add_bridge("br-phy", fail_mode=FailMode.STANDALONE)
        node.ovs.vsctl("add-port", "br-phy", "phy0")
        netns_lib.add_address(node.ovs.netns, "br-phy", f"{node.spec.tunnel_ip}/24")
        netns_lib.configure_link(node.ovs.netns, "br-phy", up=True)
