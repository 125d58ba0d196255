"""The `sluice` umbrella command: dispatches to subcommands, importing each one lazily."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# (words of the subcommand) -> "module:function"; the function takes the remaining argv and
# returns an exit code. Lazy imports keep `sluice --help` fast and let a subcommand's heavy
# dependencies (os-ken, the kubernetes client) load only when that subcommand runs.
# The umbrella lives in `lab` because it may import every package; nothing imports `lab`.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("docs", "pipeline"): ("lab.docs:pipeline_main", "generate or check docs/pipeline.md"),
    ("lab", "apiserver"): ("lab.apiserver.main:main", "run the lab's Kubernetes API stand-in"),
    ("lab", "up"): ("lab.labcli:up_main", "build a multi-node Sluice cluster in namespaces"),
    ("lab", "down"): ("lab.labcli:down_main", "remove the lab (processes, namespaces, state)"),
    ("lab", "status"): ("lab.labcli:status_main", "components, nodes, pods, controllers, leader"),
    ("lab", "ping"): ("lab.labcli:ping_main", "ping every pod from every pod (a matrix)"),
    ("lab", "kubeconfig"): ("lab.labcli:kubeconfig_main", "print a kubeconfig for kubectl"),
    ("lab", "restart"): ("lab.labcli:restart_main", "restart agent/NODE or controller/NODE"),
    ("lab", "pod", "create"): ("lab.labcli:pod_create_main", "create a pod (runs the real sluice-cni)"),
    ("lab", "pod", "delete"): ("lab.labcli:pod_delete_main", "delete pods"),
    ("lab", "pod", "exec"): ("lab.labcli:pod_exec_main", "run a command inside a pod"),
    ("lab", "node", "add"): ("lab.labcli:node_add_main", "add a node to the running lab"),
    ("lab", "node", "remove"): ("lab.labcli:node_remove_main", "remove a node (and its pods)"),
    ("lab", "forward"): ("lab.labcli:forward_main", "(internal) host port forward into a lab namespace"),
    ("install-cni",): ("cni.install:main", "write the sluice-cni plugin into a CNI bin dir"),
    ("check-config", "agent"): ("ovsagent.config:check_config_main", "validate an agent config"),
    ("check-config", "controller"): ("controller.config:check_config_main", "validate a controller config"),
}


def _usage() -> str:
    lines = ["usage: sluice COMMAND [ARGS...]", "", "commands:"]
    for words, (_, helptext) in sorted(COMMANDS.items()):
        lines.append(f"  {' '.join(words):<22} {helptext}")
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[list[str]], int]:
    module_name, func_name = target.split(":")
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named by the leading words of argv; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    for length in (3, 2, 1):
        key = tuple(args[:length])
        if key in COMMANDS:
            return _resolve(COMMANDS[key][0])(args[length:])
    print(f"sluice: unknown command {' '.join(args)!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
