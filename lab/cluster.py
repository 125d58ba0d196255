"""`sluice lab up/down/status/ping/kubeconfig`: a whole Sluice cluster in network namespaces.

Topology (docs/lab.md has the diagram): a fabric namespace with a Linux bridge (the underlay
segment, 198.18.0.0/15); a control-plane namespace running the API-server stand-in on
198.18.0.1:6443; N node namespaces, each with its own ovsdb-server + ovs-vswitchd (userspace
datapath), an `uplink0` veth on the fabric carrying 198.18.0.(10+i) (the agent moves it onto
`br-phy`), the agent, and the controller in node 1 (a second replica in node 2 with --ha). Bridges
reach the controller over the fabric by TCP. A port forward on the host's 127.0.0.1 reaches the
API server for `kubectl` and the lab's own commands. Every process is started from the installed
programs and recorded (PID and start time) in the state file before anything waits for it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lab import components as comp
from lab import kubelet
from lab import netns as netns_lib
from lab.components import LabError, LabPaths
from lab.forward import run_in_netns
from lab.kubeapi import KubeClient, KubeError
from lab.ovs import OvsError, OvsNode
from lab.procs import CommandError
from lab.state import LabState, LabStateError, NodeRecord, PodRecord, ProcessRecord, StateStore

DEFAULT_PREFIX = "sluicelab-"
PREFIX_FILE = "prefix"
LEASE_DURATION = 6  # lab value: a killed leader is replaced within seconds
LEASE_RENEW = 2
READY_TIMEOUT = 60.0
CONTROLLER_METRICS_PORT = 9102  # each replica serves its metrics here, in its node's namespace

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress sink that prints nothing."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What `sluice lab up` builds."""

    nodes: int = 2
    pods_per_node: int = 2
    ha: bool = False
    prefix: str = DEFAULT_PREFIX
    serve: tuple[str, ...] = ("TCP:80", "UDP:53")

    def validate(self) -> None:
        """Raise LabError for values the lab cannot build."""
        if not 1 <= self.nodes <= comp.MAX_NODES:
            raise LabError(f"--nodes must be 1..{comp.MAX_NODES}, got {self.nodes}")
        if self.pods_per_node < 0 or self.pods_per_node > 250:
            raise LabError(f"--pods-per-node must be 0..250, got {self.pods_per_node}")
        if self.ha and self.nodes < 2:
            raise LabError("--ha runs the second controller replica on node 2: it needs --nodes 2 or more")
        if (
            not self.prefix
            or len(self.prefix) > 20
            or not all(c.isalnum() or c in "-_." for c in self.prefix)
        ):
            raise LabError(f"bad --prefix {self.prefix!r}: 1-20 characters of [A-Za-z0-9_.-]")


