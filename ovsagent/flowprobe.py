"""Asks br-int, over its local management socket, whether a pod's flows are installed.

The agent answers a CNI ADD only once the controller has programmed the pod. The controller
pushes a pod's flows in one atomic OpenFlow bundle, so one flow carrying the pod's cookie means
all of them are there. This module speaks just enough OpenFlow 1.3 for that (HELLO, ECHO and a
flow-stats request filtered by cookie) over `RUNDIR/BRIDGE.mgmt`, so a pod start costs a few
hundred microseconds of socket I/O instead of an `ovs-ofctl` process.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import struct
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

OFP_VERSION = 0x04  # OpenFlow 1.3; br-int always allows it
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_MULTIPART_REQUEST = 18
OFPT_MULTIPART_REPLY = 19
OFPMP_FLOW = 1
OFPMPF_REPLY_MORE = 1
OFPTT_ALL = 0xFF
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
_HEADER = struct.Struct("!BBHI")

# The cookie layout is owned by flows/cookies.py (generation | category | object id); the agent
# may not import flows, so the two lines it needs are repeated here and a test checks that both
# compute the same cookie. The mask leaves out the generation, so an agent keeps working across
# a pipeline-generation bump made by a newer controller.
POD_CATEGORY = 3
CATEGORY_SHIFT = 48
POD_COOKIE_MASK = (1 << 56) - 1


class FlowProbeError(OSError):
    """The bridge's management socket could not be reached or answered nonsense."""


def pod_cookie(namespace: str, name: str) -> int:
    """Return the cookie of a pod's flows, without the generation bits."""
    digest = hashlib.blake2b(f"pod/{namespace}/{name}".encode(), digest_size=6).digest()
    return (POD_CATEGORY << CATEGORY_SHIFT) | int.from_bytes(digest, "big")


class FlowProbe:
    """A persistent OpenFlow connection to one bridge's management socket. Thread-safe."""

    def __init__(self, mgmt_socket: Path | str, *, io_timeout: float = 2.0) -> None:
        self._path = str(mgmt_socket)
        self._io_timeout = io_timeout
        self._sock: socket.socket | None = None
        self._xid = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection (the next query reconnects)."""
        with self._lock:
            self._drop()

    def has_flows(self, cookie: int, mask: int = POD_COOKIE_MASK) -> bool:
        """Return True when at least one flow on the bridge has `cookie` under `mask`.

        Raises FlowProbeError when the bridge cannot be asked (after one reconnect).
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._query(cookie, mask)
                except (OSError, FlowProbeError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise FlowProbeError(f"cannot query flows on {self._path}: {exc}") from exc
        raise AssertionError("unreachable")

    def wait_for_flows(
        self, cookie: int, timeout: float, *, mask: int = POD_COOKIE_MASK, interval: float = 0.01
    ) -> bool:
        """Return True as soon as flows with `cookie` appear, False after `timeout` seconds.

        Polls with a short, growing interval (capped at 100 ms); a bridge that cannot be
        reached counts as "not yet" until the deadline.
        """
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            try:
                if self.has_flows(cookie, mask):
                    return True
            except FlowProbeError as exc:
                log.debug("flow probe: %s", exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.1)

    # ---- OpenFlow ---------------------------------------------------------------------------

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._io_timeout)
        try:
            sock.connect(self._path)
            sock.sendall(_HEADER.pack(OFP_VERSION, OFPT_HELLO, _HEADER.size, self._next_xid()))
            version, msg_type, _, _ = self._read_message(sock)[0]
            if msg_type != OFPT_HELLO:
                raise FlowProbeError(f"expected HELLO, got message type {msg_type}")
            if version < OFP_VERSION:
                raise FlowProbeError(f"bridge speaks OpenFlow version {version:#x} only")
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def _query(self, cookie: int, mask: int) -> bool:
        sock = self._connect()
        xid = self._next_xid()
        body = struct.pack("!HH4xB3xII4xQQ", OFPMP_FLOW, 0, OFPTT_ALL, OFPP_ANY, OFPG_ANY, cookie, mask)
        match = struct.pack("!HH4x", 1, 4)  # an empty OXM match: every flow
        length = _HEADER.size + len(body) + len(match)
        sock.sendall(_HEADER.pack(OFP_VERSION, OFPT_MULTIPART_REQUEST, length, xid) + body + match)
        found = False
        while True:
            (_, msg_type, _, reply_xid), payload = self._read_message(sock)
            if msg_type == OFPT_ECHO_REQUEST:
                sock.sendall(
                    _HEADER.pack(OFP_VERSION, OFPT_ECHO_REPLY, _HEADER.size + len(payload), reply_xid)
                    + payload
                )
                continue
            if reply_xid != xid:
                continue  # a stray message (e.g. an async one): not ours
            if msg_type == OFPT_ERROR:
                err_type, err_code = struct.unpack_from("!HH", payload)
                raise FlowProbeError(f"bridge refused flow-stats: error type {err_type} code {err_code}")
            if msg_type != OFPT_MULTIPART_REPLY or len(payload) < 8:
                raise FlowProbeError(f"unexpected reply type {msg_type} to flow-stats")
            mp_type, flags = struct.unpack_from("!HH", payload)
            if mp_type != OFPMP_FLOW:
                raise FlowProbeError(f"unexpected multipart type {mp_type}")
            found = found or len(payload) > 8
            if not flags & OFPMPF_REPLY_MORE:
                return found

    def _read_message(self, sock: socket.socket) -> tuple[tuple[int, int, int, int], bytes]:
        header = self._read_exact(sock, _HEADER.size)
        fields = _HEADER.unpack(header)
        length = fields[2]
        if length < _HEADER.size:
            raise FlowProbeError(f"bad OpenFlow message length {length}")
        return fields, self._read_exact(sock, length - _HEADER.size)

    @staticmethod
    def _read_exact(sock: socket.socket, size: int) -> bytes:
        chunks = []
        while size:
            chunk = sock.recv(size)
            if not chunk:
                raise FlowProbeError("bridge closed the management connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
