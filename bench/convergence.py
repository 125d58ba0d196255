"""Benchmark: how fast the lab converges: `sluice lab up`, pod creation to cross-node reachability,
pod deletion to gone from every bridge; with the reference `bridge` CNI plugin as a baseline.

Run (root, OVS installed): `.venv/bin/python -m bench.convergence [--pods 100] [--nodes 2]`.

1. `lab up` time: a fresh lab (`--nodes` nodes, 2 pods each) in its own state directory and
   namespace prefix, timed from the call to every pod created.
2. Creation: for each of `--pods` pods, created one at a time on the last node with a chosen
   address (the lab kubelet's `--ip`, i.e. CNI runtimeConfig `ips`), a pod on node 1 pings that
   address every 10 ms from the moment before the Pod is created in the API. The time is from
   the Pod's creation to the first echo reply: the API write, the sandbox namespace, the real
   `sluice-cni` ADD (the agent waits for the pod's flows), the status write and the first packet
   across the Geneve tunnel.
3. Deletion: for each pod, from the start of the lab kubelet's delete (CNI DEL, then the Pod
   object) until no flow on any node's br-int names the pod's IP or MAC.
4. Baseline: the same creation measurement with the reference `bridge` + `host-local` plugins
   (containernetworking-plugins) on a Linux bridge in one scratch namespace: netns, CNI ADD,
   first reply from a neighbour namespace on the same bridge (which starts pinging when ADD
   returns). No API server, no controller, no tunnel: the floor any CNI on this machine pays
   for a namespace and a veth.

Prints p50/p99/max per measurement and the ratios to the baseline. Not a test: numbers depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile
from lab import cluster, kubelet
from lab import netns as netns_lib
from lab.components import LabError
from lab.ovs import OvsNode
from lab.state import NodeRecord, StateStore

REFERENCE_CNI = Path("/usr/lib/cni")


def pinger(netns: str, ip: str, deadline: float) -> subprocess.Popen[bytes]:
    """`ping` from `netns` every 10 ms until the first reply (or `deadline` seconds)."""
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-i",
            "0.01",
            "-w",
            str(int(deadline)),
            ip,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_reply(proc: subprocess.Popen[bytes], started: float) -> float:
    """Wait for a pinger; return seconds from `started` to its exit. Raises if it never got a reply."""
    code = proc.wait()
    elapsed = time.monotonic() - started
    if code != 0:
        raise RuntimeError("no echo reply before the deadline")
    return elapsed


def flows_name(node: NodeRecord, needles: tuple[str, str]) -> bool:
    """True if br-int of `node` still holds a flow mentioning one of `needles`."""
    text = OvsNode(node.netns, node.ovs_rundir, name=node.name).ofctl("dump-flows", "br-int")
    return any(n in text for n in needles)


def measure_lab(store: StateStore, pods: int) -> tuple[list[float], list[float]]:
    """Create then delete `pods` pods one by one; return (creation, deletion) times in seconds."""
    state = store.load()
    target = state.nodes[-1]
    source = next(p for p in state.pods if p.node == state.nodes[0].name)
    base = target.pod_cidr.rsplit(".", 1)[0]  # "100.64.N"
    create: list[float] = []
    delete: list[float] = []
    for i in range(pods):
        ip = f"{base}.{100 + i}"
        name = f"conv-{i}"
        started = time.monotonic()
        proc = pinger(source.netns, ip, 15)
        kubelet.create_pod(store, name, node=target.name, ip=ip)
        create.append(wait_reply(proc, started))
        mac = "0a:58:" + ":".join(f"{int(o):02x}" for o in ip.split("."))
        needles = (f"={ip},", mac)
        started = time.monotonic()
        kubelet.delete_pod(store, name)
        deadline = started + 15
        while any(flows_name(n, needles) for n in state.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ip}'s flows still on a bridge after 15 s")
            time.sleep(0.005)
        delete.append(time.monotonic() - started)
    return create, delete


def measure_baseline(pods: int) -> list[float]:
    """Pod creation to first reply with the reference bridge plugin; returns seconds per pod."""
    if not (REFERENCE_CNI / "bridge").exists():
        raise LabError(f"{REFERENCE_CNI}/bridge missing: install containernetworking-plugins (`make deps`)")
    host = netns_lib.create_netns(netns_lib.unique_name("slbench"))
    made: list[str] = []
    ipam_dir = Path(tempfile.mkdtemp(prefix="slbench-ipam-"))

    def conf(ip: str | None) -> dict[str, object]:
        pool: dict[str, str] = {"subnet": "100.99.0.0/24"}
        if ip is not None:
            pool.update(rangeStart=ip, rangeEnd=ip)
        return {
            "cniVersion": "1.0.0",
            "name": "baseline",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "ipam": {"type": "host-local", "ranges": [[pool]], "dataDir": str(ipam_dir)},
        }

    def add(ns: str, ip: str | None = None) -> None:
        env = {
            **os.environ,
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": ns,
            "CNI_NETNS": f"/run/netns/{ns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(REFERENCE_CNI),
        }
        # The plugin creates the bridge in the namespace it runs in: the scratch "host".
        subprocess.run(
            ["ip", "netns", "exec", host.name, str(REFERENCE_CNI / "bridge")],
            input=json.dumps(conf(ip)), capture_output=True, text=True, env=env, check=True, timeout=30,
        )  # fmt: skip

    times: list[float] = []
    try:
        first = netns_lib.create_netns(netns_lib.unique_name("slbench"))
        made.append(first.name)
        add(first.name)
        for i in range(pods):
            ip = f"100.99.0.{10 + i}"
            started = time.monotonic()
            ns = netns_lib.create_netns(netns_lib.unique_name("slbench"))
            made.append(ns.name)
            add(ns.name, ip)
            # Pinging only once ADD returned: a ping sent before would leave the neighbour's ARP
            # entry INCOMPLETE, retried a second later, and measure the kernel's ARP timer.
            times.append(wait_reply(pinger(first.name, ip, 15), started))
    finally:
        for name in made:
            netns_lib.delete_netns(name)
        netns_lib.delete_netns(host.name)
        shutil.rmtree(ipam_dir, ignore_errors=True)
    return times


def row(label: str, values: list[float], target: str) -> str:
    """One table row: p50, p99, max in ms."""
    p50, p99, top = (v * 1000 for v in (percentile(values, 50), percentile(values, 99), max(values)))
    return f"{label:<44} {len(values):>5} {p50:>9.0f} {p99:>9.0f} {top:>9.0f}  {target}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; 1 if the lab cannot be built."""
    parser = argparse.ArgumentParser(prog="python -m bench.convergence", description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100, help="pods measured (default 100)")
    parser.add_argument("--nodes", type=int, default=2, help="lab nodes (default 2)")
    args = parser.parse_args(argv)
    if args.pods < 1 or args.pods > 150:
        parser.error("--pods must be 1..150")
    state_dir = Path(tempfile.mkdtemp(prefix="slbench-", dir="/tmp"))
    store = StateStore(state_dir)
    try:
        started = time.monotonic()
        cluster.up(store, cluster.UpOptions(nodes=args.nodes, pods_per_node=2, prefix="slbench-", serve=()))
        up_seconds = time.monotonic() - started
        create, delete = measure_lab(store, args.pods)
    except (LabError, RuntimeError) as exc:
        print(f"bench.convergence: {exc}", file=sys.stderr)
        return 1
    finally:
        if store.exists():
            cluster.down(store)
        shutil.rmtree(state_dir, ignore_errors=True)
    baseline = measure_baseline(args.pods)
    print(f"sluice lab up, {args.nodes} nodes x 2 pods: {up_seconds:.1f} s (target <= 60 s)")
    print()
    print(f"{'measurement':<44} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  target")
    print(row("pod created in API -> reachable cross-node", create, "p50 <= 300, p99 <= 1000"))
    print(row("pod deleted -> gone from every bridge", delete, "p99 <= 1000"))
    print(row("baseline: bridge plugin ADD -> reachable", baseline, "-"))
    ratio = statistics.median(create) / statistics.median(baseline)
    print(f"\ncreation p50 / baseline p50: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
