"""Small servers a lab pod runs (`--serve TCP:80,UDP:53`): each answers with the pod's name.

TCP: for every connection, read one message (up to 4 KiB, or until the peer shuts its side) and
answer `<pod> <message>`, then close. UDP: answer every datagram with `<pod> <datagram>`. So a
client sees which pod answered. Run as `python -m lab.podserve --name NS/POD TCP:80,UDP:53` inside
the pod's namespace; it prints `ready` once every socket is bound, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from types import FrameType


@dataclass(frozen=True, slots=True)
class Service:
    """One listening port: protocol (`TCP` or `UDP`) and number."""

    proto: str
    port: int

    def __str__(self) -> str:
        return f"{self.proto}:{self.port}"


def parse_services(text: str) -> tuple[Service, ...]:
    """Parse `TCP:80,UDP:53` into services; raises ValueError naming the bad entry."""
    services: list[Service] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        proto, sep, port_text = item.partition(":")
        proto = proto.upper()
        if not sep or proto not in ("TCP", "UDP") or not port_text.isdigit():
            raise ValueError(f"bad service {item!r}: use TCP:PORT or UDP:PORT, e.g. TCP:80,UDP:53")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"bad service {item!r}: port must be 1..65535")
        service = Service(proto, port)
        if service in services:
            raise ValueError(f"service {item!r} listed twice")
        services.append(service)
    if not services:
        raise ValueError("no service given: use TCP:PORT or UDP:PORT, e.g. TCP:80,UDP:53")
    return tuple(services)


def _tcp_conn(conn: socket.socket, name: bytes) -> None:
    with conn:
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            data = conn.recv(4096)
            conn.sendall(name + b" " + data)


def _tcp(sock: socket.socket, name: bytes) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=_tcp_conn, args=(conn, name), daemon=True).start()


def _udp(sock: socket.socket, name: bytes) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            sock.sendto(name + b" " + data, peer)
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 1 if a port cannot be bound, 2 for usage."""
    parser = argparse.ArgumentParser(prog="python -m lab.podserve")
    parser.add_argument("--name", required=True, help="the name to answer with (NS/POD)")
    parser.add_argument("services", help="TCP:PORT,UDP:PORT,...")
    args = parser.parse_args(argv)
    try:
        services = parse_services(args.services)
    except ValueError as exc:
        print(f"podserve: {exc}", file=sys.stderr)
        return 2
    name = args.name.encode()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for service in services:
        kind = socket.SOCK_STREAM if service.proto == "TCP" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", service.port))
        except OSError as exc:
            print(f"podserve: cannot bind {service}: {exc}", file=sys.stderr)
            return 1
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
            threading.Thread(target=_tcp, args=(sock, name), daemon=True).start()
        else:
            threading.Thread(target=_udp, args=(sock, name), daemon=True).start()
    print("ready", flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
