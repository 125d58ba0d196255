"""`sluice lab forward`: a TCP port forward from the host's loopback into a lab namespace.

The lab's API server listens on the fabric (198.18.0.1:6443) inside the control-plane namespace,
which the host cannot route to (and the lab adds no address to the host). This process listens on
127.0.0.1:PORT of the namespace it starts in (the host's), then switches its own network namespace
to the target with setns(2): every socket made afterwards (the upstream connections) lives there.
So `kubectl` and `sluice lab` on the host reach the API server through 127.0.0.1. It prints the
port it listens on, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def enter_netns(name: str) -> None:
    """Move the calling thread (and threads it creates later) into network namespace `name`.

    Raises OSError if the namespace cannot be opened or entered."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Return `fn()` run in a thread of its own that entered network namespace `name` first
    (setns changes the calling thread only, so the caller's namespace is untouched). Re-raises
    what `fn` or entering raised (OSError if the namespace cannot be entered). Sockets `fn`
    creates stay in that namespace."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            enter_netns(name)
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"in netns {name}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value


def pump(src: socket.socket, dst: socket.socket, gate: threading.Event | None = None) -> None:
    """Copy bytes from `src` to `dst` until either side ends, then shut both down.

    With `gate`, every chunk waits until the gate is set (a paused relay holds the bytes)."""
    try:
        while data := src.recv(65536):
            if gate is not None:
                gate.wait()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            down, _ = listener.accept()
        except OSError:
            return
        try:
            up = socket.create_connection(target, timeout=5)
            up.settimeout(None)
        except OSError:
            down.close()
            continue
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main(argv: list[str]) -> int:
    """Run the forward until SIGTERM/SIGINT; 0 on a clean stop, 1 if it cannot start, 2 usage."""
    parser = argparse.ArgumentParser(
        prog="sluice lab forward",
        description="Forward 127.0.0.1:PORT (host) to HOST:PORT inside a lab network namespace.",
    )
    parser.add_argument("--netns", required=True, help="namespace the target address lives in")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="target inside the namespace")
    parser.add_argument("--port", type=int, default=0, help="local port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    host, sep, port_text = args.to.rpartition(":")
    if not sep or not port_text.isdigit():
        print(f"sluice lab forward: --to must be HOST:PORT, got {args.to!r}", file=sys.stderr)
        return 2
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.port))
        listener.listen(64)
        enter_netns(args.netns)
    except OSError as exc:
        print(f"sluice lab forward: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_serve, args=(listener, (host, int(port_text))), daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    stop.wait()
    listener.close()
    return 0
