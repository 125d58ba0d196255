"""The lab kubelet: Pods in the API, their sandboxes (network namespaces), and the real `sluice-cni`.

`create_pod` does what a kubelet and its container runtime do for a pod, in the same order: the
Pod object bound to a node (the scheduler's part), a sandbox network namespace, the CNI ADD with
the node's network config on stdin and the environment containerd sets (CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME=eth0, CNI_PATH, CNI_ARGS with K8S_POD_NAMESPACE/NAME/INFRA_CONTAINER_ID/UID
and IgnoreUnknown=1, runtimeConfig `ips` for a requested address), then the Pod status (phase
Running, podIP/podIPs, hostIP) and, optionally, small servers inside the pod. The plugin runs in
the node's network namespace, as the kubelet would. `delete_pod` reverses it with CNI DEL.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cni.install import install_plugin as install_cni_plugin
from lab import components as comp
from lab import netns as netns_lib
from lab.components import LabError, LabPaths
from lab.kubeapi import KubeClient, KubeError
from lab.podserve import parse_services
from lab.state import LabState, NodeRecord, PodRecord, ProcessRecord, StateStore

log = logging.getLogger(__name__)

NETWORK_NAME = "sluice"
CNI_VERSION = "1.1.0"
IFNAME = "eth0"
CNI_TIMEOUT = 35.0
ADD_ATTEMPTS = 3  # a kubelet retries a failed sandbox; code 11 ("try again later") is expected then
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


class CniFailed(LabError):
    """The CNI plugin answered with an error: carries its code and message."""

    def __init__(self, command: str, code: int, msg: str) -> None:
        super().__init__(f"CNI {command} failed with code {code}: {msg}")
        self.code = code


@dataclass(frozen=True, slots=True)
class CniRun:
    """One run of the plugin: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    def error(self, command: str) -> CniFailed:
        """The plugin's error as an exception (its JSON error, or its stderr)."""
        try:
            doc = json.loads(self.stdout)
            return CniFailed(
                command,
                int(doc.get("code", 999)),
                str(doc.get("msg", "")) + (f" ({doc['details']})" if doc.get("details") else ""),
            )
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            return CniFailed(command, -1, (self.stderr or self.stdout).strip() or f"exit {self.returncode}")


def network_config(node: NodeRecord) -> dict[str, Any]:
    """The node's CNI network configuration list (what /etc/cni/net.d/10-sluice.conflist holds)."""
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "sluice-cni",
                "agentSocket": str(node.cni_socket),
                "timeoutSeconds": 30,
                "capabilities": {"ips": True},
            }
        ],
    }


def cni_bin_dir(node: NodeRecord) -> Path:
    """The node's CNI bin directory (what /opt/cni/bin is on a real node)."""
    return Path(node.dir) / "cni-bin"


def install_plugin(node: NodeRecord) -> Path:
    """Install `sluice-cni` into the node's CNI bin directory, as `sluice install-cni` does on a node."""
    return install_cni_plugin(cni_bin_dir(node), sys.executable)


def write_network_config(node: NodeRecord) -> Path:
    """Write the node's conflist into its directory and return the path."""
    path = Path(node.dir) / "10-sluice.conflist"
    path.write_text(json.dumps(network_config(node), indent=2) + "\n")
    return path


def run_cni(
    node: NodeRecord,
    command: str,
    env: Mapping[str, str] | None = None,
    runtime_config: Mapping[str, Any] | None = None,
) -> CniRun:
    """Exec `sluice-cni` in the node's namespace, as a runtime does for `command`.

    stdin is the plugin's entry of the node's conflist with `cniVersion` and `name` added (and
    `runtimeConfig` for the capabilities it declares). Raises LabError if it cannot run."""
    conflist = network_config(node)
    plugin = dict(conflist["plugins"][0])
    caps = plugin.pop("capabilities", {})
    stdin: dict[str, Any] = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    if runtime_config:
        stdin["runtimeConfig"] = {k: v for k, v in runtime_config.items() if caps.get(k)}
    binary = cni_bin_dir(node) / "sluice-cni"
    if not binary.exists():
        raise LabError(f"{binary} is missing: the node was not set up by this version of `sluice lab up`")
    full_env = {**comp.child_env(), "CNI_COMMAND": command, "CNI_PATH": str(binary.parent), **(env or {})}
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", node.netns, str(binary)],
            input=json.dumps(stdin),
            capture_output=True,
            text=True,
            env=full_env,
            timeout=CNI_TIMEOUT + 5,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"sluice-cni {command} did not finish within {CNI_TIMEOUT + 5:.0f}s") from exc
    return CniRun(proc.returncode, proc.stdout, proc.stderr)


