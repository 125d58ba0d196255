"""Real traffic checks between namespaces: ping, and a TCP exchange verified by checksum."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from lab.netns import Netns
from lab.procs import CommandError, stop_pids

log = logging.getLogger(__name__)

_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")

# Accepts one connection, reads until the peer shuts its write side, answers with the SHA-256
# of what arrived. Prints its port once listening so the caller never has to sleep.
_SERVER = """
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(float(sys.argv[3]))
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.settimeout(float(sys.argv[3])); h = hashlib.sha256()
while chunk := conn.recv(65536):
    h.update(chunk)
conn.sendall(h.hexdigest().encode()); conn.close()
"""

_CLIENT = """
import hashlib, json, os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
c.sendall(data); c.shutdown(socket.SHUT_WR); reply = b""
while chunk := c.recv(4096):
    reply += chunk
print(json.dumps({"sent": hashlib.sha256(data).hexdigest(), "echo": reply.decode()}))
"""


class TrafficError(Exception):
    """A traffic check could not complete (no connection, timeout, corrupted data)."""


@dataclass(frozen=True, slots=True)
class PingResult:
    """Outcome of `ping`: packets sent and received, and ping's output."""

    transmitted: int
    received: int
    output: str

    @property
    def ok(self) -> bool:
        """True when every packet got its reply."""
        return self.transmitted > 0 and self.received == self.transmitted


@dataclass(frozen=True, slots=True)
class TcpExchange:
    """A completed TCP exchange: bytes sent and how long it took."""

    size: int
    seconds: float


def ping(
    netns: str,
    destination: ipaddress.IPv4Address | str,
    *,
    count: int = 3,
    interval: float = 0.2,
    wait: float = 1.0,
) -> PingResult:
    """Ping `destination` from inside `netns`; return the counts (never raises for loss)."""
    dst = str(ipaddress.ip_address(destination))
    res = Netns(netns).exec(
        "ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait), dst,
        check=False, timeout=count * (interval + wait) + 5,
    )  # fmt: skip
    match = _PING_SUMMARY.search(res.stdout)
    if match is None:
        if "exec of" in res.stderr or "not found" in res.stderr:
            raise TrafficError(f"cannot run ping in {netns}: {res.stderr.strip()}")
        return PingResult(count, 0, res.stdout + res.stderr)
    return PingResult(int(match.group(1)), int(match.group(2)), res.stdout)


def tcp_exchange(
    server_netns: str,
    client_netns: str,
    server_ip: ipaddress.IPv4Address | str,
    *,
    port: int = 0,
    size: int = 1 << 20,
    timeout: float = 10.0,
) -> TcpExchange:
    """Send `size` random bytes over TCP from `client_netns` to a server in `server_netns`.

    The server listens on `server_ip`:`port` (0 = any free port) and answers with the SHA-256 of
    what it received, which must match what was sent. Returns on success; raises TrafficError
    otherwise. The server process is always stopped by its PID.
    """
    ip = str(ipaddress.ip_address(server_ip))
    server = Netns(server_netns).popen(sys.executable, "-c", _SERVER, ip, str(port), str(timeout))
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.isdigit():
            _, err = _finish(server)
            raise TrafficError(f"TCP server in {server_netns} did not start: {err.strip()}")
        started = time.monotonic()
        try:
            res = Netns(client_netns).exec(
                sys.executable, "-c", _CLIENT, ip, line, str(size), str(timeout),
                timeout=timeout + 5,
            )  # fmt: skip
        except CommandError as exc:
            raise TrafficError(f"TCP client {client_netns} -> {ip}:{line} failed: {exc}") from exc
        seconds = time.monotonic() - started
        digests = json.loads(res.stdout)
        if digests["sent"] != digests["echo"]:
            raise TrafficError(f"TCP data corrupted {client_netns} -> {ip}:{line}: {digests}")
        return TcpExchange(size, seconds)
    finally:
        _finish(server)


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        stop_pids([proc.pid], timeout=2.0)
    out, err = proc.communicate(timeout=5)
    return out, err
