"""Benchmark: the agent's veth pod plumbing (`ovsagent.netns.create_veth` and the DEL's deletes).

Run (root): `.venv/bin/python -m bench.netns_plumb [--pods 50] [--busy 60] [--profile]`.

Mimics a busy node: a "host" namespace holding `--busy` other links (veth pairs, as a node with
~60 pods has), and `--pods` fresh pod namespaces. For each pod, times
`create_veth(host end, pod netns, cfg, host_netns=host)` (veth pair, pod end configured with MAC,
MTU, address in 100.64.0.0/10, default route, TX checksum off; host end isolated and up), then
for each pod the DEL's two deletes (`delete_link` of the host end, which takes the pod end along,
then `delete_link` of the pod's interface, which finds nothing). Prints p50/p99/max in ms.
Measured twice: as the agent runs (from a thread inside the host namespace, host_netns=None) and
as the tests run (from outside, host_netns=path: two more namespace-entering threads per pod).
`--profile` runs the agent-mode creations under cProfile and prints the top functions by cumulative time.
Everything made (namespaces, links) is removed at the end, also on failure. Not a test: numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import ipaddress
import os
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

from bench.stats import percentile
from lab import netns as lab_netns
from ovsagent import netns

PREFIX = "slb"
GATEWAY = ipaddress.IPv4Address("100.64.1.1")
MTU = 1442


def _row(what: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{what:<28} n={len(ms):<3} p50 {percentile(ms, 50):6.2f} ms  p99 {percentile(ms, 99):6.2f} ms"
        f"  max {max(ms):6.2f} ms  mean {statistics.fmean(ms):6.2f} ms"
    )


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _fill_host(host: lab_netns.Netns, busy: int) -> None:
    """Give `host` `busy` links: veth pairs with both ends in `host` (the dummy module may be absent)."""
    for i in range(busy // 2):
        host.ip("link", "add", f"busy{i}a", "type", "veth", "peer", "name", f"busy{i}b")


def _config(i: int) -> netns.InterfaceConfig:
    ip = ipaddress.IPv4Address("100.64.1.10") + i
    return netns.InterfaceConfig(
        ifname="eth0",
        mac="0a:58:" + ":".join(f"{b:02x}" for b in ip.packed),
        mtu=MTU,
        address=ipaddress.IPv4Interface(f"{ip}/24"),
        gateway=GATEWAY,
    )


def _in_namespace(path: str, fn: Callable[[], None]) -> None:
    """Run `fn` in a thread that first enters network namespace `path` (and then exits).

    This is how the agent runs: in the node's namespace, passing host_netns=None.
    """
    errors: list[BaseException] = []

    def target() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if netns._libc.setns(fd, netns.CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({path})")
        finally:
            os.close(fd)
        try:
            fn()
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="bench-host")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _measure(
    label: str, host_netns: str | None, names: list[str], pod_ns: list[str], profiler: cProfile.Profile | None
) -> None:
    """Create, re-create (stale host end) and delete a veth pod per name; print the times."""
    creates = []
    for i, (name, pod) in enumerate(zip(names, pod_ns, strict=True)):
        cfg = _config(i)
        if profiler is not None:
            profiler.enable()
        creates.append(_timed(partial(netns.create_veth, name, pod, cfg, host_netns=host_netns)))
        if profiler is not None:
            profiler.disable()
    state = netns.read_interface(pod_ns[0], "eth0")
    assert state is not None and state.up and state.tx_checksum is False, state

    again = [
        _timed(partial(netns.create_veth, names[i], pod_ns[i], _config(i), host_netns=host_netns))
        for i in range(min(len(names), 10))
    ]

    host_deletes, pod_deletes = [], []
    for name, pod in zip(names, pod_ns, strict=True):
        host_deletes.append(_timed(partial(netns.delete_link, name, netns=host_netns)))
        pod_deletes.append(_timed(partial(netns.delete_link, "eth0", netns=pod)))
    assert not netns.link_exists(names[0], netns=host_netns)

    print(f"-- {label}")
    print(_row("create_veth", creates))
    print(_row("create_veth again (stale)", again))
    print(_row("delete_link host end", host_deletes))
    print(_row("delete_link pod (absent)", pod_deletes))
    print(_row("delete (both)", [a + b for a, b in zip(host_deletes, pod_deletes, strict=True)]))


def run(pods: int, busy: int, profile: bool) -> None:
    """Create the namespaces, time creation and deletion of `pods` veth pods, remove everything."""
    made: list[str] = []
    try:
        host = lab_netns.create_netns(lab_netns.unique_name(PREFIX))
        made.append(host.name)
        _fill_host(host, busy)
        pod_ns = []
        for _ in range(pods):
            ns = lab_netns.create_netns(lab_netns.unique_name(PREFIX), lo_up=False)
            made.append(ns.name)
            pod_ns.append(str(ns.path))
        host_path = str(host.path)
        names = [f"vb{os.getpid() % 10000:04d}-{i:04d}" for i in range(pods)]
        print(f"host namespace with {busy} links (+ lo), {pods} pod namespaces")

        profiler = cProfile.Profile() if profile else None
        # As the agent runs: in the node's namespace, host_netns=None.
        _in_namespace(
            host_path,
            partial(_measure, "agent: in the host namespace, host_netns=None", None, names, pod_ns, profiler),
        )
        # As the tests run: from another namespace, host_netns=path.
        _measure("tests: host_netns=path", host_path, names, pod_ns, None)
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
    finally:
        for name in reversed(made):
            lab_netns.delete_netns(name)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the benchmark (root only)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=50, help="pods to plumb (default 50)")
    parser.add_argument("--busy", type=int, default=60, help="other links in the host namespace")
    parser.add_argument("--profile", action="store_true", help="profile the creations (cProfile)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    lab_netns.cleanup_leftovers(PREFIX)
    run(args.pods, args.busy, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
