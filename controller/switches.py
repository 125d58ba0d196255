"""Switch sessions: per connected bridge, a worker that reads back, diffs and pushes one bundle.

Transport-agnostic: a session talks through a `Channel` (os-ken's Datapath in production, see
controller/app.py) and is fed the switch's replies by whoever reads them (`on_reply`). Each
session has its own worker thread, so a slow or broken switch only ever delays itself.

A reconcile is level-triggered: it looks up which Node the switch is (by datapath id), records
the switch's ports in the model, compiles the node from the model's current snapshot, diffs
against what the switch holds and pushes the difference as one atomic bundle. What the switch
holds is read back (flow-desc) on connect and on every full resync, and otherwise remembered
from the last committed push, so a pod change costs a compile and a diff, not a read-back.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from controller import ofmsg
from controller.dirty import DirtySet
from controller.leader import Leadership
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel
from flows.diff import Plan, diff
from flows.flowset import FlowSet
from flows.model import Flow
from flows.ofctl import render_flows

log = logging.getLogger(__name__)

# Bundle-adds are handed to the socket in slices of this many messages (one send per slice).
SEND_SLICE = 1024
# Retry a failed reconcile after this long, doubling up to RETRY_MAX.
RETRY_MIN = 1.0
RETRY_MAX = 60.0


class ReplyKind(enum.Enum):
    """The switch messages a session waits for."""

    FLOWS = "flows"  # a flow-desc (1.5) or flow-stats (1.3) multipart reply
    BARRIER = "barrier"
    BUNDLE = "bundle"  # a bundle-control reply
    ROLE = "role"  # a role reply
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Reply:
    """One message from the switch, as the session needs it; `msg` is the parsed os-ken message."""

    xid: int
    kind: ReplyKind
    msg: Any
    more: bool = False


class Channel(Protocol):
    """One switch connection: sends bytes, hands out xids, knows its OpenFlow version."""

    @property
    def proto(self) -> ofmsg.DatapathLike:
        """The object os-ken builds and parses messages with (the Datapath itself)."""
        ...

    def send(self, data: bytes) -> bool:
        """Queue `data` (whole OpenFlow messages) for the switch; False if the connection is gone."""
        ...

    def reserve_xids(self, count: int) -> int:
        """Return the first of `count` consecutive xids nobody else on this connection uses."""
        ...

    def close(self) -> None:
        """Close the connection (the switch will reconnect)."""
        ...


class SessionLost(Exception):
    """The switch connection closed, or stopped answering, while the session waited for it."""


class PushFailed(Exception):
    """The switch refused the bundle; nothing of it was applied."""


def error_text(msg: Any) -> str:
    """Return an OpenFlow error message as `type/code` names (os-ken's own text when it has it)."""
    ofp = getattr(getattr(msg, "datapath", None), "ofproto", None)
    etype, code = getattr(msg, "type", None), getattr(msg, "code", None)
    if ofp is not None and etype is not None:
        try:
            text: str = ofp.ofp_error_code_to_str(etype, code)
            return f"{ofp.ofp_error_type_to_str(etype)} {text}"
        except (AttributeError, KeyError, TypeError):
            pass
    return f"type={etype} code={code}"


class SwitchSession:
    """One connected switch: its ports, its pending requests and the worker that programs it."""

    def __init__(
        self,
        datapath_id: int,
        channel: Channel,
        ports: dict[str, int],
        *,
        model: ClusterModel,
        cache: ofmsg.FlowModCache,
        metrics: ControllerMetrics,
        reply_timeout: float = 30.0,
        on_state: Callable[[], None] | None = None,
    ) -> None:
        self.datapath_id = datapath_id
        self.channel = channel
        self.node: str | None = None
        self._model = model
        self._cache = cache
        self._metrics = metrics
        self._reply_timeout = reply_timeout
        self._on_state = on_state or (lambda: None)
        self._log = logging.LoggerAdapter(log, {"datapath": f"{datapath_id:016x}"})
        self._cond = threading.Condition()
        self._ports = dict(ports)
        self._replies: dict[int, list[Reply]] = {}  # xid -> replies, for the xids awaited now
        # The flow-mod xids of the bundle being pushed (first, count) and the errors for them:
        # a range, not one awaited entry per flow-mod (a push may carry 50k of them).
        self._mod_window: tuple[int, int] | None = None
        self._mod_errors: dict[int, list[Reply]] = {}
        self._closed = False
        self._poked = True  # a new session reconciles at once
        # When the oldest reconcile request not yet satisfied was made (the reconcile lag).
        self._poked_at: float | None = time.monotonic()
        self._work_since: float | None = None
        self._full = True  # ...reading the switch back first
        self._installed: FlowSet | None = None
        self._leadership: Leadership | None = None  # None: not decided yet, do nothing
        self._claimed: Leadership | None = None  # the role the switch granted us last
        self._bundle_id = 0
        self._waiting_logged = False
        self._retry = RETRY_MIN
        self._retry_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"switch-{datapath_id:016x}", daemon=True)

    # -- fed by the transport (os-ken's event thread) --

    def start(self) -> None:
        """Start the worker; it reconciles at once."""
        self._thread.start()

    def close(self) -> None:
        """Stop the worker (the connection is gone); every wait ends with SessionLost."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the worker to end."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        """Return True once the session was closed."""
        with self._cond:
            return self._closed

    def poke(self, *, full: bool = False) -> None:
        """Ask for a reconcile; `full` also reads the switch's flows back (resync, drift repair)."""
        with self._cond:
            self._poked = True
            self._full = self._full or full
            if self._poked_at is None:
                self._poked_at = time.monotonic()
            self._cond.notify_all()

    def on_reply(self, reply: Reply) -> None:
        """Hand a reply to the request waiting for it; an unsolicited error is logged."""
        with self._cond:
            waiting = self._replies.get(reply.xid)
            if waiting is None and self._mod_window is not None:
                first, count = self._mod_window
                if (reply.xid - first) & 0xFFFFFFFF < count:
                    waiting = self._mod_errors.setdefault(reply.xid, [])
            if waiting is not None:
                waiting.append(reply)
                self._cond.notify_all()
                return
        if reply.kind is ReplyKind.ERROR:
            self._metrics.openflow_errors.labels(self.node or "").inc()
            self._log.warning(
                "switch sent an unsolicited error (xid %d): %s", reply.xid, error_text(reply.msg)
            )

    def set_leadership(self, leadership: Leadership | None) -> None:
        """Set the role to claim: master (leader) or slave, with the lease's generation."""
        with self._cond:
            changed = leadership != self._leadership
            self._leadership = leadership
        if changed:
            self.poke(full=True)

    def set_port(self, name: str, ofport: int | None) -> None:
        """Record a port added or modified (ofport), or deleted (None), and ask for a reconcile."""
        with self._cond:
            if ofport is None:
                changed = self._ports.pop(name, None) is not None
            else:
                changed = self._ports.get(name) != ofport
                self._ports[name] = ofport
        if changed:
            self.poke()

    def ports(self) -> dict[str, int]:
        """Return the switch's port name -> ofport map."""
        with self._cond:
            return dict(self._ports)

    # -- the worker --

    def _next_work(self) -> bool | None:
        """Block until poked (or a retry is due); return `full`, or None once closed."""
        with self._cond:
            while not self._closed and not self._poked:
                if self._retry_at is not None:
                    delay = self._retry_at - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                else:
                    self._cond.wait()
            if self._closed:
                return None
            full = self._full
            self._poked = self._full = False
            self._retry_at = None
            self._work_since, self._poked_at = self._poked_at, None
            return full

    def _run(self) -> None:
        while True:
            full = self._next_work()
            if full is None:
                break
            try:
                plan = self.reconcile(full=full)
                self._retry = RETRY_MIN
                since, self._work_since = self._work_since, None
                if plan is not None and self.node and since is not None:
                    self._metrics.reconcile_lag_seconds.labels(self.node).observe(time.monotonic() - since)
            except SessionLost as exc:
                if not self.closed:
                    # The switch stopped answering: drop the connection so that it reconnects
                    # and gets a fresh session (and read-back), rather than keep a dead one.
                    self._log.warning("switch %016x: %s; closing the connection", self.datapath_id, exc)
                    self.channel.close()
                break
            except (PushFailed, ofmsg.OfMsgError) as exc:
                self._fail(f"push failed: {exc}")
            except Exception:
                self._log.exception("reconcile failed")
                self._fail("unexpected error")
        self._log.debug("worker ends")

    def _fail(self, reason: str) -> None:
        self._installed = None  # read back next time: we no longer know what the switch holds
        with self._cond:
            # The request is still not satisfied: its clock keeps running.
            since, self._work_since = self._work_since, None
            if since is not None and (self._poked_at is None or since < self._poked_at):
                self._poked_at = since
            self._retry_at = time.monotonic() + self._retry
            self._full = True
        self._log.warning("node %s: %s; retrying in %.0fs", self.node, reason, self._retry)
        if self.node:
            self._metrics.reconciles.labels(self.node, "failed").inc()
        self._retry = min(self._retry * 2, RETRY_MAX)

    def reconcile(self, *, full: bool) -> Plan | None:
        """Bring the switch in line with its node's compiled flows; return the plan pushed.

        None when the switch matches no (usable) Node, or this replica is not the leader (a
        follower claims the slave role and sends nothing else). Raises SessionLost, PushFailed.
        """
        with self._cond:
            leadership = self._leadership
        if leadership is None:
            return None
        if leadership != self._claimed:
            self.claim_role(leadership)
            self._claimed = leadership
            self._installed = None  # a new master reads the switch back before changing it
        if not leadership.leader:
            return None
        node = self._model.node_for_datapath(self.datapath_id)
        if node is None:
            if not self._waiting_logged:
                self._log.info("switch %016x matches no Node: waiting, not programmed", self.datapath_id)
                self._waiting_logged = True
            if self.node is not None:
                self.node = None
                self._on_state()
            return None
        if node != self.node:
            self._log.info("switch %016x is node %s", self.datapath_id, node)
            self.node = node
            self._installed = None
            self._waiting_logged = False
            self._on_state()
        self._model.set_ports(node, self.ports())
        try:
            desired = self._model.compile(node)
        except KeyError:
            # Its Node is known but unusable (conflicting); the model has logged why.
            self._log.info("node %s is not usable now: not programmed", node)
            return None
        started = time.monotonic()
        read_back = full or self._installed is None
        if read_back or self._installed is None:
            self._installed = self.read_flows()
        plan = diff(self._installed, desired)
        self._metrics.node_flows.labels(node).set(len(desired))
        for table_name, count in collections.Counter(f.table.name for f in desired).items():
            self._metrics.table_flows.labels(node, table_name).set(count)
        for kind, flows in (("add", plan.adds), ("modify", plan.modifies), ("delete", plan.deletes)):
            if flows:
                self._metrics.plan_flows.labels(node, kind).inc(len(flows))
        if plan.empty:
            self._installed = desired
            self._metrics.reconciles.labels(node, "in_sync").inc()
            self._log.info(
                "node %s: in sync, plan %s, %d flows (%s, %.3fs)",
                node, plan.summary(), len(desired), "read back" if read_back else "cached",
                time.monotonic() - started,
            )  # fmt: skip
            return plan
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("node %s deletes:\n%s", node, render_flows(list(plan.deletes)))
            self._log.debug("node %s adds:\n%s", node, render_flows([*plan.adds, *plan.modifies]))
        installed = self._installed
        self._installed = None  # unknown until the commit is acknowledged
        push_started = time.monotonic()
        self.push(plan.deletes, (*plan.adds, *plan.modifies))
        pushed = time.monotonic() - push_started
        self._installed = desired
        # What the switch no longer holds leaves the flow-mod cache: the deleted flows and the
        # versions the modifies replaced (a pod's flows once the pod is gone, for instance).
        self._cache.forget([*plan.deletes, *(installed.by_key[f.key] for f in plan.modifies)])
        self._metrics.push_seconds.labels(node).observe(pushed)
        self._metrics.reconciles.labels(node, "pushed").inc()
        self._log.info(
            "node %s: pushed plan %s, %d flows (push %.3fs, total %.3fs)",
            node, plan.summary(), len(desired), pushed, time.monotonic() - started,
        )  # fmt: skip
        return plan

    # -- requests --

    def _expect(self, xids: Iterable[int]) -> None:
        with self._cond:
            for xid in xids:
                self._replies[xid] = []

    def _forget(self, xids: Iterable[int]) -> None:
        with self._cond:
            for xid in xids:
                self._replies.pop(xid, None)

    def _send(self, data: bytes) -> None:
        if self.closed or not self.channel.send(data):
            raise SessionLost("the connection is closed")

    def _wait_for(self, xid: int, timeout: float, done: Callable[[list[Reply]], bool]) -> list[Reply]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise SessionLost("the connection closed")
                got = self._replies.get(xid, [])
                if done(got):
                    return list(got)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionLost(f"no reply to xid {xid} within {timeout:.0f}s")
                self._cond.wait(remaining)

    def claim_role(self, leadership: Leadership) -> None:
        """Ask the switch for the master (leader) or slave role with the lease's generation id.

        Raises PushFailed if the switch refuses (a stale generation: a newer leader exists),
        SessionLost if it does not answer.
        """
        proto = self.channel.proto
        ofp, parser = proto.ofproto, proto.ofproto_parser
        role = ofp.OFPCR_ROLE_MASTER if leadership.leader else ofp.OFPCR_ROLE_SLAVE
        request = parser.OFPRoleRequest(proto, role, None, leadership.generation & 0xFFFFFFFFFFFFFFFF)
        xid = self.channel.reserve_xids(1)
        request.set_xid(xid)
        self._expect([xid])
        try:
            self._send(ofmsg.serialize(request))
            reply = self._wait_for(xid, self._reply_timeout, lambda got: bool(got))[0]
        finally:
            self._forget([xid])
        name = "master" if leadership.leader else "slave"
        if reply.kind is ReplyKind.ERROR:
            self._metrics.openflow_errors.labels(self.node or "").inc()
            raise PushFailed(f"{name} role refused: {error_text(reply.msg)}")
        self._log.info(
            "switch %016x granted the %s role (generation %d)", self.datapath_id, name, leadership.generation
        )

    def read_flows(self) -> FlowSet:
        """Return every flow the switch holds (flow-desc read-back). Raises SessionLost."""
        xid = self.channel.reserve_xids(1)
        request = ofmsg.flow_desc_request(self.channel.proto)
        request.set_xid(xid)
        self._expect([xid])
        try:
            self._send(ofmsg.serialize(request))
            replies = self._wait_for(
                xid,
                self._reply_timeout,
                lambda got: any(r.kind is ReplyKind.ERROR or not r.more for r in got),
            )
        finally:
            self._forget([xid])
        entries: list[Any] = []
        for reply in replies:
            if reply.kind is ReplyKind.ERROR:
                raise SessionLost(f"flow read-back refused: {error_text(reply.msg)}")
            entries.extend(reply.msg.body)
        return ofmsg.installed_flowset(self.channel.proto, entries)

    def push(self, deletes: Iterable[Flow], adds: Iterable[Flow]) -> int:
        """Send `deletes` (strict) then `adds` as one atomic bundle; return the flow-mods sent.

        Open, flow-mods, barrier; commit only if no flow-mod was refused (else discard), and
        wait for the commit reply. Raises PushFailed naming the refused flows (nothing applied),
        SessionLost if the switch goes away or stops answering.
        """
        deletes, adds = tuple(deletes), tuple(adds)
        count = len(deletes) + len(adds)
        first = self.channel.reserve_xids(count + 4)
        self._bundle_id = self._bundle_id % 0xFFFFFFFF + 1
        bundle = ofmsg.bundle_plan(
            self._cache.version, deletes, adds, bundle_id=self._bundle_id, first_xid=first
        )
        xids = [bundle.open_xid, bundle.barrier_xid, bundle.commit_xid, bundle.discard_xid]
        node = self.node or ""
        # Generous: OVS handles bundle-adds at well over 10k per second.
        timeout = self._reply_timeout + count / 2000
        self._expect(xids)
        with self._cond:
            self._mod_window = (bundle.first_mod_xid, count)
            self._mod_errors = {}
        try:
            self._send(bundle.open)
            # Encoding is the costly part: slice by slice, so that the switch applies one
            # slice while the next is encoded (the first one while the open reply travels).
            try:
                data = bundle.encode(self._cache, 0, SEND_SLICE)
                self._expect_ctrl(bundle.open_xid, ofmsg.BundleCtrl.OPEN_REPLY)
                for i in range(SEND_SLICE, count + SEND_SLICE, SEND_SLICE):
                    if data:
                        self._send(data)
                    data = bundle.encode(self._cache, i, i + SEND_SLICE)
            except ofmsg.OfMsgError:
                # A flow we cannot encode: nothing of the bundle may apply.
                self._send(bundle.discard)
                self._expect_ctrl(bundle.discard_xid, ofmsg.BundleCtrl.DISCARD_REPLY)
                raise
            self._metrics.count_flow_mods(node, count)
            self._send(bundle.barrier)
            self._wait_for(bundle.barrier_xid, timeout, lambda got: bool(got))
            refused: list[str] = []
            with self._cond:
                first_mod = bundle.first_mod_xid
                errors = sorted(self._mod_errors.items(), key=lambda e: (e[0] - first_mod) & 0xFFFFFFFF)
            for xid, replies in errors:
                command, flow = bundle.flows_by_xid[xid]
                for reply in replies:
                    refused.append(f"{command.value} {flow.render()}: {error_text(reply.msg)}")
            if refused:
                self._metrics.openflow_errors.labels(node).inc(len(refused))
                for line in refused:
                    self._log.error("node %s: switch refused %s", node, line)
                self._send(bundle.discard)
                self._expect_ctrl(bundle.discard_xid, ofmsg.BundleCtrl.DISCARD_REPLY)
                raise PushFailed(f"{len(refused)} flow-mod(s) refused; bundle discarded")
            self._send(bundle.commit)
            self._expect_ctrl(bundle.commit_xid, ofmsg.BundleCtrl.COMMIT_REPLY, timeout)
        finally:
            self._forget(xids)
            with self._cond:
                self._mod_window = None
                self._mod_errors = {}
        return count

    def _expect_ctrl(self, xid: int, kind: ofmsg.BundleCtrl, timeout: float | None = None) -> None:
        replies = self._wait_for(xid, timeout or self._reply_timeout, lambda got: bool(got))
        reply = replies[0]
        if reply.kind is ReplyKind.ERROR:
            self._metrics.openflow_errors.labels(self.node or "").inc()
            raise PushFailed(f"bundle {kind.name.lower()} refused: {error_text(reply.msg)}")
        if reply.kind is not ReplyKind.BUNDLE or reply.msg.type != kind:
            raise PushFailed(f"expected bundle {kind.name}, got {reply.kind.value} for xid {xid}")


