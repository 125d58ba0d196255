"""A minimal blocking OpenFlow client for tests: talks to a bridge's mgmt socket with ofmsg's bytes."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import ofmsg
from controller.ofmsg import Command, FlowModCache, OfProto
from flows.flowset import FlowSet
from flows.model import Flow

OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_BARRIER_REPLY = 21
OFPMPF_REPLY_MORE = 1


class OfClientError(RuntimeError):
    """The switch closed the connection or answered something unexpected."""


@dataclass
class PushResult:
    """What a bundle push did: the errors (with the flow each names) and whether it committed."""

    committed: bool
    errors: list[tuple[Command, Flow, Any]] = field(default_factory=list)
    flow_mods: int = 0


class OfClient:
    """One OpenFlow connection to a bridge (`unix:RUNDIR/BRIDGE.mgmt`), at one version."""

    def __init__(self, path: Path | str, version: int = ofmsg.OF15, timeout: float = 10.0) -> None:
        self.proto = OfProto(version)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._xid = 1000
        self.sock.sendall(struct.pack("!BBHI", version, OFPT_HELLO, 8, self.next_xid()))
        hello = self._recv_raw()
        if hello[1] != OFPT_HELLO:
            raise OfClientError(f"expected HELLO, got type {hello[1]}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> OfClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_xid(self) -> int:
        self._xid += 1
        return self._xid

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise OfClientError("the switch closed the connection")
            data += chunk
        return data

    def _recv_raw(self) -> bytes:
        head = self._recv_exact(8)
        length = struct.unpack_from("!H", head, 2)[0]
        return head + self._recv_exact(length - 8)

    def recv(self) -> bytes:
        """Return the next message, answering echo requests on the way."""
        while True:
            data = self._recv_raw()
            if data[1] == OFPT_ECHO_REQUEST:
                self.sock.sendall(data[:1] + bytes([OFPT_ECHO_REPLY]) + data[2:])
                continue
            return data

    def read_flows(self) -> FlowSet:
        """Return every flow of the bridge, read back with a flow-desc (1.5) / flow-stats (1.3) request."""
        request = ofmsg.flow_desc_request(self.proto)
        request.xid = self.next_xid()
        self.sock.sendall(ofmsg.serialize(request))
        entries: list[Any] = []
        while True:
            msg = ofmsg.parse(self.proto, self.recv())
            if type(msg).__name__ == "OFPErrorMsg":
                raise OfClientError(f"flow read-back failed: {msg}")
            entries.extend(msg.body)
            if not msg.flags & OFPMPF_REPLY_MORE:
                return ofmsg.installed_flowset(self.proto, entries)

    def barrier(self) -> list[bytes]:
        """Send a barrier and return the messages (errors) that arrived before its reply."""
        xid = self.next_xid()
        self.sock.sendall(ofmsg.barrier_request(self.proto.version, xid=xid))
        before: list[bytes] = []
        while True:
            data = self.recv()
            if data[1] == OFPT_BARRIER_REPLY and struct.unpack_from("!I", data, 4)[0] == xid:
                return before
            before.append(data)

    def send_flow_mods(self, cache: FlowModCache, deletes: list[Flow], adds: list[Flow]) -> list[bytes]:
        """Send plain flow-mods (no bundle; OpenFlow 1.3 has none) and return the errors."""
        for command, flows in ((Command.DELETE_STRICT, deletes), (Command.ADD, adds)):
            for flow in flows:
                self.sock.sendall(ofmsg.with_xid(cache.get(command, flow), self.next_xid()))
        return self.barrier()

    def push(self, cache: FlowModCache, deletes: list[Flow], adds: list[Flow], bundle_id: int) -> PushResult:
        """Push as one atomic bundle: open, adds, barrier; commit if clean, else discard."""
        bundle = ofmsg.bundle_messages(cache, deletes, adds, bundle_id=bundle_id, first_xid=self.next_xid())
        self._xid = bundle.discard_xid
        self.sock.sendall(bundle.open)
        self._expect_ctrl(bundle.open_xid, ofmsg.BundleCtrl.OPEN_REPLY)
        self.sock.sendall(b"".join((*bundle.adds, bundle.barrier)))
        errors: list[tuple[Command, Flow, Any]] = []
        while True:
            data = self.recv()
            xid = struct.unpack_from("!I", data, 4)[0]
            if data[1] == OFPT_BARRIER_REPLY and xid == bundle.barrier_xid:
                break
            if data[1] != OFPT_ERROR or xid not in bundle.flows_by_xid:
                raise OfClientError(f"unexpected message type {data[1]} xid {xid} during a push")
            command, flow = bundle.flows_by_xid[xid]
            errors.append((command, flow, ofmsg.parse(self.proto, data)))
        if errors:
            self.sock.sendall(bundle.discard)
            self._expect_ctrl(bundle.discard_xid, ofmsg.BundleCtrl.DISCARD_REPLY)
            return PushResult(False, errors, len(bundle.adds))
        self.sock.sendall(bundle.commit)
        self._expect_ctrl(bundle.commit_xid, ofmsg.BundleCtrl.COMMIT_REPLY)
        return PushResult(True, [], len(bundle.adds))

    def _expect_ctrl(self, xid: int, kind: ofmsg.BundleCtrl) -> None:
        msg = ofmsg.parse(self.proto, self.recv())
        if type(msg).__name__ != "OFPBundleCtrlMsg" or msg.xid != xid or msg.type != kind:
            raise OfClientError(f"expected bundle {kind.name} for xid {xid}, got {msg}")