def _check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, Open vSwitch): run it as root")
    for tool in ("ip", "ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ethtool"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed: run `make deps` (Debian packages) first")


def _check_state_dir(path: Path) -> None:
    if len(str(path)) > comp.MAX_STATE_DIR_LEN:
        raise LabError(
            f"state directory {path} is too long ({len(str(path))} > {comp.MAX_STATE_DIR_LEN}"
            " characters): OVS socket paths inside it would not fit"
        )


def running_components(state: LabState) -> list[ProcessRecord]:
    """The recorded processes that still run."""
    return [p for p in state.processes if p.alive()]


# ---------------------------------------------------------------------------------------------
# up


def up(store: StateStore, options: UpOptions, progress: Progress = quiet) -> LabState:
    """Build the lab described by `options` in `store`'s directory; return its state.

    A lab of the same shape (nodes, --ha, prefix) already running whole is left as it is and
    returned (`up` is idempotent, like `vagrant up`). Raises LabError if a different lab, a
    partly dead one or one left behind is there, or a step fails; after a failed step everything
    made so far is removed again (logs are kept)."""
    options.validate()
    _check_host()
    _check_state_dir(store.dir)
    comp.program("sluice-agent")
    started = time.monotonic()
    paths = LabPaths(store.dir)
    with store.locked():
        if store.exists():
            try:
                old = store.load()
            except LabStateError as exc:
                raise LabError(f"{exc}: run `sluice lab down` to clean up what it describes first") from exc
            alive = running_components(old)
            same_shape = (len(old.nodes), old.ha, old.prefix) == (options.nodes, options.ha, options.prefix)
            if old.complete and same_shape and len(alive) == len(old.processes):
                progress(
                    f"a lab like this one is already running in {store.dir}: left as it is"
                    " (`sluice lab down` first for a new one)"
                )
                return old
            if alive:
                raise LabError(
                    f"a lab is already running in {store.dir} ({len(old.nodes)} nodes, {len(old.pods)} pods,"
                    f" {len(alive)} processes): see `sluice lab status`, or `sluice lab down` first"
                )
            raise LabError(
                f"a lab in {store.dir} was left behind (its processes are gone, e.g. after a crash or"
                " reboot): run `sluice lab down` to clean it up, then `up` again"
            )
        names = [f"{options.prefix}fabric", f"{options.prefix}cp"]
        taken = [n for n in names if netns_lib.netns_exists(n)]
        if taken:
            raise LabError(
                f"network namespace {taken[0]} exists: another lab uses prefix {options.prefix!r}"
                " (give this one another --prefix, or `sluice lab down` the other's --state)"
            )
        for old_dir in ("logs", "apiserver"):
            shutil.rmtree(store.dir / old_dir, ignore_errors=True)
        state = LabState(
            prefix=options.prefix,
            fabric_netns=names[0],
            cp_netns=names[1],
            ha=options.ha,
            created=time.time(),
        )
        store.save(state)
        # A second record of the prefix: `down` still finds the namespaces if lab.json is damaged.
        (store.dir / PREFIX_FILE).write_text(options.prefix + "\n")
    try:
        _build(store, paths, options, progress, started)
    except BaseException as exc:
        progress(f"FAILED: {exc}")
        progress("removing what was built (logs kept in " + str(paths.logs) + ")")
        try:
            down(store, quiet, keep_logs=True)
        except Exception as cleanup_exc:  # report both; the first is the cause
            progress(f"cleanup also failed: {cleanup_exc}")
        if isinstance(exc, LabError):
            raise
        if isinstance(exc, (CommandError, KubeError, LabStateError, OSError)):
            raise LabError(str(exc)) from exc
        raise
    state = store.update(lambda s: replace(s, complete=True, up_seconds=round(time.monotonic() - started, 2)))
    progress(f"lab up in {state.up_seconds:.1f}s: {len(state.nodes)} nodes, {len(state.pods)} pods")
    return state


def _step(progress: Progress, started: float, text: str) -> None:
    progress(f"[{time.monotonic() - started:5.1f}s] {text}")


def _build(
    store: StateStore, paths: LabPaths, options: UpOptions, progress: Progress, started: float
) -> None:
    state = store.load()
    paths.logs.mkdir(parents=True, exist_ok=True)
    # The fabric: one Linux bridge in its own namespace; everything else plugs a veth into it.
    _make_netns(store, state.fabric_netns)
    fabric = netns_lib.Netns(state.fabric_netns)
    fabric.ip("link", "add", comp.FABRIC_BRIDGE, "type", "bridge")
    fabric.ip("link", "set", comp.FABRIC_BRIDGE, "up")
    _step(progress, started, f"fabric {state.fabric_netns}: bridge {comp.FABRIC_BRIDGE}, 198.18.0.0/15")

    _make_netns(store, state.cp_netns)
    _plug(state.cp_netns, "eth0", state.fabric_netns, "cp", f"{comp.API_IP}/{comp.FABRIC_PREFIXLEN}")
    paths.token.write_text(secrets.token_hex(24) + "\n")
    paths.token.chmod(0o600)
    api_rec = comp.spawn(
        "apiserver",
        [
            str(comp.program("sluice")), "lab", "apiserver", "--listen", f"{comp.API_IP}:{comp.API_PORT}",
            "--data", str(paths.apiserver_data), "--tls", "--token-file", str(paths.token),
        ],
        netns=state.cp_netns,
        log=paths.log("apiserver"),
    )  # fmt: skip
    store.update(lambda s: s.with_process(api_rec))
    port_file = paths.logs / "forward.port"
    port_file.unlink(missing_ok=True)
    fwd = comp.spawn(
        "forward",
        [
            str(comp.program("sluice")), "lab", "forward", "--netns", state.cp_netns,
            "--to", f"{comp.API_IP}:{comp.API_PORT}",
        ],
        netns=None,
        log=paths.log("forward"),
        stdout=port_file,
    )  # fmt: skip
    store.update(lambda s: s.with_process(fwd))
    port = _wait_for(lambda: _read_port(port_file), 10, "the API port forward", paths.log("forward"))
    _wait_for(lambda: paths.fabric_kubeconfig.exists() or None, 30, "the API server", paths.log("apiserver"))
    _write_host_kubeconfig(paths, port)
    store.update(
        lambda s: replace(s, api_fabric_url=f"https://{comp.API_IP}:{comp.API_PORT}", api_host_port=port)
    )
    api = KubeClient.from_kubeconfig(paths.host_kubeconfig)
    api.wait_ready(30)
    _step(
        progress,
        started,
        f"API server https://{comp.API_IP}:{comp.API_PORT} in {state.cp_netns} (host: 127.0.0.1:{port})",
    )

    nodes = [_node_record(store, paths, state.prefix, i) for i in range(1, options.nodes + 1)]
    for node in nodes:
        _create_node_object(api, node)
    for node in nodes:
        _prepare_node(store, node)
    # The controller first: bridges that find no controller back off before retrying (up to the
    # agent's `controller_max_backoff_ms`, 1 s by default; OVS's own default is 8 s).
    replicas = [nodes[0], nodes[1]] if options.ha else [nodes[0]]
    for node in replicas:
        _start_controller(store, paths, node)
    _step(progress, started, "controller started in " + ", ".join(n.netns for n in replicas))
    # Nodes come up in parallel: OVS start and the agent's start-up are mostly waiting.
    with ThreadPoolExecutor(max_workers=min(4, len(nodes))) as pool:
        for node in pool.map(lambda n: _start_node(store, paths, n, options.ha), nodes):
            _step(
                progress,
                started,
                f"{node.name}: OVS + agent started in {node.netns} ({node.underlay_ip}, {node.pod_cidr})",
            )
    _step(progress, started, "waiting for the agents (CNI STATUS) and the controller connections ...")
    for node in nodes:
        _wait_agent_ready(paths, node)
    for node in nodes:
        _wait_controllers_connected(paths, node, len(replicas))
    _step(
        progress,
        started,
        f"{len(nodes)} agents ready, every br-int connected to the controller",
    )

    specs = [
        (f"pod-{node.index}-{i}", node.name) for node in nodes for i in range(1, options.pods_per_node + 1)
    ]
    if specs:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(kubelet.create_pod, store, name, node=node, serve=options.serve)
                for name, node in specs
            ]
            for fut in futures:
                pod = fut.result()
                _step(progress, started, f"pod {pod.key} on {pod.node}: {pod.ip}")


