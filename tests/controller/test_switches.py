"""SwitchSession's bundle protocol against a scripted switch (the `Channel` seam): commit only after
a clean barrier, discard and name the flow on a refusal, never hang on a dead or silent switch."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from controller import ofmsg
from controller.leader import Leadership
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel
from controller.switches import PushFailed, Reply, ReplyKind, SessionLost, SwitchSession
from flows.compiler import compile_node
from flows.example import example_cluster
from flows.model import Flow

OFPT_BARRIER_REQUEST = 20


class ScriptedSwitch:
    """A Channel that answers bundle control and barriers like OVS, refusing chosen flows."""

    def __init__(self, refuse: frozenset[Flow] = frozenset(), *, silent: bool = False) -> None:
        self.proto = ofmsg.OfProto(ofmsg.OF15)
        self.refuse = refuse
        self.silent = silent
        self.session: SwitchSession | None = None
        self.controls: list[ofmsg.BundleCtrl] = []
        self.closed = False
        self.flow_mods = 0
        self._xid = 100
        self._pending_errors: list[Reply] = []
        self._cache = ofmsg.FlowModCache(self.proto)

    def close(self) -> None:
        self.closed = True

    def reserve_xids(self, count: int) -> int:
        first = self._xid + 1
        self._xid += count
        return first

    def send(self, data: bytes) -> bool:
        assert self.session is not None
        offset = 0
        while offset < len(data):
            length = struct.unpack_from("!H", data, offset + 2)[0]
            self._handle(data[offset : offset + length])
            offset += length
        return True

    def _handle(self, msg: bytes) -> None:
        assert self.session is not None
        msg_type, xid = msg[1], struct.unpack_from("!I", msg, 4)[0]
        if self.silent:
            return
        if msg_type == ofmsg.OFPT_BUNDLE_ADD_MESSAGE:
            self.flow_mods += 1
            inner = msg[16:]
            if any(self._is(inner, flow) for flow in self.refuse):
                error = ofproto_v1_5_parser.OFPErrorMsg(
                    self.proto, ofproto_v1_5.OFPET_BAD_ACTION, ofproto_v1_5.OFPBAC_BAD_OUT_PORT, b""
                )
                self.session.on_reply(Reply(xid, ReplyKind.ERROR, error))
        elif msg_type == OFPT_BARRIER_REQUEST:
            self.session.on_reply(Reply(xid, ReplyKind.BARRIER, None))
        elif msg_type == ofmsg.OFPT_BUNDLE_CONTROL:
            bundle_id, ctrl, flags = struct.unpack_from("!IHH", msg, 8)
            kind = ofmsg.BundleCtrl(ctrl)
            self.controls.append(kind)
            reply = ofproto_v1_5_parser.OFPBundleCtrlMsg(self.proto, bundle_id, ctrl + 1, flags, [])
            self.session.on_reply(Reply(xid, ReplyKind.BUNDLE, reply))

    def _is(self, inner: bytes, flow: Flow) -> bool:
        wanted = self._cache.get(ofmsg.Command.ADD, flow)
        return inner[8:] == wanted[8:]


def session_for(
    switch: ScriptedSwitch, metrics: ControllerMetrics, reply_timeout: float = 5.0
) -> SwitchSession:
    session = SwitchSession(
        1,
        switch,
        {},
        model=ClusterModel(),
        cache=ofmsg.FlowModCache(ofmsg.OfProto(ofmsg.OF15)),
        metrics=metrics,
        reply_timeout=reply_timeout,
    )
    switch.session = session
    return session


FLOWS = compile_node(example_cluster(), "node-1").sorted()


def test_a_clean_push_commits_after_the_barrier() -> None:
    switch = ScriptedSwitch()
    metrics = ControllerMetrics()
    session = session_for(switch, metrics)
    assert session.push(FLOWS[:2], FLOWS[2:]) == len(FLOWS)
    assert switch.controls == [ofmsg.BundleCtrl.OPEN_REQUEST, ofmsg.BundleCtrl.COMMIT_REQUEST]
    assert switch.flow_mods == len(FLOWS)
    assert metrics.flow_mods() == len(FLOWS)


def test_a_refused_flow_is_named_and_the_bundle_is_discarded() -> None:
    bad = FLOWS[7]
    switch = ScriptedSwitch(refuse=frozenset({bad}))
    metrics = ControllerMetrics()
    session = session_for(switch, metrics)
    with pytest.raises(PushFailed, match="1 flow-mod"):
        session.push([], FLOWS)
    assert switch.controls == [ofmsg.BundleCtrl.OPEN_REQUEST, ofmsg.BundleCtrl.DISCARD_REQUEST]
    assert metrics.openflow_errors.labels("")._value.get() == 1


def test_the_refused_flow_is_logged_readably(caplog: pytest.LogCaptureFixture) -> None:
    bad = FLOWS[3]
    session = session_for(ScriptedSwitch(refuse=frozenset({bad})), ControllerMetrics())
    with pytest.raises(PushFailed):
        session.push([], FLOWS)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert bad.render() in refusals[0] and "OFPBAC_BAD_OUT_PORT" in refusals[0]


def test_a_silent_switch_ends_the_wait_with_session_lost() -> None:
    session = session_for(ScriptedSwitch(silent=True), ControllerMetrics(), reply_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SessionLost, match="no reply"):
        session.push([], FLOWS)
    assert time.monotonic() - started < 3


def test_closing_the_session_ends_a_pending_push_at_once() -> None:
    session = session_for(ScriptedSwitch(silent=True), ControllerMetrics(), reply_timeout=30)
    threading.Timer(0.2, session.close).start()
    started = time.monotonic()
    with pytest.raises(SessionLost):
        session.push([], FLOWS)
    assert time.monotonic() - started < 3


def test_a_worker_whose_switch_stops_answering_closes_the_connection() -> None:
    switch = ScriptedSwitch(silent=True)
    session = session_for(switch, ControllerMetrics(), reply_timeout=0.3)
    session.set_leadership(Leadership(True, 1))  # the role request goes unanswered
    session.start()
    session.join(5)
    assert switch.closed
