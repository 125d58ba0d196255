"""Benchmark: CNI ADD and DEL latency of Sluice against the reference `bridge` + `host-local` plugins.

Run (root, OVS and containernetworking-plugins installed): `.venv/bin/python -m bench.cni`
(`--sequential 50 --concurrent 20 --rounds 3 --startup-runs 40` are the defaults).

One run, one machine, both sides measured the same way (exec of the plugin binary to its exit,
CNI_* environment and config on stdin, a fresh network namespace per pod created beforehand):

* Sluice: the real `sluice-cni` (installed as `sluice install-cni` installs it) talking to the
  real `sluice-agent` (veth pods, userspace OVS in a node namespace, the lab API server). ADD is
  measured until it answers, i.e. until the pod's flows are on br-int: a controller stand-in
  watches the Pods (a real watch on the API server) and the node's OVSDB (`ovsdb-client monitor`
  of the ofport column: the controller learns ofports from the switch) and, as soon as a pod's
  network status is published, recompiles the node as the controller does (incrementally, with a
  `CompileCache`) and installs the flows that differ from its last push with one
  `ovs-ofctl --bundle add-flows`, as the tests do. That stand-in's reaction is part of the number.
* Reference: `/usr/lib/cni/bridge` with `host-local` IPAM (`isGateway`, its own podCIDR), run in
  a namespace of its own.

Both are set up first and then measured interleaved, so that a slow spell of a shared machine
hits both sides alike: 50 sequential ADDs in alternating blocks of 5 reference and 5 Sluice ADDs
(which side goes first alternates too, with a 50 ms pause between blocks so one side's trailing
work does not land in the other's measurement), then their DELs the same way; then 3 rounds of
20 concurrent ADDs and of their 20 concurrent DELs, each round running both sides one after the
other (alternating which goes first). p50 and p99 (nearest rank) in milliseconds and the ratio
Sluice/reference; for the concurrent rows p50 is over all rounds' calls and p99 is the median
of the rounds' p99s, so one round caught by a burst of load elsewhere does not decide it. Then
the plugin's start-up: exec to exit of `sluice-cni` for VERSION against `python -c pass` with
the same interpreter (the issue's baseline) and against `python -IS -c pass` (the floor of any
Python plugin, started as the installed one is), medians of interleaved runs; and, as the floor of
any ADD that goes through the agent, the plugin's STATUS round trip (the agent answers it at once)
against the reference's ADD. Targets
(docs/cni.md): ADD p50 <= 2.0x, concurrent ADD p99 <= 3.0x, VERSION <= 1.3x. Not a test: the
numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import watch

from bench.stats import percentile
from flows.cluster import Cluster, PodSpec
from flows.compiler import CompileCache, compile_node
from flows.diff import diff
from flows.flowset import FlowSet
from flows.ofctl import render_flows
from lab import netns as lab_netns
from ovsagent.naming import port_name
from tests.agent.harness import AgentBed, InNetns, agent_bed, standalone_factories
from tests.cni.conftest import plugin_path
from tests.support import meta

REFERENCE_DIR = Path("/usr/lib/cni")
REFERENCE_SUBNET = "100.64.200.0/24"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
# Sequential calls alternate between the sides in blocks this long, each block after a pause in
# which what the other side's last call set going (Sluice's stand-in bookkeeping, OVSDB
# updates) can finish, so neither side is measured while the other one's tail still runs.
SEQUENTIAL_BLOCK = 5
SETTLE_SECONDS = 0.05


def timed_exec(plugin: Path, env: dict[str, str], config: dict[str, Any]) -> tuple[float, str]:
    """Exec `plugin` as a runtime does; return (seconds from exec to exit, stdout). Raises on failure."""
    data = json.dumps(config).encode()
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    started = time.monotonic()
    proc = subprocess.run([str(plugin)], input=data, env=full_env, capture_output=True, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{plugin.name} {env['CNI_COMMAND']} {env['CNI_CONTAINERID']}: {proc.stdout!r}")
    return elapsed, proc.stdout.decode()


class OfportWatch:
    """The ofport of every Interface, kept up to date by `ovsdb-client monitor` (name and ofport
    columns only, parsed by that C program and by the json module's C decoder). The controller
    learns ofports from the switch's port-status messages; a python-ovs replica of the node's
    OVSDB would cost this process (which also hosts the API server stand-in and the measuring
    threads) a pure-Python JSON parse of every port's whole row."""

    def __init__(self, db_target: str) -> None:
        self._proc = subprocess.Popen(
            [
                "ovsdb-client",
                "--format=json",
                "monitor",
                db_target,
                "Open_vSwitch",
                "Interface",
                "name,ofport",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._ofports: dict[str, int] = {}
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.startswith("{"):
                continue
            table = json.loads(line)
            with self._changed:
                for row in table["data"]:
                    values = dict(zip(table["headings"], row, strict=True))
                    name, ofport = values["name"], values["ofport"]
                    if values["action"] == "delete":
                        self._ofports.pop(name, None)
                    elif values["action"] in ("initial", "insert", "new") and isinstance(ofport, int):
                        self._ofports[name] = ofport  # (an unassigned ofport is an empty set)
                self._changed.notify_all()

    def wait_for_ofport(self, name: str, timeout: float = 10.0) -> int:
        """Return `name`'s ofport once vswitchd has assigned one; raise RuntimeError after `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ofports.get(name, -1) > 0, timeout):
                raise RuntimeError(f"interface {name} got no ofport within {timeout}s")
            return self._ofports[name]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(10)


class WatchingStandIn:
    """The controller's part, event-driven as the controller is: a watch on the Pods for their
    network status, an `OfportWatch` for their ports' ofports (the controller learns those from
    the switch's port-status messages), and, one push at a time on a worker, an incremental
    compile of the node and `ovs-ofctl --bundle add-flows` of the flows new or changed since the
    last push (the controller diffs the same way; this stand-in never deletes flows)."""

    def __init__(self, bed: AgentBed) -> None:
        self.bed = bed
        self._ns = InNetns(f"/run/netns/{bed.node.netns}")
        self._node = bed.node_spec()  # the node's annotations do not change during the run
        self._ofports = OfportWatch(bed.node.db_target)
        self._pending: queue.Queue[tuple[str, ipaddress.IPv4Address] | None] = queue.Queue()
        self._installer = threading.Thread(target=self._install_loop, daemon=True)
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._done: set[str] = set()
        self._cache = CompileCache()
        self._pushed = FlowSet()  # the last compile, all of it pushed (stale flows are left)
        self._pods: dict[str, PodSpec] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: self._ns.run(self._loop), daemon=True)
        self.errors: list[BaseException] = []
        self.seen_at: dict[str, float] = {}  # when a pod's network status was first seen
        self.installed_at: dict[str, float] = {}  # when its flows were on br-int
        self._installed_cond = threading.Condition()

    def __enter__(self) -> WatchingStandIn:
        self._thread.start()
        self._installer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watch.stop()  # type: ignore[no-untyped-call]
        self._thread.join(10)
        self._pending.put(None)
        self._installer.join(10)
        self._ns.close()
        self._ofports.close()

    def _loop(self) -> None:
        # list, then watch from the list's resourceVersion on, resuming where the last event left
        # off: no change between two watch calls is missed
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.bed.core.list_namespaced_pod("default")
                    assert listed.metadata is not None
                    version = listed.metadata.resource_version
                    for pod in listed.items:
                        self._seen(str(meta(pod).name), meta(pod).annotations)
                # Plain JSON events (deserialize=False): building V1Pod objects costs the
                # kubernetes client milliseconds of CPU per event, which a controller does not pay.
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    self.bed.core.list_namespaced_pod,
                    "default",
                    resource_version=version,
                    timeout_seconds=1,
                    deserialize=False,
                ):
                    if event["type"] == "ERROR":
                        version = None
                        break
                    metadata = event["object"]["metadata"]
                    self._seen(metadata["name"], metadata.get("annotations"))
                    version = metadata["resourceVersion"]
            except Exception as exc:  # keep watching; report at the end
                version = None
                if not self._stop.is_set():
                    self.errors.append(exc)

    def _seen(self, name: str, annotations: dict[str, str] | None) -> None:
        status = (annotations or {}).get(NETWORK_STATUS)
        with self._lock:
            if not status:  # DEL unpublished it: the controller would compile it no more
                self._done.discard(name)
                self._pods.pop(name, None)
                return
            if name in self._done:
                return
            self._done.add(name)
        ip = ipaddress.IPv4Address(json.loads(status)[0]["ips"][0])
        self.seen_at.setdefault(name, time.monotonic())
        self._pending.put((name, ip))

    def _install_loop(self) -> None:
        # One push at a time, of every pod that became ready meanwhile, as the controller does
        # (a dirty node is recompiled and pushed in one bundle); `lab.ovs.OvsNode.add_flows` is
        # not safe for concurrent callers on one bridge anyway (one fixed file per bridge).
        while True:
            item = self._pending.get()
            batch = [item]
            while not self._pending.empty():
                batch.append(self._pending.get())
            ready = [b for b in batch if b is not None]
            if ready:
                try:
                    self._install_flows(ready)
                except Exception as exc:
                    self.errors.append(exc)
            if None in batch:
                return

    def _install_flows(self, pods: list[tuple[str, ipaddress.IPv4Address]]) -> None:
        node, ofport = self.bed.node_name, self._ofports.wait_for_ofport
        specs = [PodSpec("default", pod, node, ip, ofport(port_name("default", pod))) for pod, ip in pods]
        with self._lock:
            self._pods.update((p.name, p) for p in specs)
            every = tuple(self._pods.values())
        desired = compile_node(Cluster((self._node,), every), self.bed.node_name, self._cache)
        plan = diff(self._pushed, desired)
        if plan.adds or plan.modifies:
            self.bed.node.add_flows("br-int", render_flows([*plan.adds, *plan.modifies]))
        self._pushed = desired
        now = time.monotonic()
        with self._installed_cond:
            for name, _ in pods:
                self.installed_at[name] = now
            self._installed_cond.notify_all()

    def installed(self, pod: str) -> float:
        """When `pod`'s flows were installed (waits: the ADD may answer before this thread records it)."""
        with self._installed_cond:
            if not self._installed_cond.wait_for(lambda: pod in self.installed_at, timeout=10):
                raise RuntimeError(f"the stand-in never installed the flows of {pod}")
            return self.installed_at[pod]


def _sluice_args(pod: str, container_id: str) -> str:
    return (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id}"
    )


class Side:
    """One CNI under measurement: its pods (name -> netns path) and how to call its plugin."""

    label = ""

    def __init__(self) -> None:
        self.pods: dict[str, str] = {}

    def create(self, pod: str) -> None:
        """Make `pod` ready to be added (its sandbox, and what else the side needs)."""
        raise NotImplementedError

    def call(self, command: str, pod: str) -> float:
        """Exec the plugin for `pod`; return the seconds from exec to exit."""
        raise NotImplementedError

    def call_many(self, command: str, pods: list[str]) -> list[float]:
        """`call` for all `pods` at once; return their latencies."""
        raise NotImplementedError


class SluiceSide(Side):
    """The installed `sluice-cni` and the real agent of `bed`, flows from a `WatchingStandIn`."""

    label = "sluice"

    def __init__(self, bed: AgentBed, stand_in: WatchingStandIn, concurrent: int) -> None:
        super().__init__()
        self.bed, self.stand_in = bed, stand_in
        self.plugin = plugin_path()
        self.config = {
            "cniVersion": "1.0.0",
            "name": "sluice",
            "type": "sluice-cni",
            "agentSocket": str(bed.socket_path),
            "timeoutSeconds": 60,
        }
        self.pool = ThreadPoolExecutor(max_workers=concurrent)
        self.phases: dict[str, list[float]] = {"phase_plumb": [], "phase_stand_in": [], "phase_ready": []}
        # Bumped for a new sandbox of every pod, as a runtime makes one after a DEL: new container ids.
        self.generation = 0

    def create(self, pod: str) -> None:
        """The Pod in the API server and its sandbox."""
        self.pods[pod] = self.bed.create_pod(pod)

    def call(self, command: str, pod: str) -> float:
        container_id = f"c-{pod}-{self.generation}" if self.generation else f"c-{pod}"
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": self.pods[pod],
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": _sluice_args(pod, container_id),
        }
        return timed_exec(self.plugin, env, self.config)[0]

    def call_many(self, command: str, pods: list[str]) -> list[float]:
        return list(self.pool.map(lambda p: self.call(command, p), pods))

    def add_timed(self, pod: str) -> float:
        """A sequential ADD, split into its phases (recorded in `phases`)."""
        started = time.monotonic()
        elapsed = self.call("ADD", pod)
        seen, installed = self.stand_in.seen_at[pod], self.stand_in.installed(pod)
        self.phases["phase_plumb"].append(seen - started)
        self.phases["phase_stand_in"].append(installed - seen)
        self.phases["phase_ready"].append(started + elapsed - installed)
        return elapsed

    def close(self) -> None:
        self.pool.shutdown()


class ReferenceSide(Side):
    """`/usr/lib/cni/bridge` with `host-local` IPAM, called from a namespace of its own."""

    label = "ref"

    def __init__(self, make_netns: Callable[..., lab_netns.Netns], tmp: Path, concurrent: int) -> None:
        super().__init__()
        self.make_netns = make_netns
        self.host = InNetns(f"/run/netns/{make_netns().name}", workers=concurrent)
        self.config = {
            "cniVersion": "1.0.0",
            "name": "reference",
            "type": "bridge",
            "bridge": "cni-ref0",
            "isGateway": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": REFERENCE_SUBNET}]], "dataDir": str(tmp)},
        }

    def create(self, pod: str) -> None:
        """The pod's sandbox."""
        self.pods[pod] = str(self.make_netns().path)

    def _exec(self, command: str, pod: str) -> float:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": f"c-{pod}",
            "CNI_NETNS": self.pods[pod],
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(REFERENCE_DIR),
        }
        return timed_exec(REFERENCE_DIR / "bridge", env, self.config)[0]

    def call(self, command: str, pod: str) -> float:
        return self.host.run(self._exec, command, pod)

    def call_many(self, command: str, pods: list[str]) -> list[float]:
        return [f.result() for f in [self.host.submit(self._exec, command, p) for p in pods]]

    def close(self) -> None:
        self.host.close()