def _make_netns(store: StateStore, name: str) -> None:
    store.update(lambda s: s.with_namespace(name))
    netns_lib.create_netns(name, persistent=True)


def _plug(netns: str, ifname: str, fabric_netns: str, port: str, address: str | None) -> None:
    """A veth from `netns` (`ifname`, with `address`) to the fabric bridge (`port`)."""
    netns_lib.create_veth(netns, ifname, fabric_netns, port)
    fabric = netns_lib.Netns(fabric_netns)
    fabric.ip("link", "set", port, "master", comp.FABRIC_BRIDGE, "up")
    # Userspace OVS and the Linux bridge never fill in checksums the sender's kernel left to
    # the NIC: with TX offload on, TCP through br-phy would arrive with bad checksums.
    for ns, dev in ((netns, ifname), (fabric_netns, port)):
        netns_lib.disable_tx_offload(ns, dev)
    if address:
        netns_lib.add_address(netns, ifname, address)
    netns_lib.configure_link(netns, ifname, up=True)


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_for(check: Callable[[], Any], timeout: float, what: str, logfile: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n--- {logfile} ---\n{comp.tail(logfile)}" if logfile else ""
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.05)


def _write_host_kubeconfig(paths: LabPaths, port: int) -> None:
    doc = yaml.safe_load(paths.fabric_kubeconfig.read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    paths.host_kubeconfig.write_text(yaml.safe_dump(doc, sort_keys=False))
    paths.host_kubeconfig.chmod(0o600)


def _node_record(store: StateStore, paths: LabPaths, prefix: str, index: int) -> NodeRecord:
    name = f"node-{index}"
    node = NodeRecord(
        name=name,
        index=index,
        netns=f"{prefix}node{index}",
        underlay_ip=comp.node_underlay_ip(index),
        pod_cidr=comp.node_pod_cidr(index),
        fabric_port=f"n{index}",
        dir=str(paths.node_dir(name)),
    )
    store.update(lambda s: replace(s, nodes=(*(n for n in s.nodes if n.name != name), node)))
    return node


def _create_node_object(api: KubeClient, node: NodeRecord) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
    }
    api.create("/api/v1/nodes", body)
    api.merge_patch(
        f"/api/v1/nodes/{node.name}/status",
        {
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": node.underlay_ip},
                    {"type": "Hostname", "address": node.name},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "SluiceLab"}],
            }
        },
    )


