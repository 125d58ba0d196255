"""The readiness probe answers a switch's echo requests on both of its connections.

ovs-vswitchd sent no echo request on the management socket during the real-OVS tests, so this
path is driven by a scripted switch on a unix socket: it probes the query connection before its
flow-stats reply, the monitor connection before and after the monitor reply, and then reports
the pod's flow. A probe left unanswered would make a real switch drop the connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovsagent import flowprobe as fp

HEADER = struct.Struct("!BBHI")
COOKIE = fp.pod_cookie("default", "web-1")


class ScriptedSwitch:
    """Accepts the probe's connections on `path` and plays the switch's side of each."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.settimeout(10)
        self.echo_replies: list[tuple[str, int, bytes]] = []  # (connection, xid, payload)
        self.queried = threading.Event()  # the pod's flow is reported only after a query
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        for _ in range(2):  # the query connection and the monitor connection
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(10)
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        stream = fp._MessageStream(conn)
        try:
            (_, kind, _, _), _ = stream.read()
            assert kind == fp.OFPT_HELLO
            conn.sendall(HEADER.pack(fp.OFP_VERSION, fp.OFPT_HELLO, HEADER.size, 0))
            while True:
                (_, kind, _, xid), payload = stream.read()
                assert kind == fp.OFPT_MULTIPART_REQUEST, kind
                (mp_type,) = struct.unpack_from("!H", payload)
                if mp_type == fp.OFPMP_FLOW:
                    self._probe(stream, "query", 0x99, b"q")
                    reply = struct.pack("!HH4x", fp.OFPMP_FLOW, 0)  # no flow has the cookie yet
                    conn.sendall(
                        HEADER.pack(fp.OFP_VERSION, fp.OFPT_MULTIPART_REPLY, 8 + len(reply), xid) + reply
                    )
                    self.queried.set()
                    continue
                self._monitor(stream, xid)
                return
        except (OSError, fp.FlowProbeError):
            return  # the probe closed the connection
        except BaseException as exc:
            self.errors.append(exc)

    def _monitor(self, stream: fp._MessageStream, xid: int) -> None:
        self._probe(stream, "monitor-setup", 0x77, b"before the reply")
        head = struct.pack("!HH4xII", fp.OFPMP_EXPERIMENTER, 0, fp.ONF_EXPERIMENTER, fp.ONFMP_FLOW_MONITOR)
        stream.sock.sendall(HEADER.pack(fp.OFP_VERSION, fp.OFPT_MULTIPART_REPLY, 8 + len(head), xid) + head)
        self._probe(stream, "monitor", 0x78, b"while following")
        # a flow reported before the probe's first query would end its wait without one
        assert self.queried.wait(10), "the probe never queried"
        update = struct.pack("!HH12xQ", 24, fp.NXFME_ADDED, COOKIE)
        body = head + update
        stream.sock.sendall(HEADER.pack(fp.OFP_VERSION, fp.OFPT_MULTIPART_REPLY, 8 + len(body), 0) + body)

    def _probe(self, stream: fp._MessageStream, where: str, xid: int, payload: bytes) -> None:
        request = HEADER.pack(fp.OFP_VERSION, fp.OFPT_ECHO_REQUEST, HEADER.size + len(payload), xid) + payload
        stream.sock.sendall(request)
        (_, kind, _, got_xid), got = stream.read()
        assert kind == fp.OFPT_ECHO_REPLY, f"{where}: answered an echo request with type {kind}"
        self.echo_replies.append((where, got_xid, got))

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in [self.accepter, *self.threads]:
            thread.join(5)


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[tuple[ScriptedSwitch, Path]]:
    path = tmp_path / "br-int.mgmt"
    scripted = ScriptedSwitch(path)
    yield scripted, path
    scripted.close()


def test_echo_requests_are_answered_on_the_query_and_the_monitor_connection(
    switch: tuple[ScriptedSwitch, Path],
) -> None:
    scripted, path = switch
    probe = fp.FlowProbe(path, io_timeout=5.0)
    try:
        assert probe.wait_for_flows(COOKIE, timeout=10.0)
        stats = probe.stats()
    finally:
        probe.close()
    assert scripted.errors == []
    replies = sorted(scripted.echo_replies)
    # the same xid and payload back, on each connection and at each stage of the monitor
    assert ("monitor", 0x78, b"while following") in replies
    assert ("monitor-setup", 0x77, b"before the reply") in replies
    assert ("query", 0x99, b"q") in replies
    assert stats.monitor_sessions == 1 and stats.monitor_updates >= 1