def pod_netns_name(prefix: str, namespace: str, name: str) -> str:
    """The sandbox namespace of a pod: `PREFIXp-NS-NAME`, shortened with a hash when too long."""
    full = f"{prefix}p-{namespace}-{name}"
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    return f"{prefix}p-{name[: 40 - len(prefix)]}-{digest}"


def parse_labels(text: str | None) -> dict[str, str]:
    """Parse `k=v,k2=v2`; raises LabError naming a bad pair."""
    labels: dict[str, str] = {}
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key_name = key.rpartition("/")[2]
        if not sep or not key_name or not _LABEL_VALUE.match(key_name) or not _LABEL_VALUE.match(value):
            raise LabError(f"bad label {item!r}: use key=value (letters, digits, '-', '_', '.'; max 63)")
        labels[key] = value
    return labels


def _client(paths: LabPaths) -> KubeClient:
    return KubeClient.from_kubeconfig(paths.host_kubeconfig)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pick_node(state: LabState, node: str | None) -> NodeRecord:
    if node is not None:
        return state.node(node)
    if not state.nodes:
        raise LabError("the lab has no nodes")
    counts = {n.name: 0 for n in state.nodes}
    for pod in state.pods:
        counts[pod.node] = counts.get(pod.node, 0) + 1
    return min(state.nodes, key=lambda n: (counts[n.name], n.index))


def create_pod(
    store: StateStore,
    name: str,
    *,
    node: str | None = None,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    ip: str | None = None,
    serve: Sequence[str] = (),
) -> PodRecord:
    """Create pod `namespace/name` on `node` (default: the node with the fewest pods); return it.

    Raises LabError (CniFailed for a plugin error) with everything it made removed again."""
    if not _SUBDOMAIN.match(name) or len(name) > 253:
        raise LabError(f"invalid pod name {name!r}: lower-case letters, digits, '-' and '.'")
    if not _DNS_LABEL.match(namespace):
        raise LabError(f"invalid namespace {namespace!r}: lower-case letters, digits and '-', max 63")
    if ip is not None:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise LabError(f"--ip {ip!r} is not an IPv4 address") from None
    services = parse_services(",".join(serve)) if serve else ()
    paths = LabPaths(store.dir)
    with store.locked():
        state = store.load()
        existing = state.pod(namespace, name)
        if existing is not None:
            raise LabError(f"pod {namespace}/{name} exists already (on {existing.node})")
        target = _pick_node(state, node)
        record = PodRecord(
            namespace, name, target.name, pod_netns_name(state.prefix, namespace, name),
            secrets.token_hex(32), "", "", tuple(str(s) for s in services),
        )  # fmt: skip
        store.save(state.with_pod(record).with_namespace(record.netns))
    api = _client(paths)
    try:
        record = _create(api, paths, target, record, labels or {}, ip)
        if services:
            record = replace(record, servers=(_start_server(paths, record),))
    except BaseException:
        _teardown(store, api, target, record)
        raise
    store.update(lambda s: s.with_pod(record))
    return record