def _controller_targets(ha: bool) -> list[str]:
    replicas = [1, 2] if ha else [1]
    return [f"tcp:{comp.node_underlay_ip(i)}:{comp.OPENFLOW_PORT}" for i in replicas]


def _prepare_node(store: StateStore, node: NodeRecord) -> None:
    """The node's namespace and its uplink on the fabric (no daemons yet)."""
    state = store.load()
    _make_netns(store, node.netns)
    _plug(node.netns, comp.UPLINK, state.fabric_netns, node.fabric_port,
          f"{node.underlay_ip}/{comp.FABRIC_PREFIXLEN}")  # fmt: skip


def _start_node(store: StateStore, paths: LabPaths, node: NodeRecord, ha: bool) -> NodeRecord:
    """Start the node's OVS and agent (its namespace exists: `_prepare_node`)."""
    node_dir = Path(node.dir)
    node_dir.mkdir(parents=True, exist_ok=True)
    ovs = OvsNode(node.netns, node.ovs_rundir, name=node.name)
    try:
        ovs.start(timeout=20)
    finally:
        for daemon, pid in (("ovsdb-server", ovs.pids.ovsdb_server), ("ovs-vswitchd", ovs.pids.vswitchd)):
            if pid is not None:
                rec = ProcessRecord.of(f"{daemon}/{node.name}", pid, daemon, node.netns,
                                       str(node.ovs_rundir / f"{daemon}.log"))  # fmt: skip
                store.update(lambda s, r=rec: s.with_process(r))  # type: ignore[misc]
    kubelet.write_network_config(node)
    kubelet.install_plugin(node)
    config = {
        "node_name": node.name,
        "kubeconfig": str(paths.fabric_kubeconfig),
        "cni_socket": str(node.cni_socket),
        "state_dir": str(node_dir / "agent"),
        "bridge": "br-int",
        "datapath_type": "netdev",
        "interface_type": "veth",
        "ovs_rundir": str(node.ovs_rundir),
        "ovsdb": f"unix:{node.ovs_rundir / 'db.sock'}",
        "controllers": _controller_targets(ha),
        "underlay_interface": comp.UPLINK,
        "metrics_address": "0.0.0.0:9101",
        "log_level": "info",
    }
    config_path = node_dir / "agent.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    start_agent(store, paths, node)
    return node


def start_agent(store: StateStore, paths: LabPaths, node: NodeRecord) -> ProcessRecord:
    """Start the node's agent from its config file and record it (replacing an older record)."""
    rec = comp.spawn(
        f"agent/{node.name}",
        [str(comp.program("sluice-agent")), "--config", str(Path(node.dir) / "agent.yaml")],
        netns=node.netns,
        log=paths.log(f"agent-{node.name}"),
    )
    store.update(lambda s: s.with_process(rec))
    return rec


