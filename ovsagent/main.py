"""`sluice-agent --config FILE`: the node agent process, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType

from ovsagent.agent import Agent
from ovsagent.config import ConfigError, load_agent_config
from ovsagent.crashpoints import CrashConfigError, crash_hook_from_env
from ovsagent.kube import Kube, KubeError
from ovsagent.node import NodeSetupError
from ovsagent.ovsdb import Connection, OvsdbError
from ovsagent.server import CniServer, ServerError

log = logging.getLogger("ovsagent")

# glibc's mallopt() parameter for the most malloc arenas it will create (malloc.h).
_M_ARENA_MAX = -8
# Arenas the agent keeps: its work is serialized by the GIL, so more buy no parallelism.
MALLOC_ARENAS = 2


def limit_malloc_arenas(environ: Mapping[str, str]) -> bool:
    """Cap glibc's malloc arenas at `MALLOC_ARENAS`, unless `MALLOC_ARENA_MAX` already set them.

    The agent serves each CNI call on a thread of its own. With glibc's default (8 arenas per
    core), what those threads allocate in C spreads over many arenas and fragments them: a 10-pod
    churn grew the agent's RSS by ~10 MB before it levelled off, against ~1 MB with the cap
    (`bench/agent_memory.py`, docs/agent.md "Memory"). Must run before the first thread starts.
    Returns whether the cap is set; False also on a C library without glibc's `mallopt`.
    """
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def main(argv: list[str] | None = None) -> int:
    """Run the agent; return 0 after a clean shutdown, 1 when it cannot start, 2 for bad usage."""
    parser = argparse.ArgumentParser(prog="sluice-agent", description="The Sluice node agent.")
    parser.add_argument("--config", metavar="FILE", help="agent config (YAML); SLUICE_AGENT_* override it")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    limit_malloc_arenas(os.environ)
    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        print(f"sluice-agent: {args.config or 'config'}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.level,
        format=f"%(asctime)s {config.node_name} %(levelname)s %(name)s: %(message)s",
    )
    try:
        crash_hook = crash_hook_from_env(os.environ)
    except CrashConfigError as exc:
        print(f"sluice-agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ovsdb = Connection(config.ovsdb)
    kube: Kube | None = None
    agent: Agent | None = None
    server: CniServer | None = None
    try:
        ovsdb.start()
        kube = Kube(config.kubeconfig)
        agent = Agent(config, ovsdb, kube, crash_hook=crash_hook)
        if config.metrics_address:
            try:
                agent.metrics.serve(config.metrics_address)
            except (OSError, ValueError) as exc:
                log.error("cannot serve metrics on %s: %s", config.metrics_address, exc)
                return 1
        agent.start()
        server = CniServer(config.cni_socket, agent.handle).start()
        log.info("agent for node %s ready", config.node_name)
        stop.wait()
        return 0
    except (OvsdbError, KubeError, NodeSetupError, ServerError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    finally:
        if server is not None:
            server.stop()
        if agent is not None:
            agent.close()
            agent.metrics.close()
        if kube is not None:
            kube.close()
        ovsdb.close()
        log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
