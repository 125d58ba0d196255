"""Benchmark: the controller's time to install N flows on a real bridge, against `ovs-ofctl --bundle`.

Run (root, OVS installed): `.venv/bin/python -m bench.flowpush [--sizes 1000,10000,50000] [--rounds 5]`.

One userspace OVS node in its own namespace; the controller's real OpenFlow path runs in this
process (os-ken embedded by `controller.app.OpenFlowService`, a `SwitchSession` pushing one
atomic bundle: open, bundle-adds, barrier, commit, until the commit reply). The bridge reaches
it through `lab.relay.Relay`, run in a child process so that its byte copying does not
compete with the controller for this process's GIL (in a deployment there is no relay at all:
the bridge connects straight to the controller's address). For each N, on an emptied bridge:
the controller's push with a cold flow-mod cache (encoding included), again with a warm cache
(a reconnect or failover), and `ovs-ofctl --bundle add-flows` of the same flows from a file.
Prints the best of `--rounds` runs of each, in seconds, and the ratios.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller import ofmsg
from controller.app import OpenFlowService
from controller.config import ControllerConfig
from controller.dirty import DirtySet
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel
from controller.switches import SwitchManager, SwitchSession
from flows.cluster import Cluster, NodeSpec, PodSpec
from flows.compiler import compile_node
from flows.model import Flow
from flows.ofctl import render_flows
from lab.ovs import OvsNode

BRIDGE = "br-int"
HEADER = (
    f"{'flows':>7} {'ctl cold s':>11} {'ctl warm s':>11} {'ofctl s':>9} {'cold/ofctl':>11} {'warm/ofctl':>11}"
)
ROW = "{:>7} {:>11.3f} {:>11.3f} {:>9.3f} {:>11.2f} {:>11.2f}"


def synthetic_flows(count: int) -> list[Flow]:
    """Return `count` flows of one node with enough pods (and a few remote nodes) to have them."""
    pods_needed = count // 5 + 10
    me = NodeSpec(
        "node-0", ipaddress.IPv4Network("100.64.0.0/16"), ipaddress.IPv4Address("198.18.0.10"), 1, 2
    )
    remotes = tuple(
        NodeSpec(
            f"node-{i}",
            ipaddress.IPv4Network(f"100.{65 + i // 256}.{i % 256}.0/24"),
            ipaddress.IPv4Address(f"198.18.{1 + i // 250}.{i % 250 + 1}"),
            1,
            2,
        )
        for i in range(1, 50)
    )
    base = me.pod_cidr.network_address
    pods = tuple(PodSpec("bench", f"pod-{i}", "node-0", base + 2 + i, 3 + i) for i in range(pods_needed))
    flows = compile_node(Cluster((me, *remotes), pods), "node-0").sorted()
    if len(flows) < count:
        raise SystemExit(f"only {len(flows)} flows for {count}")
    return flows[:count]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flow_count(node: OvsNode) -> int:
    out = node.ofctl("dump-aggregate", BRIDGE)
    return int(out.split("flow_count=")[1].split()[0])


def _clear(node: OvsNode) -> None:
    node.ofctl("del-flows", BRIDGE)  # the benchmark's own bridge: a wildcard delete is fine here


def relay_process(netns: str, port: int) -> subprocess.Popen[bytes]:
    """Start `lab.relay.Relay(netns, port)` in a child process; it runs until its stdin closes."""
    code = (
        "import sys\n"
        "from lab.relay import Relay\n"
        f"relay = Relay({netns!r}, {port})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "relay.close()\n"
    )
    root = Path(__file__).parent.parent
    pipe = subprocess.PIPE
    child = subprocess.Popen([sys.executable, "-c", code], stdin=pipe, stdout=pipe, cwd=root)
    assert child.stdout is not None
    if child.stdout.readline().strip() != b"ready":
        child.kill()
        child.wait()
        raise SystemExit("the relay process did not start")
    return child


def stop_relay(child: subprocess.Popen[bytes]) -> None:
    """Stop the relay child (close its stdin; kill it by PID if it does not exit)."""
    assert child.stdin is not None
    child.stdin.close()
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run(sizes: list[int], rounds: int = 5) -> int:
    """Run the benchmark and print the table; return the exit code."""
    node = OvsNode.create("slbench")
    relay: subprocess.Popen[bytes] | None = None
    try:
        node.start()
        node.add_bridge(BRIDGE)
        port = _free_port()
        relay = relay_process(node.netns, port)
        config = ControllerConfig(
            openflow_address="127.0.0.1",
            openflow_port=port,
            metrics_address="127.0.0.1",
            metrics_port=_free_port(),
        )
        manager = SwitchManager(ClusterModel(), DirtySet(), ControllerMetrics(), reply_timeout=120)
        manager.start()  # no leadership is ever set: the session does nothing but what we ask
        OpenFlowService(config, manager).start()
        node.vsctl("set-controller", BRIDGE, "tcp:127.0.0.1:6653")
        deadline = time.monotonic() + 20
        while not manager.sessions():
            if time.monotonic() > deadline:
                print("the bridge never connected", file=sys.stderr)
                return 1
            time.sleep(0.05)
        session: SwitchSession = manager.sessions()[0]
        print(HEADER)
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                flows = synthetic_flows(size)
                path = Path(tmp) / f"flows-{size}.txt"
                path.write_text(render_flows(flows))
                cold = warm = ofctl = float("inf")
                # Best of `rounds` for each contender: the machine may be shared.
                for _ in range(rounds):
                    manager.cache.clear()
                    timings: list[float] = []
                    for _ in ("cold", "warm"):
                        _clear(node)
                        started = time.perf_counter()
                        session.push([], flows)
                        timings.append(time.perf_counter() - started)
                        assert _flow_count(node) == size, "the bridge does not hold every flow"
                    cold, warm = min(cold, timings[0]), min(warm, timings[1])
                    _clear(node)
                    started = time.perf_counter()
                    node.ofctl("--bundle", "add-flows", BRIDGE, str(path), timeout=300)
                    ofctl = min(ofctl, time.perf_counter() - started)
                    assert _flow_count(node) == size
                print(ROW.format(size, cold, warm, ofctl, cold / ofctl, warm / ofctl))
        return 0
    finally:
        if relay is not None:
            stop_relay(relay)
        node.close()


def main() -> None:
    """Parse arguments, run, and exit (os-ken's native threads would keep the process alive)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated flow counts")
    parser.add_argument("--rounds", type=int, default=5, help="best of this many runs of each (default 5)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    assert ofmsg.OF15  # ofmsg must be imported before any read-back (it fixes os-ken's parser)
    code = run(sizes, max(1, args.rounds))
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