def _start_controller(store: StateStore, paths: LabPaths, node: NodeRecord) -> ProcessRecord:
    config = {
        "openflow_address": "0.0.0.0",
        "openflow_port": comp.OPENFLOW_PORT,
        "kubeconfig": str(paths.fabric_kubeconfig),
        "identity": f"controller-{node.name}",
        "lease_namespace": "kube-system",
        "lease_duration_seconds": LEASE_DURATION,
        "lease_renew_seconds": LEASE_RENEW,
        "resync_seconds": 60,
        "metrics_address": "0.0.0.0",
        "metrics_port": CONTROLLER_METRICS_PORT,
        "log_level": "INFO",
    }
    config_path = paths.root / f"controller-{node.name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return start_controller(store, paths, node)


def start_controller(store: StateStore, paths: LabPaths, node: NodeRecord) -> ProcessRecord:
    """Start the controller replica of `node` from its config file and record it."""
    rec = comp.spawn(
        f"controller/{node.name}",
        [
            str(comp.program("sluice-controller")),
            "--config",
            str(paths.root / f"controller-{node.name}.yaml"),
        ],
        netns=node.netns,
        log=paths.log(f"controller-{node.name}"),
    )
    store.update(lambda s: s.with_process(rec))
    return rec


def controller_switches(node: NodeRecord) -> int | None:
    """How many OpenFlow switches the controller replica running on `node` says are connected
    to it (its `sluice_controller_switches_connected` metric); None when it does not answer."""

    def fetch() -> str:
        url = f"http://127.0.0.1:{CONTROLLER_METRICS_PORT}/metrics"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        with direct.open(url, timeout=2) as answer:
            return str(answer.read().decode())

    try:
        body = run_in_netns(node.netns, fetch)
    except OSError:
        return None
    match = re.search(r"^sluice_controller_switches_connected (\S+)$", body, re.MULTILINE)
    return int(float(match.group(1))) if match else None


def controller_rows(node: NodeRecord) -> list[tuple[str, str, bool]]:
    """The node's br-int controllers as OVSDB reports them: (target, role, connected)."""
    ovs = OvsNode(node.netns, node.ovs_rundir, name=node.name)
    try:
        out = ovs.vsctl(
            "--format=json", "--columns=target,role,is_connected", "list", "Controller", timeout=5
        )
    except OvsError:
        return []
    rows = []
    for target, role, connected in json.loads(out)["data"]:
        rows.append((str(target), role if isinstance(role, str) else "-", connected is True))
    return rows


def agent_status(node: NodeRecord) -> tuple[bool, str]:
    """Run the real plugin's STATUS against the node's agent: (ready, message)."""
    if not node.cni_socket.exists():
        return False, "no CNI socket"
    run = kubelet.run_cni(node, "STATUS")
    if run.returncode == 0:
        return True, "ready"
    return False, str(run.error("STATUS"))


def _wait_agent_ready(paths: LabPaths, node: NodeRecord) -> None:
    logfile = paths.log(f"agent-{node.name}")
    _wait_for(lambda: agent_status(node)[0], READY_TIMEOUT, f"the agent of {node.name} (STATUS 0)", logfile)


def _wait_controllers_connected(paths: LabPaths, node: NodeRecord, replicas: int) -> None:
    _wait_for(
        lambda: sum(1 for _, _, c in controller_rows(node) if c) >= replicas,
        READY_TIMEOUT,
        f"{node.name}'s br-int to connect to the controller",
        paths.log("controller-node-1"),
    )


# ---------------------------------------------------------------------------------------------
# down


