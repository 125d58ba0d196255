"""`sluice-controller` as a program: bad config and taken ports are clear errors; health before readiness."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from lab.apiserver import ApiServer
from tests.controller.harness import CONTROLLER_BIN, ControllerProcess, free_port, wait_for
from tests.support import body, require_root_and_ovs


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONTROLLER_BIN), *args], capture_output=True, text=True, timeout=timeout)


def test_an_unknown_setting_is_named_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("openflow_port: 6653\nresync_secs: 5\n")
    result = run("--config", str(config))
    assert result.returncode == 1
    assert "resync_secs: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_a_taken_openflow_port_exits_3_with_one_line(tmp_path: Path) -> None:
    with ApiServer("127.0.0.1", 0) as api, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        config.write_text(
            f"openflow_address: 127.0.0.1\nopenflow_port: {port}\nmetrics_address: 127.0.0.1\n"
            f"metrics_port: {free_port()}\nkubeconfig: {kubeconfig}\n"
        )
        result = run("--config", str(config))
    assert result.returncode == 3
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_healthy_but_not_ready_while_the_api_server_is_unreachable(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # A kubeconfig for a server that is not there (yet).
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\nusers: [{name: x, user: {}}]\n"
    )
    controller = ControllerProcess(tmp_path, kubeconfig)
    assert controller.proc is None
    proc = subprocess.Popen(
        [str(CONTROLLER_BIN), "--config", str(controller.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller.proc = proc
    try:
        wait_for(lambda: controller.http("/healthz")[0] == 200, 20, "/healthz")
        assert controller.http("/readyz")[0] == 503
        assert controller.http("/nope")[0] == 404
        code, took = controller.stop(signal.SIGTERM)
        assert code == 0 and took < 5
    finally:
        controller.kill()


def test_sigterm_ends_open_tls_watches_at_once_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The informers sit in TLS reads of watch streams on which nothing arrives for a minute (the
    # default bookmark interval); stopping must not wait for the next chunk of any of them.
    # The kubernetes client writes the kubeconfig's inline CA to a temporary file; a clean stop
    # removes it.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    with ApiServer("127.0.0.1", 0, tls=True, token="t0ken") as api:
        controller = ControllerProcess(tmp_path, api.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            controller.start()  # /readyz: every informer has listed and is watching
            # An event on each watch: its reader then waits mid-stream for the next chunk.
            core = client.CoreV1Api(api.api_client())
            core.create_namespace(body({"metadata": {"name": "quiet"}}))
            core.create_node(body({"metadata": {"name": "node-9"}, "spec": {"podCIDR": "100.64.9.0/24"}}))
            core.create_namespaced_pod(
                "quiet",
                body({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
            )
            client.NetworkingV1Api(api.api_client()).create_namespaced_network_policy(
                "quiet", body({"metadata": {"name": "np"}, "spec": {"podSelector": {}}})
            )
            time.sleep(1)  # let every informer take its event in
            code, took = controller.stop(signal.SIGTERM)
            assert code == 0 and took < 5, f"exit {code} after {took:.1f}s:\n{controller.log_text()}"
            assert list(scratch.iterdir()) == []
        finally:
            controller.kill()


def test_in_cluster_service_account_is_used_without_a_kubeconfig(tmp_path: Path) -> None:
    # What a Deployment's pod sees: KUBERNETES_SERVICE_HOST/PORT and the service account's token
    # and CA under /var/run/secrets/kubernetes.io/serviceaccount. The files are put there in a
    # private mount namespace (a tmpfs over /run, which /var/run points to), so the machine's own
    # /run is untouched.
    require_root_and_ovs()
    with ApiServer("127.0.0.1", 0, tls=True, token="in-cluster-t0ken") as api:
        assert api.ca_file is not None
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("in-cluster-t0ken")
        (account / "ca.crt").write_bytes(api.ca_file.read_bytes())
        (account / "namespace").write_text("kube-system")
        controller = ControllerProcess(tmp_path, tmp_path / "unused")
        lines = controller.config.read_text().splitlines()
        controller.config.write_text("\n".join(x for x in lines if not x.startswith("kubeconfig:")) + "\n")
        secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
        script = (
            f"mount -t tmpfs sluice-test /run && mkdir -p {secrets} && cp {account}/* {secrets}/ && "
            f'exec "{CONTROLLER_BIN}" --config "{controller.config}"'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_CONTROLLER_")}
        env |= {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        with open(tmp_path / "controller.log", "wb") as out:
            controller.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        controller.log_path = tmp_path / "controller.log"
        try:
            # /readyz is 200 only once every informer has listed through the API server.
            wait_for(lambda: controller.http("/readyz")[0] == 200, 20, "/readyz", controller.log_text)
            code, _ = controller.stop(signal.SIGTERM)
            assert code == 0
        finally:
            controller.kill()
