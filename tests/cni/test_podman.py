"""A real runtime: podman runs a container on a Sluice network through the real plugin and agent.

podman 4.3 (Debian 12) with its CNI backend reads a conflist (cniVersion 1.0.0, the highest it
accepts) from a test-owned config dir and finds `sluice-cni` in a test-owned plugin dir, both named
in a test-owned containers.conf (`CONTAINERS_CONF`). The container runs from a local rootfs (a
static busybox; `--rootfs`, nothing is pulled) with podman's own temporary `--root`/`--runroot`,
so nothing is left on the machine. podman passes only `K8S_POD_NAME` (the container name) in
CNI_ARGS; the conflist's `podNamespace` names the Pod's namespace.

Machine notes (why the flags): crun refuses this machine's hybrid cgroup layout, so podman uses
runc; the default RLIMIT_NOFILE podman asks for is above this machine's hard limit, so the
containers.conf sets ulimits; the cgroups podman makes go under a test-owned parent, removed at
the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovsagent.naming import port_name
from tests.agent.harness import GATEWAY, POD_CIDR, AgentBed, ControllerStandIn, agent_bed
from tests.cni.conftest import plugin_path
from tests.conftest import NetnsFactory, OvsNodeFactory

NETWORK = "sluice"
CONTAINER = "pm-web"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache: podman 4.3 has no setting to move it


def _require_podman() -> None:
    missing = [b for b in ("podman", "runc", "conmon") if shutil.which(b) is None]
    if not Path("/bin/busybox").exists():
        missing.append("busybox (package busybox-static)")
    if missing:
        reason = f"needs {', '.join(missing)}: `make deps` installs them (podman runc busybox-static)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class Podman:
    """podman with everything it keeps (storage, run state, config, cgroups) in one temp dir."""

    def __init__(self, tmp: Path, agent_socket: Path) -> None:
        self.tmp = tmp
        self.cgroup_parent = f"/{tmp.name}"
        self.cni_cache_existed = CNI_CACHE.exists()
        plugins = tmp / "cni-bin"
        plugins.mkdir()
        (plugins / "sluice-cni").symlink_to(plugin_path())
        confdir = tmp / "cni-conf"
        confdir.mkdir()
        conflist = {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "sluice-cni",
                    "agentSocket": str(agent_socket),
                    "podNamespace": "default",
                    "timeoutSeconds": 30,
                }
            ],
        }
        (confdir / f"{NETWORK}.conflist").write_text(json.dumps(conflist))
        self.conf = tmp / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            'runtime = "runc"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{plugins}"]\n'
            f'network_config_dir = "{confdir}"\n'
        )
        rootfs = tmp / "rootfs"
        for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in ("sh", "sleep", "ip", "ping"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        self.rootfs = rootfs

    def run(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` with the test's storage and config; raise with its output on failure."""
        cmd = [
            "podman",
            "--root", str(self.tmp / "root"),
            "--runroot", str(self.tmp / "runroot"),
            "--tmpdir", str(self.tmp / "tmp"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def close(self) -> None:
        """Remove every container, then the storage (podman's own unmount first) and the cgroups."""
        with contextlib.suppress(Exception):
            self.run("rm", "--all", "--force", "--time", "0", check=False)
        with contextlib.suppress(Exception):
            self.run("system", "reset", "--force", check=False)
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else []:
            parent = hierarchy / self.cgroup_parent.lstrip("/")
            if parent.is_dir():
                for child in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not self.cni_cache_existed:  # only the empty dirs libcni made for this test
            for path in [*sorted(CNI_CACHE.rglob("*"), key=lambda p: len(p.parts), reverse=True), CNI_CACHE]:
                with contextlib.suppress(OSError):
                    path.rmdir()


@pytest.fixture
def podman_bed(ovs_node_factory: OvsNodeFactory, netns: NetnsFactory) -> Iterator[tuple[AgentBed, Podman]]:
    """A node with the agent running (veth pods) and a podman set up for its Sluice network."""
    _require_podman()
    with agent_bed(ovs_node_factory, netns) as bed:
        bed.start_agent()
        podman = Podman(Path(tempfile.mkdtemp(prefix="sluice-podman-")), bed.socket_path)
        try:
            yield bed, podman
        finally:
            podman.close()


def _ip_records(bed: AgentBed) -> list[str]:
    alloc = bed.ipam_dir / "allocations"
    return sorted(p.name for p in alloc.iterdir() if not p.name.startswith(".")) if alloc.exists() else []


def test_podman_container_gets_its_address_and_rm_releases_everything(
    podman_bed: tuple[AgentBed, Podman],
) -> None:
    bed, podman = podman_bed
    # the Pod the container stands for (podman names it by the container name)
    body = {
        "metadata": {"name": CONTAINER, "namespace": "default"},
        "spec": {"nodeName": bed.node_name, "containers": [{"name": "main", "image": "busybox"}]},
    }
    bed.in_node.run(bed.core.create_namespaced_pod, "default", body)
    with ControllerStandIn(bed):
        podman.run(
            "run", "--detach", "--name", CONTAINER, "--network", NETWORK,
            "--cgroup-parent", podman.cgroup_parent,
            "--rootfs", str(podman.rootfs), "/bin/sleep", "300",
        )  # fmt: skip
    inspect = json.loads(podman.run("inspect", CONTAINER).stdout)[0]
    net = inspect["NetworkSettings"]["Networks"][NETWORK]
    ip = net["IPAddress"]
    assert ip in {str(a) for a in POD_CIDR.hosts()}, net
    assert net["Gateway"] == str(GATEWAY) and net["IPPrefixLen"] == POD_CIDR.prefixlen, net
    sandbox = inspect["NetworkSettings"]["SandboxKey"]
    assert os.path.exists(sandbox)
    # inside the container: the address on eth0, the default route, and the gateway answers
    addr = podman.run("exec", CONTAINER, "ip", "-4", "addr", "show", "eth0").stdout
    assert f"inet {ip}/24" in addr, addr
    route = podman.run("exec", CONTAINER, "ip", "route").stdout
    assert f"default via {GATEWAY}" in route, route
    pong = podman.run("exec", CONTAINER, "ping", "-c", "1", "-W", "5", str(GATEWAY), check=False)
    assert pong.returncode == 0, pong.stdout + pong.stderr
    # the agent's side: port, address record, annotation
    port = port_name("default", CONTAINER)
    assert bed.ofport(port) is not None
    assert _ip_records(bed) == [ip]
    assert json.loads(bed.annotations(CONTAINER)[NETWORK_STATUS])[0]["ips"] == [ip]
    # podman rm: DEL, and everything is released
    podman.run("rm", "--force", "--time", "0", CONTAINER)
    assert bed.ofport(port) is None
    assert port not in bed.node.vsctl("list-ports", "br-int").split()
    assert _ip_records(bed) == []
    assert NETWORK_STATUS not in bed.annotations(CONTAINER)
    assert not os.path.exists(sandbox)
    assert "DEL" in bed.agent.log() if bed.agent else False