def down(store: StateStore, progress: Progress = quiet, *, keep_logs: bool = False) -> list[str]:
    """Remove the lab: processes by PID (only if still the recorded process), namespaces, files.

    Works on a crashed or half-built lab. Returns what was removed. Raises LabError if there is
    no lab in the directory."""
    if not store.exists():
        raise LabError(f"no lab in {store.dir} (nothing to take down)")
    removed: list[str] = []
    with store.locked():
        try:
            state = store.load()
        except LabStateError as exc:
            return _down_damaged(store, exc, progress)
        # Components first (controllers, agents, servers, then OVS, the API server, the forward),
        # so none of them reacts to the others disappearing.
        order = ("controller/", "agent/", "ovs-vswitchd/", "ovsdb-server/", "apiserver", "forward")
        procs = [p for p in state.processes]
        servers = [s for pod in state.pods for s in pod.servers]

        def rank(p: ProcessRecord) -> int:
            return next((i for i, o in enumerate(order) if p.name.startswith(o)), len(order))

        for rec in servers + sorted(procs, key=rank):
            try:
                if comp.stop(rec):
                    removed.append(f"process {rec.name} (pid {rec.pid})")
                    progress(f"stopped {rec.name} (pid {rec.pid})")
            except RuntimeError as exc:
                progress(f"cannot stop {rec.name}: {exc}")
        namespaces = [p.netns for p in state.pods] + [n.netns for n in state.nodes] + list(state.namespaces)
        # Anything the lab created under its prefix but did not get to record (a crash between
        # the namespace and the state update) is in lab.netns's registry.
        namespaces += [e.name for e in netns_lib.registered(state.prefix)]
        seen: set[str] = set()
        for name in namespaces:
            if name in seen:
                continue
            seen.add(name)
            if netns_lib.read_entry(name) is None and not netns_lib.netns_exists(name):
                continue
            try:
                netns_lib.delete_netns(name)
                removed.append(f"netns {name}")
                progress(f"removed netns {name}")
            except netns_lib.NotOursError:
                progress(f"left netns {name} alone: not created by the lab")
        for item in sorted(store.dir.iterdir()):
            if keep_logs and item.name in ("logs", "lab.lock"):
                continue
            if item.name == "lab.lock":
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(store.dir, ignore_errors=True)
    return removed


