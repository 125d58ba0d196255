"""`sluice-controller`: informers, switch sessions, os-ken's OpenFlow listener and the HTTP endpoints.

Start order: config, metrics/health HTTP server, informers (the model fills), the switch manager,
leader election, then os-ken's OpenFlow listener. Only the replica holding the Lease programs
switches (OpenFlow master role); the other claims the slave role and sends nothing else.
SIGTERM and SIGINT stop it all within a few seconds: the Lease is released, the sessions end
(the switches keep their flows: fail_mode=secure), the informers close their watches, and the
process exits with 0. os-ken's native threads cannot be stopped from outside (its listener
blocks in accept), so the process ends with os._exit once its own parts are down.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.config import ConfigError, ControllerConfig, load_config
from controller.dirty import DirtySet
from controller.informers import Informers, api_client
from controller.leader import KubeLeaseApi, LeaderElector
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel

log = logging.getLogger("sluice.controller")

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_START = 3


class HealthServer:
    """/metrics (Prometheus text), /healthz (alive) and /readyz (informers synced, listening)."""

    def __init__(
        self, address: str, port: int, metrics: ControllerMetrics, ready: Callable[[], bool]
    ) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    ok = ready()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._server = Server((address, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        """Return the bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _check_listen(address: str, port: int) -> None:
    """Raise OSError if `address:port` cannot be bound (os-ken would only log it in a thread)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="sluice-controller",
        description="Sluice's central OpenFlow controller (programs every node's br-int).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML configuration (default: $SLUICE_CONTROLLER_CONFIG; environment overrides it)",
    )
    return parser


class Controller:
    """The running controller: every part, started and stopped in order."""

    def __init__(self, config: ControllerConfig) -> None:
        from controller.app import OpenFlowService  # imports os-ken: only when really starting
        from controller.switches import SwitchManager

        self.config = config
        self.metrics = ControllerMetrics()
        self.model = ClusterModel()
        self.dirty = DirtySet()
        self.switches = SwitchManager(self.model, self.dirty, self.metrics)
        self.informers = Informers(
            lambda: api_client(config.kubeconfig),
            self.model,
            self.dirty,
            resync_seconds=config.resync_seconds,
            metrics=self.metrics,
            on_relist=self.switches.resync,
        )
        self.elector = LeaderElector(
            KubeLeaseApi(api_client(config.kubeconfig), config.lease_namespace, config.lease_name),
            name=config.lease_name,
            namespace=config.lease_namespace,
            identity=config.identity,
            lease_duration=config.lease_duration_seconds,
            renew_period=config.lease_renew_seconds,
            on_change=self.switches.set_leadership,
        )
        self.openflow = OpenFlowService(config, self.switches)
        self._listening = False
        self.http = HealthServer(config.metrics_address, config.metrics_port, self.metrics, self.ready)

    def ready(self) -> bool:
        """Return True once the informers have synced and OpenFlow is listening."""
        return self._listening and self.informers.synced()

    def start(self) -> None:
        """Start every part. Raises OSError if a port cannot be bound."""
        _check_listen(self.config.openflow_address, self.config.openflow_port)
        self.http.start()
        self.informers.start()
        self.switches.start()
        self.elector.start()
        self.openflow.start()
        self._listening = True

    def stop(self) -> None:
        """Stop every part; the switches keep their flows."""
        self._listening = False
        self.elector.stop(timeout=1.0)  # releases the Lease: the other replica takes over at once
        self.informers.stop(timeout=0.5)
        self.switches.stop(timeout=2.0)
        self.openflow.stop()
        self.http.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the controller until SIGTERM or SIGINT; return the exit code (0 after a clean stop).

    1: invalid configuration; 2: bad usage; 3: a part could not start (port taken, no kubeconfig).
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config or os.environ.get("SLUICE_CONTROLLER_CONFIG") or None)
    except ConfigError as exc:
        print(f"sluice-controller: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=config.log_level.value,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        controller = Controller(config)
        controller.start()
    except Exception as exc:  # kubeconfig missing, port taken, ...: one clear line
        print(f"sluice-controller: cannot start: {exc}", file=sys.stderr)
        return EXIT_START
    c = config
    log.info(
        "sluice-controller %s up: OpenFlow %s:%d, metrics %s:%d",
        c.identity, c.openflow_address, c.openflow_port, c.metrics_address, c.metrics_port,
    )  # fmt: skip
    while not stop.wait(0.5):
        pass
    controller.stop()
    log.info("sluice-controller stopped")
    return EXIT_OK


def run() -> None:
    """Console-script entry point: run `main` and exit without waiting for os-ken's threads."""
    code = main()
    # os._exit skips the atexit handlers, and the kubernetes client removes the temporary files
    # it wrote a kubeconfig's inline CA and client certificate to in one of them: run them first.
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
