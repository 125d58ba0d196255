"""A TCP relay from inside a network namespace to a port on the host's loopback.

A bridge in a node's namespace cannot reach 127.0.0.1 of the host namespace, where a controller
under test (or a benchmark) listens. The relay's listening socket is created inside the node's
namespace (a socket keeps the namespace it was made in, so one short-lived thread enters the
namespace with setns(2) just to create it); every connection accepted there is relayed to the
host's 127.0.0.1:PORT. No address or route is added anywhere. Dropping or pausing the relayed
connections simulates a controller or switch going away or going silent.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from lab.forward import pump, run_in_netns

DEFAULT_LISTEN_PORT = 6653  # the IANA OpenFlow port, where a bridge looks for its controller


def socket_in_netns(netns: str, address: tuple[str, int]) -> socket.socket:
    """Return a listening TCP socket bound to `address` inside network namespace `netns`.

    Raises OSError if the namespace cannot be entered or the address bound.
    """

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        return sock

    # the socket stays in the namespace it was created in
    return run_in_netns(netns, make)


class Relay:
    """Relays TCP connections accepted inside a node's namespace to a port on the host's 127.0.0.1."""

    def __init__(self, netns: str, upstream_port: int, listen_port: int = DEFAULT_LISTEN_PORT) -> None:
        self.upstream_port = upstream_port
        self._listener = socket_in_netns(netns, ("127.0.0.1", listen_port))
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
                up.settimeout(None)
            except OSError:
                down.close()  # nobody listening: the bridge retries, as with a real controller
                continue
            with self._lock:
                if self._closed:
                    down.close()
                    up.close()
                    return
                self._conns |= {down, up}
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=pump, args=(a, b, self._flowing), daemon=True).start()

    def pause(self) -> None:
        """Hold every byte in both directions (a switch that stopped answering)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Let bytes flow again."""
        self._flowing.set()

    def drop_connections(self) -> None:
        """Cut every relayed connection (the bridge sees its controller go away)."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop listening and cut every connection."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._flowing.set()
        self.drop_connections()
        self._thread.join(2)