def _down_damaged(store: StateStore, error: LabStateError, progress: Progress) -> list[str]:
    """`down` without a readable state file: remove the namespaces of the lab's prefix (found in
    lab.netns's registry; deleting one stops every process inside it, which includes the API
    port forward, as it lives in the control-plane namespace) and the state directory."""
    try:
        prefix = (store.dir / PREFIX_FILE).read_text().strip()
    except OSError:
        raise LabError(
            f"{error}; and {store.dir / PREFIX_FILE} is missing: cannot tell the lab's namespaces"
        ) from None
    if not prefix:
        raise LabError(f"{error}; and {store.dir / PREFIX_FILE} is empty") from None
    progress(f"{error}: removing the namespaces named {prefix}* instead")
    removed = []
    for entry in netns_lib.registered(prefix):
        netns_lib.delete_netns(entry.name)
        removed.append(f"netns {entry.name}")
        progress(f"removed netns {entry.name}")
    shutil.rmtree(store.dir, ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------------------------
# status, ping, kubeconfig


def status_text(store: StateStore) -> str:
    """A human-readable report: components, nodes, pods, controller connections, leader."""
    state = store.load()
    paths = LabPaths(store.dir)
    lines = [
        f"lab in {store.dir} (prefix {state.prefix!r}): {len(state.nodes)} nodes, {len(state.pods)} pods"
        + ("" if state.complete else "  [INCOMPLETE: `up` did not finish]")
        + (f", up in {state.up_seconds:.1f}s" if state.up_seconds else ""),
        "",
        "components:",
    ]
    for rec in state.processes:
        alive = "running" if rec.alive() else "NOT RUNNING"
        lines.append(f"  {rec.name:<28} pid {rec.pid:<8} {alive:<12} {rec.netns or '(host)':<22} {rec.log}")
    api: KubeClient | None = None
    try:
        api = KubeClient.from_kubeconfig(paths.host_kubeconfig)
    except KubeError:
        api = None
    api_nodes: dict[str, Any] = {}
    api_pods: dict[str, Any] = {}
    leader = "?"
    if api is not None:
        try:
            api_nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
            api_pods = {
                f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
                for p in api.get("/api/v1/pods")["items"]
            }
            lease = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sluice-controller")
            leader = str(lease.get("spec", {}).get("holderIdentity") or "(none)")
        except KubeError as exc:
            leader = f"? ({exc})"
    lines += ["", "nodes:"]
    for node in state.nodes:
        ann = api_nodes.get(node.name, {}).get("metadata", {}).get("annotations", {}) or {}
        _, message = agent_status(node) if netns_lib.netns_exists(node.netns) else (False, "no netns")
        ctrl = ", ".join(
            f"{t} {'connected' if c else 'DISCONNECTED'} {r}" for t, r, c in controller_rows(node)
        )
        lines.append(
            f"  {node.name:<8} {node.netns:<22} underlay {node.underlay_ip:<13} podCIDR {node.pod_cidr:<15}"
            f" agent {message}"
        )
        lines.append(
            f"           tunnel-ip {ann.get('sluice.io/tunnel-ip', '-')}  controllers: {ctrl or '-'}"
        )
    lines += ["", f"controller leader (Lease kube-system/sluice-controller): {leader}", "", "pods:"]
    for pod in sorted(state.pods, key=lambda p: (p.node, p.key)):
        phase = api_pods.get(pod.key, {}).get("status", {}).get("phase", "(not in API)")
        serving = ",".join(pod.serve) if pod.serve else "-"
        lines.append(f"  {pod.key:<28} {pod.node:<8} {pod.ip or '-':<15} {phase:<10} serve {serving}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PingMatrix:
    """Every pod pinging every other pod: pods in order and {(src, dst): reached}."""

    pods: tuple[PodRecord, ...]
    reached: dict[tuple[str, str], bool]

    @property
    def ok(self) -> bool:
        """True when every pair reached."""
        return all(self.reached.values())

    def render(self) -> str:
        """The matrix as text: rows ping columns; `ok` reached, `--` lost."""
        lines = []
        for i, pod in enumerate(self.pods, 1):
            lines.append(f"  {i:>3}  {pod.key:<28} {pod.node:<8} {pod.ip}")
        header = "  from\\to " + "".join(f"{j:>4}" for j in range(1, len(self.pods) + 1))
        lines += ["", header]
        for i, src in enumerate(self.pods, 1):
            cells = []
            for dst in self.pods:
                if src.key == dst.key:
                    cells.append("   .")
                else:
                    cells.append("  ok" if self.reached[(src.key, dst.key)] else "  --")
            lines.append(f"  {i:>7} " + "".join(cells))
        total = len(self.reached)
        good = sum(self.reached.values())
        lines += ["", f"{good}/{total} pairs reached" + ("" if good == total else "  (-- = no reply)")]
        return "\n".join(lines)


def ping_matrix(store: StateStore, *, deadline: float = 3.0) -> PingMatrix:
    """Ping from every pod to every other pod (one reply within `deadline` seconds counts)."""
    pods = tuple(sorted((p for p in store.load().pods if p.ip), key=lambda p: (p.node, p.key)))
    pairs = [(s, d) for s in pods for d in pods if s.key != d.key]

    def one(pair: tuple[PodRecord, PodRecord]) -> bool:
        src, dst = pair
        # The first packet towards a new tunnel endpoint may be lost while br-phy resolves the
        # endpoint's MAC: keep sending every 0.2 s until one reply or the deadline.
        res = netns_lib.Netns(src.netns).exec(
            "ping", "-n", "-c", "1", "-i", "0.2", "-w", str(int(deadline)), dst.ip, check=False,
            timeout=deadline + 5,
        )  # fmt: skip
        return res.returncode == 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, pairs))
    return PingMatrix(pods, {(s.key, d.key): ok for (s, d), ok in zip(pairs, results, strict=True)})


def host_kubeconfig(store: StateStore) -> Path:
    """The path of the host kubeconfig (kubectl against the lab); raises LabError without a lab."""
    store.load()
    path = LabPaths(store.dir).host_kubeconfig
    if not path.exists():
        raise LabError(f"{path} does not exist: the lab's `up` did not get that far")
    return path


def print_progress(text: str) -> None:
    """The progress sink of the CLI: one line on stderr, flushed."""
    print(text, file=sys.stderr, flush=True)


