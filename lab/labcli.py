"""The `sluice lab ...` commands: argument parsing and error reporting around lab.cluster/lab.kubelet.

Every command takes `--state DIR` (default $SLUICE_LAB_STATE, else /run/sluice-lab). Errors are
one line on stderr and exit 1 (2 for bad usage); never a traceback for something the user can fix.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from lab import cluster, kubelet
from lab.components import LabError
from lab.kubeapi import KubeError
from lab.podserve import parse_services
from lab.procs import CommandError
from lab.state import DEFAULT_STATE_DIR, STATE_ENV, LabStateError, StateStore


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"sluice lab {prog}", description=description)
    parser.add_argument(
        "--state",
        metavar="DIR",
        default=os.environ.get(STATE_ENV) or str(DEFAULT_STATE_DIR),
        help=f"the lab's state directory (default ${STATE_ENV}, else {DEFAULT_STATE_DIR})",
    )
    return parser


def _guard(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except (LabError, LabStateError, KubeError, CommandError, ValueError) as exc:
        print(f"sluice lab {prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sluice lab {prog}: interrupted", file=sys.stderr)
        return 130


def up_main(argv: list[str]) -> int:
    """`sluice lab up`: build the lab, print progress, end with the pod list."""
    parser = _parser("up", "Build a Sluice cluster in network namespaces on this machine.")
    parser.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    parser.add_argument("--pods-per-node", type=int, default=2, help="pods created on each node (default 2)")
    parser.add_argument("--ha", action="store_true", help="a second controller replica on node 2")
    parser.add_argument("--prefix", default=cluster.DEFAULT_PREFIX, help="network namespace name prefix")
    args = parser.parse_args(argv)

    def body() -> int:
        options = cluster.UpOptions(
            nodes=args.nodes, pods_per_node=args.pods_per_node, ha=args.ha, prefix=args.prefix
        )
        store = StateStore(args.state)
        state = cluster.up(store, options, cluster.print_progress)
        print(f"lab is up ({len(state.nodes)} nodes, {len(state.pods)} pods, state {store.dir})")
        for pod in sorted(state.pods, key=lambda p: p.key):
            print(f"  {pod.key:<24} {pod.node:<8} {pod.ip}")
        print("next: `sluice lab ping`, `sluice lab status`, `sluice lab down`")
        return 0

    return _guard("up", body)


def down_main(argv: list[str]) -> int:
    """`sluice lab down`: remove everything the lab made."""
    parser = _parser("down", "Remove the lab: its processes (by PID), namespaces and state.")
    parser.add_argument("--keep-logs", action="store_true", help="keep DIR/logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="name everything removed")
    args = parser.parse_args(argv)

    def body() -> int:
        progress = cluster.print_progress if args.verbose else cluster.quiet
        removed = cluster.down(StateStore(args.state), progress, keep_logs=args.keep_logs)
        procs = sum(1 for r in removed if r.startswith("process"))
        spaces = sum(1 for r in removed if r.startswith("netns"))
        print(f"lab down: stopped {procs} processes, removed {spaces} network namespaces")
        return 0

    return _guard("down", body)


def status_main(argv: list[str]) -> int:
    """`sluice lab status`."""
    args = _parser("status", "Components, nodes, pods, controller connections, leader.").parse_args(argv)

    def body() -> int:
        print(cluster.status_text(StateStore(args.state)))
        return 0

    return _guard("status", body)


def ping_main(argv: list[str]) -> int:
    """`sluice lab ping`: every pod to every pod; exit 1 if any pair fails."""
    parser = _parser("ping", "Ping from every pod to every other pod and print the matrix.")
    parser.add_argument("--deadline", type=float, default=3.0, help="seconds per pair (default 3)")
    args = parser.parse_args(argv)

    def body() -> int:
        matrix = cluster.ping_matrix(StateStore(args.state), deadline=args.deadline)
        if not matrix.pods:
            print("no pods: create some with `sluice lab pod create NAME`")
            return 0
        print(matrix.render())
        return 0 if matrix.ok else 1

    return _guard("ping", body)


def kubeconfig_main(argv: list[str]) -> int:
    """`sluice lab kubeconfig`: print the host kubeconfig (or its path)."""
    parser = _parser("kubeconfig", "Print a kubeconfig for kubectl on this host.")
    parser.add_argument("--path", action="store_true", help="print the file's path instead")
    args = parser.parse_args(argv)

    def body() -> int:
        path = cluster.host_kubeconfig(StateStore(args.state))
        print(path if args.path else path.read_text(), end="\n" if args.path else "")
        return 0

    return _guard("kubeconfig", body)


def restart_main(argv: list[str]) -> int:
    """`sluice lab restart agent/NODE|controller/NODE`."""
    parser = _parser("restart", "Stop a component and start it again (SIGTERM, then the same config).")
    parser.add_argument("component", help="agent/node-N or controller/node-N")
    args = parser.parse_args(argv)

    def body() -> int:
        rec = cluster.restart_component(StateStore(args.state), args.component)
        print(f"{rec.name} restarted (pid {rec.pid})")
        return 0

    return _guard("restart", body)


def pod_create_main(argv: list[str]) -> int:
    """`sluice lab pod create NAME ...`."""
    parser = _parser("pod create", "Create a pod: Pod object, sandbox namespace, the real sluice-cni ADD.")
    parser.add_argument("name")
    parser.add_argument("--node", help="node-N or N (default: the node with the fewest pods)")
    parser.add_argument("--namespace", "-n", default="default", help="Kubernetes namespace (made if missing)")
    parser.add_argument("--labels", help="k=v,k2=v2")
    parser.add_argument("--ip", help="ask for this address (runtimeConfig ips)")
    parser.add_argument("--serve", help="servers to run in the pod, e.g. TCP:80,UDP:53")
    args = parser.parse_args(argv)

    def body() -> int:
        serve = parse_services(args.serve) if args.serve else ()
        pod = kubelet.create_pod(
            StateStore(args.state),
            args.name,
            node=args.node,
            namespace=args.namespace,
            labels=kubelet.parse_labels(args.labels),
            ip=args.ip,
            serve=[str(s) for s in serve],
        )
        print(f"pod {pod.key} on {pod.node}: {pod.ip} (netns {pod.netns})")
        return 0

    return _guard("pod create", body)


def pod_delete_main(argv: list[str]) -> int:
    """`sluice lab pod delete NAME ...`."""
    parser = _parser("pod delete", "Delete a pod: its servers, CNI DEL, its namespace, the Pod object.")
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("--namespace", "-n", default="default")
    args = parser.parse_args(argv)

    def body() -> int:
        store = StateStore(args.state)
        for name in args.names:
            kubelet.delete_pod(store, name, namespace=args.namespace)
            print(f"pod {args.namespace}/{name} deleted")
        return 0

    return _guard("pod delete", body)


def pod_exec_main(argv: list[str]) -> int:
    """`sluice lab pod exec NAME -- CMD...`: replaces this process with CMD inside the pod."""
    parser = _parser("pod exec", "Run a command in the pod's network namespace.")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("name")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    def body() -> int:
        argv_ = kubelet.pod_exec_argv(StateStore(args.state), args.name, command, namespace=args.namespace)
        sys.stdout.flush()
        os.execvp(argv_[0], argv_)
        return 127  # pragma: no cover - execvp does not return

    return _guard("pod exec", body)


def forward_main(argv: list[str]) -> int:
    """`sluice lab forward` (started by `up`): see lab.forward."""
    from lab import forward

    return forward.main(argv)


def node_add_main(argv: list[str]) -> int:
    """`sluice lab node add`."""
    args = _parser("node add", "Add a node to the running lab (OVS, agent, Node object).").parse_args(argv)

    def body() -> int:
        node = cluster.add_node(StateStore(args.state), cluster.print_progress)
        print(f"{node.name} added: {node.netns}, {node.underlay_ip}, podCIDR {node.pod_cidr}")
        return 0

    return _guard("node add", body)


def node_remove_main(argv: list[str]) -> int:
    """`sluice lab node remove NODE`."""
    parser = _parser("node remove", "Remove a node: its pods, agent, OVS, namespace and Node object.")
    parser.add_argument("node", help="node-N or N")
    args = parser.parse_args(argv)

    def body() -> int:
        cluster.remove_node(StateStore(args.state), args.node, cluster.print_progress)
        return 0

    return _guard("node remove", body)
