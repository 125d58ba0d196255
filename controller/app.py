"""The os-ken shim: OpenFlow events in, calls into controller.switches out; nothing else.

os-ken 4.x runs on native threads (no eventlet, no monkey-patching). `OpenFlowService` embeds
os-ken's AppManager: it sets the listen options os-ken reads from oslo.config, loads this app
(which pulls in os-ken's own handshake/echo handler, `os_ken.controller.ofp_handler`) and
starts them. os-ken answers hello, features, port-desc and echo itself; once a switch reaches
MAIN state, this app opens a `SwitchSession` for it and feeds it the replies it waits for.
Every handler here returns at once: os-ken delivers all switches' events through one thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from os_ken import cfg as osken_cfg
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_5

from controller.config import ControllerConfig
from controller.model import MAX_OFPORT
from controller.switches import Reply, ReplyKind, SwitchManager, SwitchSession

log = logging.getLogger(__name__)

OFPMPF_REPLY_MORE = 1
# os-ken's own echo requests. Besides finding silent switches (ECHO_MAX_UNREPLIED unanswered:
# the connection is closed), they are what ends a dead connection under the native hub: when a
# switch goes away, os-ken's receive loop ends but its connection thread then waits for the send
# thread, which sleeps on an empty queue until something is sent; the next echo wakes it, and
# only then does os-ken report the switch DEAD.
ECHO_INTERVAL = 2.0
ECHO_MAX_UNREPLIED = 5


class DatapathChannel:
    """A `switches.Channel` over an os-ken Datapath."""

    def __init__(self, datapath: Any) -> None:
        self._dp = datapath
        self._lock = threading.Lock()

    @property
    def proto(self) -> Any:
        """Return the Datapath (it carries ofproto and ofproto_parser)."""
        return self._dp

    def send(self, data: bytes) -> bool:
        """Queue bytes on the Datapath's send queue; False once the connection is going away."""
        return bool(self._dp.is_active and self._dp.send(data))

    def close(self) -> None:
        """Close the connection: os-ken reports the switch DEAD and the switch reconnects."""
        self._dp.close()

    def reserve_xids(self, count: int) -> int:
        """Advance the Datapath's own xid counter by `count`; return the first reserved xid."""
        with self._lock:
            mask = self._dp.ofproto.MAX_XID
            first = (self._dp.xid + 1) & mask
            self._dp.xid = (self._dp.xid + count) & mask
            return int(first)


def _port_name(port: Any) -> str:
    name = port.name
    if isinstance(name, bytes):
        name = name.rstrip(b"\0").decode("utf-8", "replace")
    return str(name)


class SluiceApp(app_manager.OSKenApp):  # type: ignore[misc]
    """Turns os-ken's OpenFlow events into SwitchManager / SwitchSession calls."""

    OFP_VERSIONS = [ofproto_v1_5.OFP_VERSION]  # bundles and flow-desc need OpenFlow 1.4+/1.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._switches: SwitchManager = kwargs.pop("sluice_switches")
        super().__init__(*args, **kwargs)
        self._sessions: dict[Any, SwitchSession] = {}  # by Datapath; touched by os-ken's event thread only

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])  # type: ignore[untyped-decorator]
    def state_change(self, ev: Any) -> None:
        """MAIN: the handshake and port-desc are done, start a session. DEAD: end it."""
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            if dp.id is None or dp in self._sessions:
                return
            ports = {
                _port_name(p): int(p.port_no)
                for p in (dp.ports or {}).values()
                if 1 <= p.port_no <= MAX_OFPORT
            }
            self._sessions[dp] = self._switches.connected(int(dp.id), DatapathChannel(dp), ports)
        elif ev.state == DEAD_DISPATCHER:
            session = self._sessions.pop(dp, None)
            if session is not None:
                self._switches.disconnected(session)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def port_status(self, ev: Any) -> None:
        """A port was added, modified or deleted: tell the session (it learns ofports by name)."""
        msg = ev.msg
        session = self._sessions.get(msg.datapath)
        if session is None or not 1 <= msg.desc.port_no <= MAX_OFPORT:
            return
        ofp = msg.datapath.ofproto
        if msg.reason == ofp.OFPPR_DELETE:
            session.set_port(_port_name(msg.desc), None)
        elif msg.reason in (ofp.OFPPR_ADD, ofp.OFPPR_MODIFY):
            session.set_port(_port_name(msg.desc), int(msg.desc.port_no))

    def _reply(self, msg: Any, kind: ReplyKind, more: bool = False) -> None:
        session = self._sessions.get(msg.datapath)
        if session is not None:
            session.on_reply(Reply(int(msg.xid), kind, msg, more))

    @set_ev_cls(ofp_event.EventOFPFlowDescStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def flow_desc_reply(self, ev: Any) -> None:
        """A part of a flow read-back."""
        self._reply(ev.msg, ReplyKind.FLOWS, bool(ev.msg.flags & OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def barrier_reply(self, ev: Any) -> None:
        """A barrier reply (the end of a bundle's flow-mods)."""
        self._reply(ev.msg, ReplyKind.BARRIER)

    @set_ev_cls(ofp_event.EventOFPBundleCtrlMsg, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def bundle_reply(self, ev: Any) -> None:
        """A bundle open/commit/discard reply."""
        self._reply(ev.msg, ReplyKind.BUNDLE)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def role_reply(self, ev: Any) -> None:
        """The switch granted the role asked for."""
        self._reply(ev.msg, ReplyKind.ROLE)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def error(self, ev: Any) -> None:
        """An OpenFlow error: the session correlates it to the request (and flow) by xid."""
        self._reply(ev.msg, ReplyKind.ERROR)


class OpenFlowService:
    """os-ken embedded: the OpenFlow listener and SluiceApp, started and stopped in-process."""

    def __init__(self, config: ControllerConfig, switches: SwitchManager) -> None:
        self._config = config
        self._switches = switches
        self._manager: Any = None

    def start(self) -> None:
        """Set os-ken's listen options and start its apps; switches may connect from now on.

        os-ken reads its options from oslo.config's global CONF, once, when its OpenFlow
        server starts; they are set here before that (and only here).
        """
        conf = osken_cfg.CONF
        conf(args=[], project="os_ken", default_config_files=[])
        conf.set_override("echo_request_interval", ECHO_INTERVAL)
        conf.set_override("maximum_unreplied_echo_requests", ECHO_MAX_UNREPLIED)
        conf.set_override("ofp_listen_host", self._config.openflow_address)
        if self._config.tls:
            conf.set_override("ofp_ssl_listen_port", self._config.openflow_port)
            conf.set_override("ofp_tcp_listen_port", None)
            conf.set_override("ctl_privkey", self._config.tls_key)
            conf.set_override("ctl_cert", self._config.tls_cert)
            conf.set_override("ca_certs", self._config.tls_ca)
        else:
            conf.set_override("ofp_tcp_listen_port", self._config.openflow_port)
            conf.set_override("ofp_ssl_listen_port", None)
        manager = app_manager.AppManager.get_instance()
        manager.load_apps([__name__])
        contexts = manager.create_contexts()
        manager.instantiate_apps(sluice_switches=self._switches, **contexts)
        self._manager = manager
        log.info(
            "OpenFlow listening on %s:%d (%s)",
            self._config.openflow_address, self._config.openflow_port, "TLS" if self._config.tls else "TCP",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop os-ken's event loops. Its listener and switch threads end with the process."""
        if self._manager is not None:
            try:
                self._manager.close()
            except Exception:  # never let os-ken's teardown turn a clean exit into a traceback
                log.exception("os-ken teardown failed")
            self._manager = None
