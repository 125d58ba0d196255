"""Asks br-int, over its local management socket, whether a pod's flows are installed.

The agent answers a CNI ADD only once the controller has programmed the pod. The controller
pushes a pod's flows in one atomic OpenFlow bundle, so one flow carrying the pod's cookie and
matching on the pod's address means all of them are there. (The cookie alone is not enough: it
comes from the pod's namespace and name, and the flows of an earlier pod or sandbox of that name,
with another address, may still be on the bridge when the controller has not caught up.)
This module speaks just enough OpenFlow 1.3 for that over `RUNDIR/BRIDGE.mgmt`, so a pod start
costs a few hundred microseconds of socket I/O instead of an `ovs-ofctl` process:

* `has_flows` sends a flow-stats request filtered by cookie (one persistent connection).
* `wait_for_flows` is event-driven: a second persistent connection carries a flow monitor, and a
  reader thread wakes the waiters whose cookie a newly added (or modified) flow carries. A poll
  interval would add its mean (tens of milliseconds) to every ADD; the monitor adds ~nothing.

The monitor is an optimisation, never a dependency: while it is down (bridge deleted or
re-created, vswitchd restarted) or paused by OVS, waiters poll with a short bounded interval, and
every time it comes back each waiter queries once more before trusting it again.

Wire format of the monitor, as OVS 3.1 speaks it on an OpenFlow 1.3 connection: captured from
`ovs-ofctl -O OpenFlow13 monitor br-int watch:` on the wire, matched against the structs in OVS's
include/openflow/nicira-ext.h that the ONF extension reuses and os-ken's ONF EXT-187 constants
(ofproto_v1_3.py). OVS accepts the Nicira NXST_FLOW_MONITOR only in OpenFlow 1.0 (in 1.3 it
answers OFPET_BAD_REQUEST/OFPBRC_BAD_EXP_TYPE) and the standard OFPMP_FLOW_MONITOR only from 1.4,
so 1.3 uses ONF extension EXT-187:

* request: OFPMP_EXPERIMENTER multipart, experimenter ONF (0x4f4e4600), exp_type 1870, body
  `onf_flow_monitor_request` {be32 id, be16 flags (NXFMF_*), be16 match_len, be32 out_port,
  u8 table_id, 3 zero bytes} followed by an OXM `ofp_match` whose length is `match_len`.
* updates: multipart replies of the same experimenter type, xid 0 (REPLY_MORE set on all but the
  last message of one burst; every message holds whole updates), each update laid out like
  `nx_flow_update_full` {be16 length, be16 event (NXFME_*), be16 reason, be16 priority,
  be16 idle, be16 hard, be16 match_len, u8 table_id, u8 pad, be64 cookie, ofp_match...}.
* OFPT_EXPERIMENTER ONF exp_type 1871 (paused) and 1872 (resumed) bracket a backlog: OVS stops
  sending additions while the connection backs up and sends the missed ones before "resumed".
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OFP_VERSION = 0x04  # OpenFlow 1.3; br-int always allows it
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_MULTIPART_REQUEST = 18
OFPT_MULTIPART_REPLY = 19
OFPMP_FLOW = 1
OFPMP_EXPERIMENTER = 0xFFFF
OFPMPF_REPLY_MORE = 1
OFPTT_ALL = 0xFF
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
_HEADER = struct.Struct("!BBHI")

# The flow monitor (ONF EXT-187 as OVS implements it for OpenFlow 1.3; see the module docstring).
ONF_EXPERIMENTER = 0x4F4E4600
ONFMP_FLOW_MONITOR = 1870
ONFT_FLOW_MONITOR_PAUSED = 1871
ONFT_FLOW_MONITOR_RESUMED = 1872
NXFMF_ADD = 1 << 1
NXFMF_MODIFY = 1 << 3  # no NXFMF_INITIAL (the query covers what is there) and no NXFMF_ACTIONS
NXFME_ADDED = 0
NXFME_MODIFIED = 2
_EXPERIMENTER_MP = struct.Struct("!HH4xII")  # type, flags, pad, experimenter, exp_type
_MONITOR_REQUEST = struct.Struct("!IHHIB3x")  # id, flags, match_len, out_port, table_id
_UPDATE_HEADER = struct.Struct("!HH")  # length, event
_UPDATE_COOKIE = struct.Struct("!Q")
_UPDATE_COOKIE_OFFSET = 16
_UPDATE_FULL_SIZE = 24  # the update's match (an ofp_match) follows at this offset
_FLOW_STATS_MATCH_OFFSET = 48  # in one ofp_flow_stats entry of a flow-stats reply
OFPMT_OXM = 1
OFPXMC_OPENFLOW_BASIC = 0x8000
# The OXM fields that carry one IPv4 address: IPV4_SRC, IPV4_DST, ARP_SPA, ARP_TPA.
_IPV4_ADDRESS_FIELDS = frozenset({11, 12, 22, 23})
_OXM_HEADER = struct.Struct("!HBB")  # class, field << 1 | hasmask, payload length
_MONITOR_ID = 1
_MONITOR_XID = 1

# While the monitor is down, waiters poll starting at `interval` and growing to this cap.
MAX_POLL_INTERVAL = 0.05
# The reader thread retries a lost monitor connection with this backoff (only while someone waits).
MONITOR_RETRY_MIN = 0.02
MONITOR_RETRY_MAX = 0.5
_RECV_SIZE = 256 * 1024

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


@dataclass(frozen=True, slots=True)
class FlowProbeStats:
    """Counters of one FlowProbe, for tests and debugging (all since the probe was made)."""

    monitor_up: bool  # the monitor is established and not paused: waiters trust its updates
    monitor_sessions: int  # how many times a monitor was established
    monitor_pauses: int  # ONFT "paused" messages received
    monitor_updates: int  # flow additions/modifications the monitor reported
    monitor_wakeups: int  # waits that returned True because a monitor update woke them
    wait_queries: int  # flow-stats queries made by wait_for_flows (initial checks and polls)
    waiters: int  # waits in progress


def monitor_request(xid: int, monitor_id: int = _MONITOR_ID) -> bytes:
    """Return the OpenFlow 1.3 message that starts monitoring additions and modifications.

    All tables, every flow, without actions (NXFMF_ACTIONS unset): an update is ~40-50 bytes,
    which matters when the controller pushes 50,000 flows in one bundle.
    """
    match = struct.pack("!HH4x", 1, 4)  # an empty OXM match (OFPMT_OXM, length 4, padded to 8)
    body = _MONITOR_REQUEST.pack(monitor_id, NXFMF_ADD | NXFMF_MODIFY, 4, OFPP_ANY, OFPTT_ALL) + match
    mp = _EXPERIMENTER_MP.pack(OFPMP_EXPERIMENTER, 0, ONF_EXPERIMENTER, ONFMP_FLOW_MONITOR)
    length = _HEADER.size + len(mp) + len(body)
    return _HEADER.pack(OFP_VERSION, OFPT_MULTIPART_REQUEST, length, xid) + mp + body


def is_monitor_reply(payload: bytes) -> bool:
    """Return True when a multipart-reply payload (after the OpenFlow header) is a monitor reply."""
    if len(payload) < _EXPERIMENTER_MP.size:
        return False
    mp_type, _, experimenter, exp_type = _EXPERIMENTER_MP.unpack_from(payload)
    return (mp_type, experimenter, exp_type) == (OFPMP_EXPERIMENTER, ONF_EXPERIMENTER, ONFMP_FLOW_MONITOR)


def flow_updates(payload: bytes) -> list[tuple[int, int, int]]:
    """Return (cookie, offset of its match in `payload`, end of the update) of each flow added
    or modified in one monitor reply payload.

    Deletions and abbreviated updates are skipped. Raises FlowProbeError for an update whose
    length does not fit the message (the caller then re-syncs by reconnecting).
    """
    updates: list[tuple[int, int, int]] = []
    offset = _EXPERIMENTER_MP.size
    end = len(payload)
    while offset < end:
        if offset + _UPDATE_HEADER.size > end:
            raise FlowProbeError(f"truncated flow update at byte {offset} of {end}")
        length, event = _UPDATE_HEADER.unpack_from(payload, offset)
        if length < 8 or length % 8 or offset + length > end:
            raise FlowProbeError(f"bad flow update length {length} at byte {offset} of {end}")
        if event in (NXFME_ADDED, NXFME_MODIFIED):
            if length < _UPDATE_FULL_SIZE:
                raise FlowProbeError(f"short flow update ({length} bytes) for event {event}")
            cookie = _UPDATE_COOKIE.unpack_from(payload, offset + _UPDATE_COOKIE_OFFSET)[0]
            updates.append((cookie, offset + _UPDATE_FULL_SIZE, offset + length))
        offset += length
    return updates


def match_names_ipv4(data: bytes, offset: int, address: bytes, limit: int | None = None) -> bool:
    """Whether the OXM `ofp_match` at `offset` of `data` matches exactly the IPv4 `address` (4
    bytes) in an IPv4 or ARP address field (a masked field does not count). The match ends at
    `limit` at the latest (its entry's end; default the end of `data`). A match that is not OXM,
    or cut short, names nothing."""
    limit = len(data) if limit is None else min(limit, len(data))
    if offset + 4 > limit:
        return False
    match_type, match_length = struct.unpack_from("!HH", data, offset)
    if match_type != OFPMT_OXM:
        return False
    end = min(offset + match_length, limit)
    position = offset + 4
    while position + _OXM_HEADER.size <= end:
        oxm_class, field_mask, length = _OXM_HEADER.unpack_from(data, position)
        value = position + _OXM_HEADER.size
        if (
            oxm_class == OFPXMC_OPENFLOW_BASIC
            and field_mask >> 1 in _IPV4_ADDRESS_FIELDS
            and length == 4
            and data[value : value + 4] == address
        ):
            return True
        position = value + length
    return False


class _MessageStream:
    """Splits what the switch sends on one connection into OpenFlow messages."""

    __slots__ = ("_buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def read(self) -> tuple[tuple[int, int, int, int], bytes]:
        """Return ((version, type, length, xid), payload) of the next message.

        Raises FlowProbeError when the switch closes the connection or sends a bad length, and
        OSError (including timeouts) from the socket.
        """
        while True:
            if len(self._buf) >= _HEADER.size:
                fields = _HEADER.unpack_from(self._buf)
                length = fields[2]
                if length < _HEADER.size:
                    raise FlowProbeError(f"bad OpenFlow message length {length}")
                if len(self._buf) >= length:
                    payload = bytes(self._buf[_HEADER.size : length])
                    del self._buf[:length]
                    return fields, payload
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise FlowProbeError("bridge closed the management connection")
            self._buf += chunk

    def answer_echo(self, xid: int, payload: bytes) -> None:
        """Answer an ECHO_REQUEST (vswitchd drops a connection that leaves its probes unanswered)."""
        header = _HEADER.pack(OFP_VERSION, OFPT_ECHO_REPLY, _HEADER.size + len(payload), xid)
        self.sock.sendall(header + payload)


class _Waiter:
    """One wait_for_flows call in progress; `hit` is set by the monitor thread (under the lock)."""

    __slots__ = ("address", "hit", "key", "mask")

    def __init__(self, cookie: int, mask: int, address: bytes | None) -> None:
        self.key = cookie & mask
        self.mask = mask
        self.address = address
        self.hit = False


class FlowProbe:
    """Persistent OpenFlow connections to one bridge's management socket. Thread-safe.

    One connection answers `has_flows` queries; a second one, opened by the first
    `wait_for_flows`, carries the flow monitor and is read by a background thread that `close()`
    stops.
    """

    def __init__(self, mgmt_socket: Path | str, *, io_timeout: float = 2.0) -> None:
        self._path = str(mgmt_socket)
        self._io_timeout = io_timeout
        self._conn: _MessageStream | None = None
        self._xid = 0
        self._lock = threading.Lock()  # the query connection
        # Everything below is guarded by _cond: the waiters, the monitor's state and counters.
        self._cond = threading.Condition()
        self._waiters: dict[int, dict[int, list[_Waiter]]] = {}  # mask -> cookie & mask -> waiters
        self._waiter_count = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._monitor_sock: socket.socket | None = None
        self._monitor_up = False
        self._session = 0  # bumped whenever the monitor (re)becomes trustworthy
        self._sessions = 0
        self._pauses = 0
        self._updates = 0
        self._wakeups = 0
        self._wait_queries = 0

    def close(self) -> None:
        """Stop the monitor thread and close both connections (the next call reconnects)."""
        with self._cond:
            thread = self._thread
            self._stopping = True
            sock = self._monitor_sock
            self._cond.notify_all()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
        if thread is not None:
            thread.join(timeout=self._io_timeout + 5)
            if thread.is_alive():
                log.warning("flow monitor thread for %s did not stop", self._path)
        with self._cond:
            self._thread = None
            self._stopping = False
        with self._lock:
            self._drop()

    def stats(self) -> FlowProbeStats:
        """Return the probe's counters (see FlowProbeStats)."""
        with self._cond:
            return FlowProbeStats(
                monitor_up=self._monitor_up,
                monitor_sessions=self._sessions,
                monitor_pauses=self._pauses,
                monitor_updates=self._updates,
                monitor_wakeups=self._wakeups,
                wait_queries=self._wait_queries,
                waiters=self._waiter_count,
            )

    def has_flows(
        self, cookie: int, mask: int = POD_COOKIE_MASK, *, address: ipaddress.IPv4Address | None = None
    ) -> bool:
        """Return True when at least one flow on the bridge has `cookie` under `mask` (and, when
        `address` is given, matches on it: see `wait_for_flows`).

        Raises FlowProbeError when the bridge cannot be asked (after one reconnect).
        """
        packed = None if address is None else address.packed
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._query(cookie, mask, packed)
                except (OSError, FlowProbeError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise FlowProbeError(f"cannot query flows on {self._path}: {exc}") from exc
        raise AssertionError("unreachable")

    def wait_for_flows(
        self,
        cookie: int,
        timeout: float,
        *,
        mask: int = POD_COOKIE_MASK,
        interval: float = 0.01,
        address: ipaddress.IPv4Address | None = None,
    ) -> bool:
        """Return True as soon as flows with `cookie` appear, False after `timeout` seconds.

        With `address`, only a flow with `cookie` that matches on that IPv4 address (as source,
        destination, or ARP sender or target) counts: flows of an earlier incarnation of the pod
        (same namespace and name, hence the same cookie, another address) that the controller
        has not replaced yet are not this pod's.

        Registers with the flow monitor first, then queries once (the flows may be there
        already, e.g. for a retried ADD), then sleeps until a monitor update carries the cookie.
        While the monitor is down or paused it polls every `interval` seconds, growing to
        MAX_POLL_INTERVAL. A bridge that cannot be reached counts as "not yet".
        """
        deadline = time.monotonic() + timeout
        waiter = _Waiter(cookie, mask, None if address is None else address.packed)
        self._register(waiter)
        try:
            delay = interval
            while True:
                with self._cond:
                    if waiter.hit:
                        self._wakeups += 1
                        return True
                    # Read before querying: only a monitor that was up before the query was sent
                    # is sure to report every flow the query could not see yet.
                    session = self._trusted_session()
                if self._poll(cookie, mask, address):
                    return True
                now = time.monotonic()
                if now >= deadline:
                    return False
                wake_at = deadline if session is not None else min(now + delay, deadline)
                with self._cond:
                    while not waiter.hit and self._trusted_session() == session:
                        remaining = wake_at - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    if waiter.hit:
                        self._wakeups += 1
                        return True
                if session is None:
                    delay = min(delay * 1.5, MAX_POLL_INTERVAL)
        finally:
            self._unregister(waiter)

    # ---- waiters ----------------------------------------------------------------------------

    def _trusted_session(self) -> int | None:
        """The current monitor session when it is up and not paused, else None (caller locks)."""
        return self._session if self._monitor_up else None

    def _register(self, waiter: _Waiter) -> None:
        with self._cond:
            self._waiters.setdefault(waiter.mask, {}).setdefault(waiter.key, []).append(waiter)
            self._waiter_count += 1
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._monitor_loop, name=f"flowprobe-monitor {self._path}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()  # an idle monitor thread reconnects now that someone waits

    def _unregister(self, waiter: _Waiter) -> None:
        with self._cond:
            by_key = self._waiters[waiter.mask]
            same = by_key[waiter.key]
            same.remove(waiter)
            if not same:
                del by_key[waiter.key]
            if not by_key:
                del self._waiters[waiter.mask]
            self._waiter_count -= 1

    def _poll(self, cookie: int, mask: int, address: ipaddress.IPv4Address | None) -> bool:
        try:
            found = self.has_flows(cookie, mask, address=address)
        except FlowProbeError as exc:
            log.debug("flow probe: %s", exc)
            found = False
        with self._cond:
            self._wait_queries += 1
        return found

    def _deliver(self, payload: bytes, updates: list[tuple[int, int, int]]) -> None:
        """Mark the waiters that one of `updates` (`flow_updates` of `payload`) satisfies, and
        wake them."""
        with self._cond:
            self._updates += len(updates)
            woke = False
            for mask, by_key in self._waiters.items():
                for cookie, match, end in updates:
                    for waiter in by_key.get(cookie & mask, ()):
                        if waiter.hit:
                            continue
                        if waiter.address is None or match_names_ipv4(payload, match, waiter.address, end):
                            waiter.hit = True
                            woke = True
            if woke:
                self._cond.notify_all()

    def _set_monitor(self, up: bool, *, new_session: bool = False) -> None:
        with self._cond:
            self._monitor_up = up
            if new_session:
                self._session += 1
            self._cond.notify_all()

    # ---- the monitor thread -----------------------------------------------------------------

    def _monitor_loop(self) -> None:
        backoff = MONITOR_RETRY_MIN
        lost = False
        while True:
            with self._cond:
                # With nobody waiting there is nothing to watch: idle until a wait starts.
                self._cond.wait_for(lambda: self._stopping or self._waiter_count > 0)
                if self._stopping:
                    return
            try:
                stream = self._open_monitor()
            except (OSError, ValueError, struct.error) as exc:
                self._forget_monitor_sock()
                log.debug("flow monitor on %s: cannot connect: %s", self._path, exc)
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, MONITOR_RETRY_MAX)
                continue
            backoff = MONITOR_RETRY_MIN
            with self._cond:
                if self._stopping:  # close() may have missed this socket: never block on it
                    self._monitor_sock = None
                    stream.sock.close()
                    return
                self._sessions += 1
            if lost:
                log.info("flow monitor on %s is back", self._path)
            self._set_monitor(True, new_session=True)
            try:
                self._follow(stream)
            except Exception as exc:  # whatever went wrong, waiters poll and the monitor restarts
                with self._cond:
                    stopping = self._stopping
                if not stopping:
                    lost = True
                    log.info(
                        "flow monitor on %s lost (%s); waiters poll until it is back",
                        self._path,
                        exc,
                        exc_info=not isinstance(exc, OSError),
                    )
            finally:
                self._set_monitor(False)
                self._forget_monitor_sock()

    def _open_monitor(self) -> _MessageStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._cond:
            if self._stopping:
                sock.close()
                raise FlowProbeError("closing")
            self._monitor_sock = sock
        sock.settimeout(self._io_timeout)
        sock.connect(self._path)
        stream = _MessageStream(sock)
        self._hello(stream)
        sock.sendall(monitor_request(_MONITOR_XID))
        while True:
            (_, msg_type, _, xid), payload = stream.read()
            if msg_type == OFPT_ECHO_REQUEST:
                stream.answer_echo(xid, payload)
            elif xid != _MONITOR_XID:
                continue
            elif msg_type == OFPT_ERROR:
                err_type, err_code = struct.unpack_from("!HH", payload)
                raise FlowProbeError(f"bridge refused flow monitor: error type {err_type} code {err_code}")
            elif msg_type == OFPT_MULTIPART_REPLY and is_monitor_reply(payload):
                sock.settimeout(None)  # from now on the reader sleeps until the switch speaks
                return stream
            else:
                raise FlowProbeError(f"unexpected reply type {msg_type} to the flow monitor request")

    def _follow(self, stream: _MessageStream) -> None:
        """Read monitor messages until the connection fails (raises OSError/FlowProbeError)."""
        while True:
            (_, msg_type, _, xid), payload = stream.read()
            if msg_type == OFPT_MULTIPART_REPLY and is_monitor_reply(payload):
                # Each message holds whole updates (OVS splits a burst between updates), so a
                # reply split over several messages (OFPMPF_REPLY_MORE) is parsed message by message.
                self._deliver(payload, flow_updates(payload))
            elif msg_type == OFPT_ECHO_REQUEST:
                stream.answer_echo(xid, payload)
            elif msg_type == OFPT_EXPERIMENTER and len(payload) >= 8:
                experimenter, exp_type = struct.unpack_from("!II", payload)
                if experimenter != ONF_EXPERIMENTER:
                    continue
                if exp_type == ONFT_FLOW_MONITOR_PAUSED:
                    # Additions are held back until the backlog drains: poll meanwhile.
                    log.debug("flow monitor on %s paused by the switch", self._path)
                    with self._cond:
                        self._pauses += 1
                    self._set_monitor(False)
                elif exp_type == ONFT_FLOW_MONITOR_RESUMED:
                    # A new session: every waiter queries once more before trusting updates again.
                    log.debug("flow monitor on %s resumed", self._path)
                    self._set_monitor(True, new_session=True)
            elif msg_type == OFPT_ERROR:
                err_type, err_code = struct.unpack_from("!HH", payload)
                raise FlowProbeError(f"flow monitor error type {err_type} code {err_code}")

    def _forget_monitor_sock(self) -> None:
        with self._cond:
            sock, self._monitor_sock = self._monitor_sock, None
        if sock is not None:
            sock.close()

    # ---- OpenFlow ---------------------------------------------------------------------------

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.sock.close()
            self._conn = None

    def _next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    @staticmethod
    def _hello(stream: _MessageStream) -> None:
        stream.sock.sendall(_HEADER.pack(OFP_VERSION, OFPT_HELLO, _HEADER.size, 0))
        version, msg_type, _, _ = stream.read()[0]
        if msg_type != OFPT_HELLO:
            raise FlowProbeError(f"expected HELLO, got message type {msg_type}")
        if version < OFP_VERSION:
            raise FlowProbeError(f"bridge speaks OpenFlow version {version:#x} only")

    def _connect(self) -> _MessageStream:
        if self._conn is not None:
            return self._conn
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._io_timeout)
        try:
            sock.connect(self._path)
            stream = _MessageStream(sock)
            self._hello(stream)
        except BaseException:
            sock.close()
            raise
        self._conn = stream
        return stream

    def _query(self, cookie: int, mask: int, address: bytes | None) -> bool:
        stream = self._connect()
        xid = self._next_xid()
        body = struct.pack("!HH4xB3xII4xQQ", OFPMP_FLOW, 0, OFPTT_ALL, OFPP_ANY, OFPG_ANY, cookie, mask)
        match = struct.pack("!HH4x", 1, 4)  # an empty OXM match: every flow
        length = _HEADER.size + len(body) + len(match)
        stream.sock.sendall(_HEADER.pack(OFP_VERSION, OFPT_MULTIPART_REQUEST, length, xid) + body + match)
        found = False
        while True:
            (_, msg_type, _, reply_xid), payload = stream.read()
            if msg_type == OFPT_ECHO_REQUEST:
                stream.answer_echo(reply_xid, payload)
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
            found = found or _stats_hold(payload, address)
            if not flags & OFPMPF_REPLY_MORE:
                return found


def _stats_hold(payload: bytes, address: bytes | None) -> bool:
    """Whether a flow-stats reply payload holds a flow (one that matches on `address`, if given)."""
    if address is None:
        return len(payload) > 8
    offset = 8  # after the multipart header: type, flags, 4 bytes of padding
    while offset + 2 <= len(payload):
        (length,) = struct.unpack_from("!H", payload, offset)
        if length < _FLOW_STATS_MATCH_OFFSET:
            raise FlowProbeError(f"bad flow-stats entry length {length}")
        if match_names_ipv4(payload, offset + _FLOW_STATS_MATCH_OFFSET, address, limit=offset + length):
            return True
        offset += length
    return False
