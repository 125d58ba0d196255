"""The lab's files and processes: the state-directory layout, the installed programs, starting and
stopping a component process by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.procs import stop_pids
from lab.state import LabStateError, ProcessRecord

# Namespace names, addresses and ports of the lab (ARCHITECTURE §6: only 100.64.0.0/10 for pods and
# 198.18.0.0/15 for the underlay, only inside namespaces the lab creates).
FABRIC_PREFIXLEN = 15
API_IP = "198.18.0.1"
API_PORT = 6443
OPENFLOW_PORT = 6653
FABRIC_BRIDGE = "fabric0"
UPLINK = "uplink0"  # each node's underlay interface (the agent moves its address to br-phy)
MAX_NODES = 200
MAX_STATE_DIR_LEN = 60  # OVS unix socket paths under STATE/node-N/ovs must stay under 107 bytes


class LabError(Exception):
    """A lab operation failed in a way the user can act on; the message says what and how."""


def node_underlay_ip(index: int) -> str:
    """The underlay (fabric) address of node `index` (1-based): 198.18.0.(10+index)."""
    return f"198.18.0.{10 + index}"


def node_pod_cidr(index: int) -> str:
    """The podCIDR of node `index` (1-based): 100.64.INDEX.0/24."""
    return f"100.64.{index}.0/24"


def program(name: str) -> Path:
    """Path of an installed console script (`sluice-agent`, ...) next to this Python.

    Raises LabError if it is not installed."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise LabError(f"{path} is missing: install Sluice first (`make venv` or `pip install -e .`)")
    return path


def child_env() -> dict[str, str]:
    """The environment for component processes: ours without Sluice overrides (configs are files)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLUICE_AGENT_", "SLUICE_CONTROLLER_", "SLUICE_TEST_"))
    }


@dataclass(frozen=True, slots=True)
class LabPaths:
    """Where everything of one lab lives inside its state directory."""

    root: Path

    @property
    def logs(self) -> Path:
        """Component logs."""
        return self.root / "logs"

    @property
    def apiserver_data(self) -> Path:
        """The API server's `--data` directory (state, PKI, the fabric kubeconfig)."""
        return self.root / "apiserver"

    @property
    def fabric_kubeconfig(self) -> Path:
        """Kubeconfig for components inside the lab (server https://198.18.0.1:6443)."""
        return self.apiserver_data / "kubeconfig"

    @property
    def host_kubeconfig(self) -> Path:
        """Kubeconfig for the host (server https://127.0.0.1:PORT through the port forward)."""
        return self.root / "kubeconfig"

    @property
    def token(self) -> Path:
        """The API server's bearer token."""
        return self.root / "token"

    def node_dir(self, name: str) -> Path:
        """A node's directory (OVS run dir, agent config and state, CNI config and socket)."""
        return self.root / name

    def log(self, component: str) -> Path:
        """The log file of a component (`agent-node-1`, ...)."""
        return self.logs / f"{component}.log"


def spawn(
    name: str,
    argv: list[str],
    *,
    netns: str | None,
    log: Path,
    stdout: Path | None = None,
) -> ProcessRecord:
    """Start `argv` (inside `netns` if given) detached from our session; return its record.

    stdout and stderr go to `log` (stdout to `stdout` if given). The process outlives this one;
    it is stopped by PID through its record. Raises LabStateError if it dies at once."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # Each component's temporary files (the kubernetes client writes the kubeconfig's CA to one,
    # which a component killed with SIGKILL never removes) stay in the lab's state: `lab down`
    # removes them with it.
    tmpdir = log.with_name(f"{log.stem}.tmp")
    tmpdir.mkdir(exist_ok=True)
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else argv
    with open(log, "ab") as err, open(stdout or log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**child_env(), "TMPDIR": str(tmpdir)},
            start_new_session=True,  # a Ctrl-C at the terminal must not reach the lab's daemons
        )
    # `ip netns exec` execs the program in place, so the PID is the program's; wait for the exec.
    exe = os.path.basename(argv[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            break
        if any(os.path.basename(part.decode(errors="replace")) == exe for part in cmdline[:3]):
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        raise LabStateError(f"{name} exited at once (code {proc.returncode}); see {log}:\n{tail(log)}")
    return ProcessRecord.of(name, proc.pid, exe, netns, str(log))


def stop(record: ProcessRecord, timeout: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL after `timeout`) the recorded process if it is still that process.

    Returns True if it was running."""
    if not record.alive():
        return False
    stop_pids([record.pid], timeout=timeout)
    return True


def stop_cleanly(record: ProcessRecord, timeout: float = 10.0) -> bool:
    """Stop the recorded process like `stop`; return False only if it ignored SIGTERM for
    `timeout` seconds and had to be killed."""
    return not (record.alive() and stop_pids([record.pid], timeout=timeout))


def tail(path: Path | str, lines: int = 15) -> str:
    """The last `lines` lines of a log file (or a note that there is none)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
