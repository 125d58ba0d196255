"""Persistence across restarts, and `sluice lab apiserver` as its own process: URL on stdout and in
the data dir, HTTPS with the generated CA, a token from a file, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from lab.apiserver import ApiServer, ServerOptions, api_client, kubeconfig
from tests.apiserver.conftest import Watcher, pod_body, present, version
from tests.support import body, meta

REPO = Path(__file__).resolve().parents[2]


def test_state_survives_a_restart_and_the_counter_continues(tmp_path: Path) -> None:
    options = ServerOptions(flush_interval=0.05)
    with ApiServer(data_dir=tmp_path, options=options) as first, first.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(body({"metadata": {"name": "keep"}}))
        pod = core.create_namespaced_pod("keep", body(pod_body("p", {"a": "1"}, node="n1")))
        core.patch_namespaced_pod_status("p", "keep", {"status": {"phase": "Running"}})
        core.create_namespaced_pod("keep", body(pod_body("gone")))
        core.delete_namespaced_pod("gone", "keep")
        last_rv = first.store.resource_version
    assert json.loads((tmp_path / "state.json").read_text())["resourceVersion"] == last_rv
    with ApiServer(data_dir=tmp_path, options=options) as second, second.api_client() as api:
        core = client.CoreV1Api(api)
        again = core.read_namespaced_pod("p", "keep")
        assert meta(again).uid == meta(pod).uid
        assert present(again.status).phase == "Running"
        assert [meta(p).name for p in core.list_namespaced_pod("keep").items] == ["p"]
        assert version(core.list_namespaced_pod("keep")) == last_rv
        created = core.create_namespaced_pod("keep", body(pod_body("new")))
        assert version(created) == last_rv + 1
        # The event history does not survive: watching from before the restart is 410 Gone.
        with pytest.raises(client.ApiException) as exc:
            for _ in Watcher().stream(
                core.list_namespaced_pod, "keep", resource_version=str(last_rv - 1), timeout_seconds=2
            ):
                pass
        assert exc.value.status == 410


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"state\.json is not valid JSON"):
        ApiServer(data_dir=tmp_path).start()
    (tmp_path / "state.json").write_text('{"apiVersion": "something/else"}')
    with pytest.raises(ValueError, match="not a lab API server state file"):
        ApiServer(data_dir=tmp_path).start()
    state = {
        "apiVersion": "sluice.io/lab-apiserver-state/v1",
        "resourceVersion": 3,
        "objects": {"core/pods": [{}]},
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="a Pod without a name"):
        ApiServer(data_dir=tmp_path).start()


def test_kubeconfig_helper_round_trips_through_the_client(tmp_path: Path) -> None:
    with ApiServer(tls=True, token="tok") as srv:
        config = kubeconfig(srv.url, ca_pem=srv.ca_pem, token="tok")
        assert srv.url.startswith("https://")
        assert config["clusters"][0]["cluster"]["server"] == srv.url
        assert config["users"][0]["user"] == {"token": "tok"}
        path = srv.write_kubeconfig(tmp_path / "kc")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert yaml.safe_load(path.read_text()) == srv.kubeconfig()
        # The official client's own kubeconfig loader accepts it.
        from kubernetes import config as kube_config

        loaded = kube_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        try:
            assert meta(client.CoreV1Api(loaded).read_namespace("default")).name == "default"
        finally:
            loaded.close()
        # Without the CA the server's certificate is not trusted.
        with (
            api_client(srv.url, ca_file=None, token="tok") as unverified,
            pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            client.CoreV1Api(unverified).list_namespace(_request_timeout=5)


@pytest.fixture
def process_dir(tmp_path: Path) -> Path:
    """A data dir with a token file."""
    (tmp_path / "token").write_text("file-token\n")
    return tmp_path


def _start(data: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "lab",
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(data / "state"),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed (by its own PID)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_process_serves_https_with_a_token_and_stops_on_sigterm(
    process_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    proc = _start(process_dir, "--tls", "--token-file", str(process_dir / "token"))
    processes.append(proc)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("https://127.0.0.1:")
    state = process_dir / "state"
    assert (state / "apiserver.url").read_text().strip() == url
    ca = state / "pki" / "ca.crt"
    with api_client(url, ca_file=ca, token="file-token") as api:
        core = client.CoreV1Api(api)
        core.create_namespace(body({"metadata": {"name": "from-cli"}}))
    with api_client(url, ca_file=ca, token="wrong") as api, pytest.raises(client.ApiException) as exc:
        client.CoreV1Api(api).list_namespace()
    assert exc.value.status == 401
    # The kubeconfig it wrote works as is.
    loaded = yaml.safe_load((state / "kubeconfig").read_text())
    assert loaded["clusters"][0]["cluster"]["server"] == url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    # Restart (SIGINT this time): same CA, the namespace is still there.
    proc = _start(process_dir, "--tls", "--token-file", str(process_dir / "token"))
    processes.append(proc)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    with api_client(url, ca_file=ca, token="file-token") as api:
        assert meta(client.CoreV1Api(api).read_namespace("from-cli")).name == "from-cli"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


def test_cli_reports_bad_arguments_and_busy_ports(
    process_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    proc = _start(process_dir, "--listen", "nonsense")
    processes.append(proc)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "--listen must be HOST:PORT" in err
    assert "Traceback" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.cli", "lab", "apiserver", "--listen", f"127.0.0.1:{port}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        processes.append(proc)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"cannot start on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
