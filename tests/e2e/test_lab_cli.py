"""The README's first command (`make lab`: up 2x2 and the ping matrix), then the real `sluice lab` CLI:
a second up refused, ping, kubectl through `sluice lab kubeconfig`, a crash, then down cleans everything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lab import netns as netns_lib
from lab.kubeapi import KubeClient
from lab.state import StateStore
from tests.e2e.conftest import unique_prefix
from tests.support import require_root_and_ovs

SLUICE = str(Path(sys.executable).parent / "sluice")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ovs


def sluice(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `sluice ARGS` and return the finished process."""
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_up_ping_kubectl_crash_down() -> None:
    require_root_and_ovs()
    state_dir = Path(tempfile.mkdtemp(prefix="sle-", dir="/tmp"))
    prefix = unique_prefix()
    common = ["--state", str(state_dir)]
    try:
        # The README's first command, as written (its state directory and prefix our own).
        make = subprocess.run(
            # -o: never reinstall the venv from inside a test (CI's `make test` has just built it)
            ["make", "-C", str(REPO), "-o", ".venv/.installed", "lab", f"LAB_FLAGS=--prefix {prefix}"],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "SLUICE_LAB_STATE": str(state_dir)},
        )  # fmt: skip
        assert make.returncode == 0, make.stdout + make.stderr
        assert "lab up in" in make.stderr  # the progress display
        assert "12/12 pairs reached" in make.stdout  # `sluice lab ping`: every pod reached every pod

        # `up` again: the same lab is left as it is (so `make lab` then `sluice lab up && ...`
        # works); a different one is refused, naming the running one.
        again = sluice("lab", "up", "--prefix", prefix, *common)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stderr and "left as it is" in again.stderr
        other = sluice("lab", "up", "--nodes", "3", "--prefix", prefix, *common)
        assert other.returncode == 1
        assert "already running" in other.stderr and "Traceback" not in other.stderr
        ping = sluice("lab", "ping", *common)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "12/12 pairs reached" in ping.stdout

        kubeconfig = sluice("lab", "kubeconfig", "--path", *common).stdout.strip()
        kubectl = shutil.which("kubectl")
        if kubectl is not None:  # the lab machines have it; otherwise the same kubeconfig, our client
            got = subprocess.run(
                [kubectl, f"--cache-dir={state_dir}/kubectl-cache", "get", "pods", "-o", "json"],
                capture_output=True, text=True, timeout=30, check=True,
                env={**os.environ, "KUBECONFIG": kubeconfig},
            )  # fmt: skip
            pods = json.loads(got.stdout)["items"]
        else:
            pods = KubeClient.from_kubeconfig(kubeconfig).get("/api/v1/namespaces/default/pods")["items"]
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-1", "node-2", "node-2"]
        assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)

        # A crash: the API server and an agent die. `down` must still clean up everything.
        state = StateStore(state_dir).load()
        for name in ("apiserver", "agent/node-2"):
            rec = state.process(name)
            assert rec is not None and rec.alive()
            os.kill(rec.pid, signal.SIGKILL)
        down = sluice("lab", "down", *common)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not state_dir.exists()
        assert not [e.name for e in netns_lib.registered(prefix)]
        assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not [p.name for p in state.processes if p.alive()]
        assert not [s.name for pod in state.pods for s in pod.servers if s.alive()]
        assert sluice("lab", "status", *common).returncode == 1
    finally:
        if (state_dir / "lab.json").exists():
            sluice("lab", "down", *common)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_down_with_a_damaged_state_file_still_cleans() -> None:
    require_root_and_ovs()
    state_dir = Path(tempfile.mkdtemp(prefix="sle-", dir="/tmp"))
    prefix = unique_prefix()
    names = [f"{prefix}cp", f"{prefix}node1"]
    try:
        for name in names:
            netns_lib.create_netns(name, persistent=True)
        daemon = netns_lib.Netns(names[1]).popen("sleep", "300")
        (state_dir / "lab.json").write_text("{truncated by a crash")
        (state_dir / "prefix").write_text(prefix + "\n")
        down = sluice("lab", "down", "--state", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert "removed 2 network namespaces" in down.stdout
        assert daemon.wait(10) is not None
        assert not [n for n in names if netns_lib.netns_exists(n)]
        assert not state_dir.exists()
    finally:
        for name in names:
            if netns_lib.read_entry(name) is not None:
                netns_lib.delete_netns(name)
        shutil.rmtree(state_dir, ignore_errors=True)
