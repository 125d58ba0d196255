"""`kubectl` (the real binary) against the stand-in over HTTPS with a bearer token: get, apply -f of
a Pod and a NetworkPolicy (create, then a three-way strategic-merge re-apply), label, delete, get -w."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from lab.apiserver import ApiServer
from tests.apiserver.conftest import present
from tests.support import body, meta, require

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: main
    image: {image}
    ports:
    - containerPort: 80
"""

NETPOL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
spec:
  podSelector:
    matchLabels:
      app: web
  ingress:
  - from:
    - ipBlock:
        cidr: 100.64.0.0/16
        except: [100.64.1.0/24]
    - namespaceSelector:
        matchExpressions:
        - {{key: team, operator: In, values: [a, b]}}
    ports:
    - protocol: TCP
      port: 80
      endPort: {end_port}
"""


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """An HTTPS stand-in that requires a bearer token, with its state in a temp dir."""
    srv = ApiServer(
        "127.0.0.1", 0, data_dir=tmp_path_factory.mktemp("apiserver"), token=secrets.token_hex(16), tls=True
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Kubectl:
    """Runs the kubectl binary with a private kubeconfig, home and cache directory."""

    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
        self.cache = home / "cache"

    def argv(self, *args: str) -> list[str]:
        return [self.binary, f"--cache-dir={self.cache}", *args]

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args), env=self.env, input=stdin, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def kubectl(tls_server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl configured (kubeconfig from `ApiServer.write_kubeconfig`) for the TLS server."""
    binary = shutil.which("kubectl")
    require(binary is not None, "needs kubectl on PATH (the lab machines have /usr/bin/kubectl)")
    assert binary is not None
    home = tmp_path_factory.mktemp("kubectl-home")
    return Kubectl(binary, tls_server.write_kubeconfig(home / "kubeconfig"), home)


@pytest.fixture
def ns(tls_server: ApiServer) -> Iterator[str]:
    """A fresh namespace on the TLS server."""
    name = f"k-{secrets.token_hex(4)}"
    with tls_server.api_client() as api:
        client.CoreV1Api(api).create_namespace(body({"metadata": {"name": name}}))
    yield name
    with tls_server.api_client() as api:
        client.CoreV1Api(api).delete_namespace(name)


def test_kubectl_get(kubectl: Kubectl) -> None:
    out = kubectl("get", "namespaces").stdout
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert any(line.split()[:2] == ["default", "Active"] for line in out.splitlines())
    listed = json.loads(kubectl("get", "namespaces", "-o", "json").stdout)
    assert "kube-system" in [item["metadata"]["name"] for item in listed["items"]]
    # Short names and groups resolve through discovery.
    kubectl("get", "netpol,ep,endpointslices,leases", "-A")


def test_kubectl_apply_label_delete(kubectl: Kubectl, ns: str, tls_server: ApiServer, tmp_path: Path) -> None:
    pod_file, np_file = tmp_path / "pod.yaml", tmp_path / "np.yaml"
    pod_file.write_text(POD.format(image="busybox:1.36"))
    np_file.write_text(NETPOL.format(end_port=90))
    assert "pod/web created" in kubectl("apply", "-n", ns, "-f", str(pod_file)).stdout
    assert (
        "networkpolicy.networking.k8s.io/allow-web created"
        in kubectl("apply", "-n", ns, "-f", str(np_file)).stdout
    )
    # Re-apply with changes: kubectl sends a three-way strategic merge patch.
    pod_file.write_text(POD.format(image="busybox:1.37"))
    np_file.write_text(NETPOL.format(end_port=95))
    assert "pod/web configured" in kubectl("apply", "-n", ns, "-f", str(pod_file)).stdout
    assert "configured" in kubectl("apply", "-n", ns, "-f", str(np_file)).stdout
    assert "unchanged" in kubectl("apply", "-n", ns, "-f", str(np_file)).stdout
    with tls_server.api_client() as api:
        pod = client.CoreV1Api(api).read_namespaced_pod("web", ns)
        policy = client.NetworkingV1Api(api).read_namespaced_network_policy("allow-web", ns)
    assert present(pod.spec).containers[0].image == "busybox:1.37"
    assert "kubectl.kubernetes.io/last-applied-configuration" in present(meta(pod).annotations)
    ingress = present(present(policy.spec).ingress)[0]
    assert present(ingress.ports)[0].end_port == 95
    assert present(present(ingress._from)[0].ip_block)._except == ["100.64.1.0/24"]

    table = kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:3] == ["web", "0/1", "Pending"]
    assert "app=web" in kubectl("get", "netpol", "-n", ns).stdout

    assert "pod/web labeled" in kubectl("label", "-n", ns, "pod", "web", "tier=front").stdout
    assert kubectl("get", "pod", "web", "-n", ns, "-o", "jsonpath={.metadata.labels.tier}").stdout == "front"
    kubectl("label", "-n", ns, "pod", "web", "tier-")
    assert kubectl("get", "pods", "-n", ns, "-l", "tier", "-o", "name").stdout == ""
    assert kubectl("get", "pods", "-n", ns, "-l", "app in (web)", "-o", "name").stdout.strip() == "pod/web"

    assert 'pod "web" deleted' in kubectl("delete", "-n", ns, "pod", "web").stdout
    kubectl("delete", "-n", ns, "-f", str(np_file))
    assert "No resources found" in kubectl("get", "pods,netpol", "-n", ns).stderr
    missing = kubectl("get", "pod", "web", "-n", ns, check=False)
    assert missing.returncode != 0 and 'pods "web" not found' in missing.stderr


def test_kubectl_rejects_invalid_objects_with_the_server_message(kubectl: Kubectl, ns: str) -> None:
    bad = NETPOL.format(end_port=70)  # endPort below port
    result = kubectl("apply", "-n", ns, "-f", "-", stdin=bad, check=False)
    assert result.returncode != 0
    assert 'The NetworkPolicy "allow-web" is invalid' in result.stderr
    assert (
        "spec.ingress[0].ports[0].endPort: Invalid value: 70: must be greater than or equal to `port`"
        in result.stderr
    )
    unknown = POD.format(image="x").replace("spec:", "bogus: 1\nspec:")
    result = kubectl("apply", "-n", ns, "-f", "-", stdin=unknown, check=False)
    assert result.returncode != 0 and 'unknown field "bogus"' in result.stderr


def test_kubectl_get_watch_shows_events(kubectl: Kubectl, ns: str, tls_server: ApiServer) -> None:
    proc = subprocess.Popen(
        kubectl.argv("get", "pods", "-n", ns, "-w", "--output-watch-events"),
        env=kubectl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        # Wait until kubectl's watch is open before making the change it must show.
        deadline = time.monotonic() + 20
        while tls_server.store.watcher_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with tls_server.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_pod(
                ns,
                body(
                    {"metadata": {"name": "watched"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
                ),
            )
            core.delete_namespaced_pod("watched", ns)
        seen: list[list[str]] = []
        while len([s for s in seen if s[:2] in (["ADDED", "watched"], ["DELETED", "watched"])]) < 2:
            seen.append(lines.get(timeout=20).split())
        assert ["ADDED", "watched"] in [s[:2] for s in seen]
        assert ["DELETED", "watched"] in [s[:2] for s in seen]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_kubectl_with_a_wrong_token_is_unauthorized(
    kubectl: Kubectl, tls_server: ApiServer, tmp_path: Path
) -> None:
    config = tls_server.kubeconfig()
    config["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "bad-kubeconfig"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        kubectl.argv("get", "pods"),
        env={**kubectl.env, "KUBECONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr or "must be logged in" in result.stderr
