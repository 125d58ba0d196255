"""`sluice lab apiserver`: run the API-server stand-in as its own process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lab.apiserver.server import ApiServer, ServerOptions

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """Parse `HOST:PORT` or `[V6]:PORT` into (host, port); raise ValueError with a clear message."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:6443), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen port must be between 0 and 65535, got {port}")
    return host, port


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `sluice lab apiserver`."""
    parser = argparse.ArgumentParser(
        prog="sluice lab apiserver",
        description="Run the lab's Kubernetes API-server stand-in. Prints the URL it listens on.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:6443", help="HOST:PORT to listen on (port 0: any free port)"
    )
    parser.add_argument("--data", metavar="DIR", help="keep state, URL, kubeconfig and TLS files in DIR")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a CA generated into DIR/pki")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="require this bearer token (visible in ps: prefer --token-file)")
    token.add_argument("--token-file", metavar="FILE", help="require the bearer token read from FILE")
    parser.add_argument(
        "--san", action="append", default=[], help="extra IP or DNS name for the TLS certificate"
    )
    parser.add_argument(
        "--history", type=int, default=10_000, help="watch events kept for replay (default 10000)"
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds between watch bookmarks (default 60)"
    )
    parser.add_argument(
        "--service-cidr", default="100.127.0.0/16", help="range Service cluster IPs are allocated from"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str]) -> int:
    """Run the server until SIGTERM or SIGINT; return the exit code (0 clean, 1 failed, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_listen(args.listen)
        if args.history < 1:
            raise ValueError("--history must be at least 1")
        if args.bookmark_interval <= 0:
            raise ValueError("--bookmark-interval must be positive")
        token = args.token
        if args.token_file:
            token = Path(args.token_file).read_text().strip()
            if not token:
                raise ValueError(f"--token-file {args.token_file} is empty")
        options = ServerOptions(
            history_size=args.history,
            bookmark_interval=args.bookmark_interval,
            service_cidr=args.service_cidr,
            extra_sans=tuple(args.san),
        )
        server = ApiServer(host, port, data_dir=args.data, token=token, tls=args.tls, options=options)
    except (ValueError, OSError) as err:
        print(f"sluice lab apiserver: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except (OSError, ValueError) as err:
        print(f"sluice lab apiserver: cannot start on {args.listen}: {err}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0