def measure(
    sluice: SluiceSide, ref: ReferenceSide, sequential: int, concurrent: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Interleaved ADD and DEL latencies in seconds of both sides: {side label: {row key: values}}.

    The concurrent rows (`add_par`, `del_par`) hold every call of every round, and their
    `_rounds` twins each round's p99."""
    sides: tuple[Side, Side] = (ref, sluice)
    seq = [f"seq-{i}" for i in range(sequential)]
    par = [[f"par{r}-{i}" for i in range(concurrent)] for r in range(rounds)]
    for side in sides:
        for pod in ["warm-up", *seq, *(p for group in par for p in group)]:
            side.create(pod)
        side.call("ADD", "warm-up")
        side.call("DEL", "warm-up")
    # This process hosts the API server and the controller stand-ins, which a real cluster runs
    # elsewhere: without this, a full collection of everything set up so far (50-75 ms here)
    # stalls them in the middle of an ADD now and then. Only later objects are collected.
    gc.collect()
    gc.freeze()
    keys = ("add_seq", "del_seq", "add_par", "del_par", "add_par_rounds", "del_par_rounds")
    out: dict[str, dict[str, list[float]]] = {s.label: {k: [] for k in keys} for s in sides}

    def in_turn(i: int) -> tuple[Side, Side]:
        return sides if i % 2 == 0 else sides[::-1]

    blocks = [seq[i : i + SEQUENTIAL_BLOCK] for i in range(0, len(seq), SEQUENTIAL_BLOCK)]
    for command, key in (("ADD", "add_seq"), ("DEL", "del_seq")):
        for b, block in enumerate(blocks):
            for side in in_turn(b):
                time.sleep(SETTLE_SECONDS)
                phased = side is sluice and command == "ADD"
                for pod in block:
                    out[side.label][key].append(sluice.add_timed(pod) if phased else side.call(command, pod))
    for r, group in enumerate(par):
        for command, key in (("ADD", "add_par"), ("DEL", "del_par")):
            for side in in_turn(r):
                time.sleep(SETTLE_SECONDS)
                latencies = side.call_many(command, group)
                out[side.label][key] += latencies
                out[side.label][key + "_rounds"].append(percentile(latencies, 99))
    out["sluice"].update(sluice.phases)
    return out


def measure_startup(runs: int, agent_socket: Path) -> dict[str, list[float]]:
    """Exec-to-exit seconds, interleaved, of `sluice-cni` VERSION, `python -c pass` (the issue's
    baseline: the same interpreter as a plain script runs), `python -IS -c pass` (the floor of any
    Python plugin: how the installed plugin starts), and `sluice-cni` STATUS (the plugin's round
    trip to the agent at `agent_socket`, which answers it at once: the floor of any ADD that goes
    through the agent, whatever the agent does)."""
    plugin = str(plugin_path())
    path = os.environ.get("PATH", "/usr/bin:/bin")
    version = {"PATH": path, "CNI_COMMAND": "VERSION"}
    status = {"PATH": path, "CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}
    config = {"cniVersion": "1.1.0", "name": "sluice", "type": "sluice-cni", "agentSocket": str(agent_socket)}
    commands: dict[str, tuple[list[str], dict[str, str], bytes]] = {
        "version": ([plugin], version, b""),
        "bare": ([sys.executable, "-c", "pass"], version, b""),
        "isolated": ([sys.executable, "-IS", "-c", "pass"], version, b""),
        "status": ([plugin], status, json.dumps(config).encode()),
    }
    out: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(runs):
        for key, (cmd, env, stdin) in commands.items():
            started = time.monotonic()
            subprocess.run(cmd, env=env, input=stdin, capture_output=True, check=True)
            out[key].append(time.monotonic() - started)
    return out


ROWS = (
    ("ADD sequential", "add_seq"),
    ("DEL sequential", "del_seq"),
    ("ADD concurrent", "add_par"),
    ("DEL concurrent", "del_par"),
)


def p99(values: dict[str, list[float]], key: str) -> float:
    """A row's p99: of all its calls, or for a concurrent row the median of its rounds' p99s."""
    rounds = values.get(key + "_rounds")
    return statistics.median(rounds) if rounds else percentile(values[key], 99)


def report(
    sluice: dict[str, list[float]], ref: dict[str, list[float]], startup: dict[str, list[float]]
) -> str:
    """Return the printed table."""
    lines = [
        f"{'latency (ms)':<26}{'sluice p50':>11}{'ref p50':>9}{'ratio':>7}"
        f"{'sluice p99':>12}{'ref p99':>9}{'ratio':>7}"
    ]
    for label, key in ROWS:
        s50, r50 = percentile(sluice[key], 50) * 1000, percentile(ref[key], 50) * 1000
        s99, r99 = p99(sluice, key) * 1000, p99(ref, key) * 1000
        rounds = len(sluice.get(key + "_rounds", []))
        count = f"{len(sluice[key]) // rounds} x {rounds}" if rounds else str(len(sluice[key]))
        lines.append(
            f"{label + f' ({count})':<26}{s50:>11.1f}{r50:>9.1f}{s50 / r50:>7.2f}"
            f"{s99:>12.1f}{r99:>9.1f}{s99 / r99:>7.2f}"
        )
    if sluice.get("phase_plumb"):
        lines.append(
            "sluice sequential ADD p50 by phase (ms): exec to network status published {:.1f}, "
            "stand-in controller until flows installed {:.1f}, flows installed to ADD answered {:.1f}".format(
                *(percentile(sluice[k], 50) * 1000 for k in ("phase_plumb", "phase_stand_in", "phase_ready"))
            )
        )
    v50, b50, i50, st50 = (
        percentile(startup[k], 50) * 1000 for k in ("version", "bare", "isolated", "status")
    )
    lines.append(
        f"start-up ({len(startup['version'])} runs): sluice-cni VERSION p50 {v50:.1f} ms, "
        f"python -c pass p50 {b50:.1f} ms (ratio {v50 / b50:.2f}), "
        f"python -IS -c pass p50 {i50:.1f} ms (ratio {v50 / i50:.2f})"
    )
    ref50 = percentile(ref["add_seq"], 50) * 1000
    lines.append(
        f"floor: sluice-cni STATUS (plugin to agent and back, answered at once) p50 {st50:.1f} ms, "
        f"{st50 / ref50:.2f}x the reference ADD p50"
    )
    add50 = percentile(sluice["add_seq"], 50) / percentile(ref["add_seq"], 50)
    par99 = p99(sluice, "add_par") / p99(ref, "add_par")
    lines.append(
        "targets: ADD p50 <= 2.0x: {} ({:.2f}); concurrent ADD p99 <= 3.0x: {} ({:.2f}); "
        "VERSION <= 1.3x: {} ({:.2f})".format(
            "met" if add50 <= 2.0 else "MISSED",
            add50,
            "met" if par99 <= 3.0 else "MISSED",
            par99,
            "met" if v50 / b50 <= 1.3 else "MISSED",
            v50 / b50,
        )
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; return 0, or 1 when it cannot run here."""
    parser = argparse.ArgumentParser(prog="bench.cni", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent ADDs and DELs")
    parser.add_argument("--startup-runs", type=int, default=40)
    args = parser.parse_args(argv)
    if min(args.sequential, args.concurrent, args.rounds, args.startup_runs) < 1:
        parser.error("every count must be at least 1")
    if os.geteuid() != 0 or shutil.which("ovs-vswitchd") is None or not (REFERENCE_DIR / "bridge").exists():
        print(
            "bench.cni needs root, Open vSwitch and containernetworking-plugins (/usr/lib/cni): `make deps`",
            file=sys.stderr,
        )
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-cni-"))
    try:
        with (
            standalone_factories() as (make_node, make_netns),
            agent_bed(make_node, make_netns, "veth") as bed,
        ):
            bed.start_agent(flow_wait_seconds=30.0, resync_seconds=0, log_level="info")
            with WatchingStandIn(bed) as stand_in:
                sluice = SluiceSide(bed, stand_in, args.concurrent)
                ref = ReferenceSide(make_netns, tmp, args.concurrent)
                try:
                    results = measure(sluice, ref, args.sequential, args.concurrent, args.rounds)
                finally:
                    sluice.close()
                    ref.close()
                    for exc in stand_in.errors:
                        print(f"controller stand-in: {exc!r}", file=sys.stderr)
                if stand_in.errors:
                    raise RuntimeError(f"controller stand-in failed: {stand_in.errors[0]}")
            startup = measure_startup(args.startup_runs, bed.socket_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(results["sluice"], results["ref"], startup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