def restart_component(store: StateStore, name: str) -> ProcessRecord:
    """Stop the recorded component `name` (e.g. `agent/node-2`, `controller/node-1`) and start it
    again from its config; return the new record. Raises LabError for anything else, and (once
    the new one runs) when the old one ignored SIGTERM and had to be killed."""
    state = store.load()
    paths = LabPaths(store.dir)
    kind, _, node_name = name.partition("/")
    if kind not in ("agent", "controller") or not node_name:
        raise LabError(f"can only restart agent/NODE or controller/NODE, not {name!r}")
    node = state.node(node_name)
    rec = state.process(name)
    if rec is None:
        raise LabError(f"no component {name} in the lab")
    clean = comp.stop_cleanly(rec)
    if kind == "agent":
        new = start_agent(store, paths, node)
        _wait_for(lambda: agent_status(node)[0], READY_TIMEOUT, f"the agent of {node.name}", Path(new.log))
    else:
        new = start_controller(store, paths, node)
        # The new process itself must report every bridge: OVSDB's is_connected can still show
        # the old connection (vswitchd refreshes controller status at its own pace).
        _wait_for(
            lambda: controller_switches(node) == len(state.nodes),
            READY_TIMEOUT,
            f"every bridge to connect to the restarted controller on {node.name}",
            Path(new.log),
        )
        target = f"tcp:{node.underlay_ip}:{comp.OPENFLOW_PORT}"
        for each in state.nodes:
            _wait_for(
                lambda n=each: any(t == target and c for t, _, c in controller_rows(n)),  # type: ignore[misc]
                READY_TIMEOUT,
                f"{each.name}'s br-int to reconnect to {target}",
                Path(new.log),
            )
    if not clean:
        # Restarted, but a component that ignores SIGTERM loses whatever a clean stop does
        # (the controller releases its Lease): that is a bug to see, not to hide.
        raise LabError(f"{name} ignored SIGTERM for 10s and was killed (see {rec.log}); it runs again")
    return new


# ---------------------------------------------------------------------------------------------
# nodes joining and leaving a running lab


def add_node(store: StateStore, progress: Progress = quiet) -> NodeRecord:
    """Add the next node (`node-<max+1>`) to a running lab: Node object, OVS, agent; return it.

    Returns once its agent is ready and its br-int is connected to every controller replica."""
    started = time.monotonic()
    state = store.load()
    if not state.complete:
        raise LabError("the lab's `up` did not finish: `sluice lab down` and `up` again")
    paths = LabPaths(store.dir)
    index = max((n.index for n in state.nodes), default=0) + 1
    if index > comp.MAX_NODES:
        raise LabError(f"the lab has room for {comp.MAX_NODES} nodes")
    node = _node_record(store, paths, state.prefix, index)
    _create_node_object(KubeClient.from_kubeconfig(paths.host_kubeconfig), node)
    _prepare_node(store, node)
    _start_node(store, paths, node, state.ha)
    _wait_agent_ready(paths, node)
    _wait_controllers_connected(paths, node, 2 if state.ha else 1)
    _step(progress, started, f"{node.name} joined: {node.netns}, {node.underlay_ip}, {node.pod_cidr}")
    return node


def remove_node(store: StateStore, name: str, progress: Progress = quiet) -> None:
    """Remove a node from a running lab: its pods (CNI DEL), agent, OVS, namespace, Node object.

    The nodes running a controller replica cannot be removed. Raises LabError."""
    state = store.load()
    node = state.node(name)
    if state.process(f"controller/{node.name}") is not None:
        raise LabError(f"{node.name} runs a controller replica and cannot be removed")
    for pod in [p for p in state.pods if p.node == node.name]:
        kubelet.delete_pod(store, pod.name, namespace=pod.namespace)
        progress(f"deleted pod {pod.key}")
    for kind in ("agent", "ovs-vswitchd", "ovsdb-server"):
        rec = store.load().process(f"{kind}/{node.name}")
        if rec is not None:
            comp.stop(rec)
    if netns_lib.read_entry(node.netns) is not None:
        netns_lib.delete_netns(node.netns)
    KubeClient.from_kubeconfig(LabPaths(store.dir).host_kubeconfig).delete(f"/api/v1/nodes/{node.name}")

    def forget(s: LabState) -> LabState:
        for kind in ("agent", "ovs-vswitchd", "ovsdb-server"):
            s = s.without_process(f"{kind}/{node.name}")
        return replace(s, nodes=tuple(n for n in s.nodes if n.name != node.name)).without_namespace(
            node.netns
        )

    store.update(forget)
    shutil.rmtree(node.dir, ignore_errors=True)
    progress(f"{node.name} removed")