class SwitchManager:
    """Every switch session, and the link from dirty nodes to the sessions that program them."""

    def __init__(
        self,
        model: ClusterModel,
        dirty: DirtySet,
        metrics: ControllerMetrics,
        *,
        cache: ofmsg.FlowModCache | None = None,
        reply_timeout: float = 30.0,
    ) -> None:
        self.model = model
        self.dirty = dirty
        self.metrics = metrics
        self.cache = cache or ofmsg.FlowModCache(ofmsg.OfProto(ofmsg.OF15))
        cached = self.cache
        metrics.flowmod_cache_entries.set_function(lambda: cached.stats().size)
        self._reply_timeout = reply_timeout
        self._lock = threading.Lock()
        self._sessions: dict[int, SwitchSession] = {}
        self._leadership: Leadership | None = None
        self._stopped = threading.Event()
        self._dispatcher = threading.Thread(target=self._dispatch, name="dirty-dispatch", daemon=True)

    def start(self) -> None:
        """Start handing dirty nodes to their sessions."""
        self._dispatcher.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close every session and stop the dispatcher (the switches keep their flows)."""
        self._stopped.set()
        self.dirty.close()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
        deadline = time.monotonic() + timeout
        for session in sessions:
            session.join(max(0.0, deadline - time.monotonic()))
        self._dispatcher.join(max(0.0, deadline - time.monotonic()))

    def connected(self, datapath_id: int, channel: Channel, ports: dict[str, int]) -> SwitchSession:
        """Start a session for a switch that finished its handshake; return it.

        A session still open for the same datapath id (the switch reconnected before its old
        connection was noticed dead) is closed first.
        """
        session = SwitchSession(
            datapath_id,
            channel,
            ports,
            model=self.model,
            cache=self.cache,
            metrics=self.metrics,
            reply_timeout=self._reply_timeout,
            on_state=self._update_gauges,
        )
        with self._lock:
            old = self._sessions.get(datapath_id)
            self._sessions[datapath_id] = session
            session.set_leadership(self._leadership)
        if old is not None:
            old.close()
        log.info("switch %016x connected with %d ports", datapath_id, len(ports))
        self._update_gauges()
        if not self._stopped.is_set():
            session.start()
        return session

    def disconnected(self, session: SwitchSession) -> None:
        """Forget a session whose connection closed."""
        session.close()
        with self._lock:
            if self._sessions.get(session.datapath_id) is session:
                del self._sessions[session.datapath_id]
        log.info("switch %016x (node %s) disconnected", session.datapath_id, session.node)
        self._update_gauges()

    def sessions(self) -> list[SwitchSession]:
        """Return the open sessions."""
        with self._lock:
            return list(self._sessions.values())

    def set_leadership(self, leadership: Leadership | None) -> None:
        """Switch every session to the master (leader) or slave role; None: claim nothing yet."""
        with self._lock:
            self._leadership = leadership
            sessions = list(self._sessions.values())
        self.metrics.leader.set(1 if leadership is not None and leadership.leader else 0)
        for session in sessions:
            session.set_leadership(leadership)

    def resync(self) -> None:
        """Ask every session for a full reconcile (read back, diff, repair drift)."""
        for session in self.sessions():
            session.poke(full=True)

    def _update_gauges(self) -> None:
        sessions = self.sessions()
        self.metrics.switches_connected.set(len(sessions))
        self.metrics.switches_waiting.set(sum(1 for s in sessions if s.node is None))

    def _dispatch(self) -> None:
        while not self._stopped.is_set():
            node = self.dirty.take(timeout=1.0)
            if node is None:
                continue
            try:
                for session in self.sessions():
                    # An unmatched switch may be this node's: its datapath-id may just have arrived.
                    if session.node in (node, None):
                        session.poke()
            finally:
                self.dirty.done(node)