def _create(
    api: KubeClient,
    paths: LabPaths,
    node: NodeRecord,
    record: PodRecord,
    labels: Mapping[str, str],
    ip: str | None,
) -> PodRecord:
    ns = record.namespace
    try:
        api.get(f"/api/v1/namespaces/{ns}")
    except KubeError as exc:
        if exc.status != 404:
            raise LabError(str(exc)) from exc
        api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": record.name, "namespace": ns, "labels": dict(labels)},
        "spec": {
            "nodeName": node.name,
            "containers": [{"name": "main", "image": "sluice-lab/sandbox:latest"}],
        },
    }
    try:
        pod = api.create(f"/api/v1/namespaces/{ns}/pods", body)
    except KubeError as exc:
        raise LabError(f"cannot create Pod {ns}/{record.name}: {exc}") from exc
    record = replace(record, uid=str(pod["metadata"]["uid"]))
    netns_lib.create_netns(record.netns, persistent=True)
    env = _cni_env(record)
    runtime = {"ips": [ip]} if ip else None
    result: dict[str, Any] = {}
    for attempt in range(1, ADD_ATTEMPTS + 1):
        run = run_cni(node, "ADD", env, runtime)
        if run.returncode == 0:
            result = json.loads(run.stdout)
            break
        err = run.error("ADD")
        if err.code != 11 or attempt == ADD_ATTEMPTS:
            raise err
        log.warning("pod %s: CNI ADD said try again (%s), retrying", record.key, err)
    pod_ip = str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)
    record = replace(record, ip=pod_ip)
    now = _now()
    status = {
        "status": {
            "phase": "Running",
            "hostIP": node.underlay_ip,
            "hostIPs": [{"ip": node.underlay_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "sluice-lab/sandbox:latest",
                    "imageID": "",
                    "containerID": f"sluice-lab://{record.container_id}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            ],
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }
    }
    api.merge_patch(f"/api/v1/namespaces/{ns}/pods/{record.name}/status", status)
    return record


def _cni_env(record: PodRecord) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": record.container_id,
        "CNI_NETNS": str(netns_lib.NETNS_DIR / record.netns),
        "CNI_IFNAME": IFNAME,
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={record.namespace};K8S_POD_NAME={record.name};"
            f"K8S_POD_INFRA_CONTAINER_ID={record.container_id};K8S_POD_UID={record.uid}"
        ),
    }


def _start_server(paths: LabPaths, record: PodRecord) -> ProcessRecord:
    logfile = paths.logs / "pods" / f"{record.namespace}_{record.name}.log"
    server = comp.spawn(
        f"server/{record.key}",
        [sys.executable, "-m", "lab.podserve", "--name", record.key, ",".join(record.serve)],
        netns=record.netns,
        log=logfile,
    )
    deadline = time.monotonic() + 10
    while "ready" not in logfile.read_text(errors="replace"):
        if not server.alive() or time.monotonic() > deadline:
            raise LabError(f"servers of pod {record.key} did not start:\n{comp.tail(logfile)}")
        time.sleep(0.02)
    return server


def _teardown(store: StateStore, api: KubeClient, node: NodeRecord, record: PodRecord) -> list[str]:
    """Undo a pod in kubelet order (servers, CNI DEL, sandbox, Pod object); return the problems."""
    problems: list[str] = []
    for server in record.servers:
        comp.stop(server, timeout=5)
    if record.uid:  # the Pod existed, so an ADD may have happened: DEL succeeds whatever is left
        env = _cni_env(record)
        if not netns_lib.netns_exists(record.netns):
            env["CNI_NETNS"] = ""
        run = run_cni(node, "DEL", env)
        if run.returncode != 0:
            problems.append(str(run.error("DEL")))
    if netns_lib.read_entry(record.netns) is not None:
        netns_lib.delete_netns(record.netns)
    try:
        api.delete(f"/api/v1/namespaces/{record.namespace}/pods/{record.name}")
    except KubeError as exc:
        problems.append(f"cannot delete Pod {record.key}: {exc}")
    store.update(lambda s: s.without_pod(record.namespace, record.name).without_namespace(record.netns))
    return problems


def delete_pod(store: StateStore, name: str, *, namespace: str = "default") -> None:
    """Delete pod `namespace/name`: its servers, CNI DEL, its sandbox namespace, the Pod object.

    Raises LabError if the lab kubelet does not know the pod or the plugin's DEL failed (all the
    rest is still removed)."""
    state = store.load()
    record = state.pod(namespace, name)
    if record is None:
        raise LabError(f"no pod {namespace}/{name} in the lab (see `sluice lab status`)")
    node = state.node(record.node)
    problems = _teardown(store, _client(LabPaths(store.dir)), node, record)
    if problems:
        raise LabError("; ".join(problems))


def pod_exec_argv(
    store: StateStore, name: str, command: Sequence[str], *, namespace: str = "default"
) -> list[str]:
    """The argv that runs `command` inside the pod's network namespace; raises LabError."""
    record = store.load().pod(namespace, name)
    if record is None:
        raise LabError(f"no pod {namespace}/{name} in the lab (see `sluice lab status`)")
    if not command:
        raise LabError("no command: use `sluice lab pod exec NAME -- CMD [ARGS...]`")
    return ["ip", "netns", "exec", record.netns, *command]
