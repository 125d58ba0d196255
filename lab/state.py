"""The lab's state file: what `sluice lab up` created (namespaces, processes, nodes, pods), under a lock.

Everything the lab starts or creates is written here *before or right after* it exists, so that
`sluice lab down` can remove it even after a crash half-way through `up`. Processes are recorded
with their PID, their start time (from /proc/PID/stat) and the executable name, and are only ever
signalled while all three still match: a PID reused by an unrelated process is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.procs import pid_alive, process_cmdline, process_start_time

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
FORMAT_VERSION = 1
DEFAULT_STATE_DIR = Path("/run/sluice-lab")
STATE_ENV = "SLUICE_LAB_STATE"


class LabStateError(Exception):
    """The state directory or file is missing, unreadable, or describes a different lab."""


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process the lab started: name (e.g. `agent/node-1`), PID, start time, argv[0] basename."""

    name: str
    pid: int
    start_time: int
    exe: str
    netns: str | None
    log: str

    def alive(self) -> bool:
        """True while this very process runs (same PID, same start time, same program)."""
        if not pid_alive(self.pid) or process_start_time(self.pid) != self.start_time:
            return False
        argv = process_cmdline(self.pid)
        return any(os.path.basename(arg) == self.exe for arg in argv[:3])

    @staticmethod
    def of(name: str, pid: int, exe: str, netns: str | None, log: str) -> ProcessRecord:
        """Record the running process `pid`; raises LabStateError if it is already gone."""
        start = process_start_time(pid)
        if start is None:
            raise LabStateError(f"{name} (pid {pid}) exited right after it was started; see {log}")
        return ProcessRecord(name, pid, start, exe, netns, log)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node: Kubernetes name, index, namespace, underlay address, podCIDR and its files."""

    name: str
    index: int
    netns: str
    underlay_ip: str
    pod_cidr: str
    fabric_port: str
    dir: str

    @property
    def ovs_rundir(self) -> Path:
        """The node's OVS run directory (db.sock, br-int.mgmt, logs)."""
        return Path(self.dir) / "ovs"

    @property
    def cni_socket(self) -> Path:
        """The node agent's CNI socket."""
        return Path(self.dir) / "cni.sock"


@dataclass(frozen=True, slots=True)
class PodRecord:
    """One pod the lab kubelet created: identity, sandbox, address, and its servers' PIDs."""

    namespace: str
    name: str
    node: str
    netns: str
    container_id: str
    uid: str
    ip: str
    serve: tuple[str, ...] = ()
    servers: tuple[ProcessRecord, ...] = ()

    @property
    def key(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class LabState:
    """The whole lab as recorded: its namespaces, processes, nodes and pods."""

    prefix: str
    fabric_netns: str
    cp_netns: str
    api_fabric_url: str = ""
    api_host_port: int = 0
    ha: bool = False
    created: float = 0.0
    up_seconds: float = 0.0
    complete: bool = False
    namespaces: tuple[str, ...] = ()
    processes: tuple[ProcessRecord, ...] = ()
    nodes: tuple[NodeRecord, ...] = ()
    pods: tuple[PodRecord, ...] = ()
    version: int = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def process(self, name: str) -> ProcessRecord | None:
        """The process recorded under `name`, if any."""
        return next((p for p in self.processes if p.name == name), None)

    def node(self, name: str) -> NodeRecord:
        """The node named `name` (`node-2`, or just `2`); raises LabStateError if there is none."""
        wanted = f"node-{name}" if name.isdigit() else name
        for node in self.nodes:
            if node.name == wanted:
                return node
        raise LabStateError(f"no node {name!r} in the lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def pod(self, namespace: str, name: str) -> PodRecord | None:
        """The pod `namespace/name`, if the lab kubelet created it."""
        return next((p for p in self.pods if p.namespace == namespace and p.name == name), None)

    def with_process(self, record: ProcessRecord) -> LabState:
        """Return a copy with `record` added (replacing one of the same name)."""
        others = tuple(p for p in self.processes if p.name != record.name)
        return replace(self, processes=(*others, record))

    def without_process(self, name: str) -> LabState:
        """Return a copy without the process named `name`."""
        return replace(self, processes=tuple(p for p in self.processes if p.name != name))

    def with_namespace(self, netns: str) -> LabState:
        """Return a copy recording namespace `netns`."""
        if netns in self.namespaces:
            return self
        return replace(self, namespaces=(*self.namespaces, netns))

    def without_namespace(self, netns: str) -> LabState:
        """Return a copy no longer recording `netns`."""
        return replace(self, namespaces=tuple(n for n in self.namespaces if n != netns))

    def with_pod(self, pod: PodRecord) -> LabState:
        """Return a copy with `pod` added (replacing one with the same key)."""
        return replace(self, pods=(*(p for p in self.pods if p.key != pod.key), pod))

    def without_pod(self, namespace: str, name: str) -> LabState:
        """Return a copy without pod `namespace/name`."""
        key = f"{namespace}/{name}"
        return replace(self, pods=tuple(p for p in self.pods if p.key != key))

    def to_json(self) -> dict[str, Any]:
        """The JSON document stored in the state file."""
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> LabState:
        """Parse the state file; raises LabStateError for a malformed or foreign document."""
        try:
            if data.get("version") != FORMAT_VERSION:
                raise LabStateError(f"state file version {data.get('version')!r} is not {FORMAT_VERSION}")
            procs = tuple(ProcessRecord(**p) for p in data["processes"])
            nodes = tuple(NodeRecord(**n) for n in data["nodes"])
            pods = tuple(
                PodRecord(
                    **{
                        **p,
                        "serve": tuple(p.get("serve", ())),
                        "servers": tuple(ProcessRecord(**s) for s in p.get("servers", ())),
                    }
                )
                for p in data["pods"]
            )
            scalars = {k: v for k, v in data.items() if k not in ("processes", "nodes", "pods", "namespaces")}
            return LabState(
                **scalars,
                namespaces=tuple(data["namespaces"]),
                processes=procs,
                nodes=nodes,
                pods=pods,
            )
        except (KeyError, TypeError) as exc:
            raise LabStateError(f"malformed lab state: {exc}") from exc


class StateStore:
    """The state directory: `lab.json` (the state) and `lab.lock` (an flock for every update)."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory).absolute()
        # flock locks belong to an open file description: two opens in one process would block
        # each other, so threads of one process are serialized by this lock first.
        self._thread_lock = threading.RLock()
        self._depth = 0

    @property
    def path(self) -> Path:
        """The state file."""
        return self.dir / STATE_FILE

    def exists(self) -> bool:
        """True if a state file is there."""
        return self.path.exists()

    def load(self) -> LabState:
        """Read the state; raises LabStateError if there is none or it cannot be parsed."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise LabStateError(
                f"no lab in {self.dir} (no {STATE_FILE}); start one with `sluice lab up`"
            ) from None
        try:
            return LabState.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LabStateError(f"{self.path} is not valid JSON: {exc}") from exc

    def save(self, state: LabState) -> None:
        """Write the state atomically (temp file, fsync, rename)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(state.to_json(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's exclusive lock (serializes state changes across threads and processes).

        Re-entrant within one thread."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / LOCK_FILE, "a") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def update(self, change: Callable[[LabState], LabState]) -> LabState:
        """Load, apply `change`, save, all under the lock; return the new state."""
        with self.locked():
            state = change(self.load())
            self.save(state)
            return state
