"""The agent's CNI logic: ADD, DEL, CHECK, STATUS and GC on top of OVSDB, netlink, IPAM and the API server.

`Agent.handle(request) -> Response` is what the socket server calls, from one thread per
connection. Operations on one container (and on one pod's port) are serialized by `KeyedLocks`;
different containers run in parallel. Every failure is a CNI error with a code (see
docs/cni.md, "Error codes"), never a traceback to the runtime.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.errors import CniError, ErrorCode
from cni.protocol import Command, Request, Response
from ovsagent import netns
from ovsagent.attach import AttachError, AttachmentKind, AttachSpec, DetachSpec, attachment_for
from ovsagent.config import AgentConfig, DatapathType
from ovsagent.crashpoints import CrashHook, Stage, no_crash
from ovsagent.durable import makedirs_durable, remove_durable, write_atomic
from ovsagent.flowprobe import FlowProbe, pod_cookie
from ovsagent.ipam import (
    Attachment,
    AttachmentHoldsOtherIp,
    Ipam,
    IpamError,
    IpInUse,
    Owner,
    RangeExhausted,
    StaticIpRefused,
    StoreError,
)
from ovsagent.kube import NETWORK_STATUS, POD_PORT_NAME, KubeApi, KubeError, NotFound
from ovsagent.metrics import AgentMetrics
from ovsagent.naming import PORT_NAME_RE, Key, PodIdentity, mac_for_ip, port_name
from ovsagent.node import (
    PHYS_BRIDGE,
    NodeSetupError,
    NodeState,
    ensure_bridge,
    prepare_underlay,
    resolve_pod_cidr,
    setup_node,
    uses_phys_bridge,
)
from ovsagent.ovsdb import TUNNEL_PORT, Connection, OvsdbError, PortRecord

log = logging.getLogger(__name__)

RESULT_VERSION = "1.1.0"
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Time kept back from the plugin's deadline so a failed wait still reaches the runtime as code 11.
DEADLINE_MARGIN = 0.5
# In the state dir while the pods of a lost br-int are still to be restored (see Agent._restore).
RESTORE_MARK = "restore-pending"
# How often (seconds) the resync thread looks for a lost br-int, br-phy, gateway or Geneve port:
# a lookup in the local OVSDB replica.
LOSS_CHECK_SECONDS = 1.0
# ovs-vswitchd's pidfile (in `ovs_rundir`, where it is unless started otherwise): a new PID there
# means a restart, after which the resync runs these many seconds later (a userspace vswitchd
# makes the taps of internal ports only once it has read its configuration; the second catches
# a slow start).
VSWITCHD_PIDFILE = "ovs-vswitchd.pid"
VSWITCHD_RESTART_RESYNCS = (1.0, 5.0)


class AgentCode(enum.IntEnum):
    """Sluice's own CNI error codes (100 and up are free for plugins); see docs/cni.md."""

    CHECK_FAILED = 100
    IP_RANGE_EXHAUSTED = 101
    STATIC_IP_IN_USE = 102
    ATTACH_FAILED = 103
    PORT_CONFLICT = 104
    GC_INCOMPLETE = 105


class KeyedLocks:
    """One lock per key, created on demand and dropped when unused; `hold(*keys)` takes several in a
    fixed (sorted) order, so two holders can never deadlock."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        """Hold the locks of every non-empty key in `keys` for the block."""
        wanted = sorted({k for k in keys if k})
        taken: list[str] = []
        try:
            for key in wanted:
                with self._guard:
                    lock, users = self._locks.get(key, (threading.Lock(), 0))
                    self._locks[key] = (lock, users + 1)
                lock.acquire()
                taken.append(key)
            yield
        finally:
            for key in reversed(taken):
                with self._guard:
                    lock, users = self._locks[key]
                    lock.release()
                    if users == 1:
                        del self._locks[key]
                    else:
                        self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class OperationGate:
    """CNI operations run together (`shared`); a periodic resync runs alone (`exclusive`).

    The resync reads OVSDB, the IPAM store and the Pods and deletes what belongs to nothing, which
    is only right when no ADD is half way (an address reserved, its port not created yet). A
    waiting resync holds new operations back, so a steady stream of ADDs cannot starve it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the gate with other operations for the block."""
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the gate alone for the block (waits for operations in flight)."""
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._active:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod a request names through CNI_ARGS."""

    namespace: str
    name: str
    uid: str

    @property
    def port_name(self) -> str:
        """The pod's OVS port name."""
        return port_name(self.namespace, self.name)


class Agent:
    """The node agent's state and CNI operations. Thread-safe."""

    def __init__(
        self,
        config: AgentConfig,
        ovsdb: Connection,
        kube: KubeApi,
        *,
        host_netns: str | None = None,
        setup_retry_seconds: float = 2.0,
        metrics: AgentMetrics | None = None,
        crash_hook: CrashHook = no_crash,
    ) -> None:
        """Nothing happens until `start()`; `host_netns` is where ovs-vswitchd runs (None: here);
        `crash_hook` is called at each stage of ADD and DEL (the crash-point test hook)."""
        self.config = config
        self.ovsdb = ovsdb
        self.kube = kube
        self.host_netns = host_netns
        self.setup_retry_seconds = setup_retry_seconds
        self.metrics = metrics or AgentMetrics()
        self.metrics.track_ipam(self._allocated_count, self._usable_count)
        self.probe = FlowProbe(config.ovs_rundir / f"{config.bridge}.mgmt")
        self.locks = KeyedLocks()
        self.gate = OperationGate()
        self.crash_hook = crash_hook
        self._state_lock = threading.Lock()
        self._node: NodeState | None = None
        self._ipam: Ipam | None = None
        self._not_ready = "node set-up has not run yet"
        # Set when br-int had to be created while pods may hold addresses (the bridge was deleted,
        # or OVSDB lost its database): the next reconciliation that runs restores their ports.
        # Also kept on disk (`RESTORE_MARK`), so that a restart in the middle still restores.
        self._restore_pending = False
        # Set when the resync found node set-up undone (a bridge, or one of their ports, gone).
        self._setup_pending = False
        # Whether br-phy (when used) is set up: done once, and again after the resync saw it gone.
        self._underlay_ready = False
        self._vswitchd_pid: str | None = None  # as last read from its pidfile
        self._stop = threading.Event()
        self._retry_thread: threading.Thread | None = None
        self._resync_thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Set up br-int, then the node (podCIDR, gateway, IPAM, Node annotations) and reconcile.

        When the podCIDR is not known yet (or the API server is unreachable), a background thread
        retries; STATUS answers 50 meanwhile. Raises OvsdbError/NodeSetupError when br-int itself
        cannot be set up. When br-int does not exist yet, the reconciliation also restores the
        pods that hold an address without a port (`_restore`): the bridge was lost with them.
        """
        self._restore_pending = self._restore_mark.exists()
        if self.ovsdb.bridge(self.config.bridge) is None:
            self._mark_restore()
        ensure_bridge(self.config, self.ovsdb)
        if not self.try_setup():
            self._retry_thread = threading.Thread(target=self._retry_setup, name="node-setup", daemon=True)
            self._retry_thread.start()
        self._resync_thread = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
        self._resync_thread.start()

    def close(self) -> None:
        """Stop the retry and resync threads, close the flow probe and the IPAM store."""
        self._stop.set()
        for thread in (self._retry_thread, self._resync_thread):
            if thread is not None:
                thread.join(timeout=5)
        self.probe.close()
        with self._state_lock:
            if self._ipam is not None:
                self._ipam.close()

    def _retry_setup(self) -> None:
        while not self._stop.wait(self.setup_retry_seconds):
            if self.try_setup():
                return

    def try_setup(self) -> bool:
        """Run node set-up once; return True when the agent can serve ADD afterwards.

        Also run again while serving (the resync, after br-int or its ports were lost): the IPAM
        store already open for the same podCIDR is kept, since operations in flight use it.
        """
        with self._state_lock:
            current = self._ipam
        ipam: Ipam | None = None
        try:
            # first: the API server may only be reachable through the underlay
            if not self._underlay_ready:
                prepare_underlay(self.config, self.ovsdb, host_netns=self.host_netns)
                self._underlay_ready = True
            pod_cidr = resolve_pod_cidr(self.config, self.kube)
            if pod_cidr is None:
                self._not_ready = f"Node {self.config.node_name} has no spec.podCIDR yet (and no override)"
                log.info("%s; retrying", self._not_ready)
                return False
            state = setup_node(self.config, self.ovsdb, pod_cidr, host_netns=self.host_netns)
            if current is not None and current.network == pod_cidr:
                ipam = current
            else:
                ipam = Ipam(self.config.ipam_dir, pod_cidr)
            self.kube.patch_node_annotations(self.config.node_name, state.annotations())
        except (KubeError, NodeSetupError, IpamError, OvsdbError) as exc:
            if ipam is not None and ipam is not current:
                ipam.close()
            self._not_ready = str(exc)
            log.warning("node set-up: %s; retrying", exc)
            return False
        log.info("published Node %s annotations %s", self.config.node_name, state.annotations())
        # Reconcile before ADD is served: an ADD in flight could otherwise lose its fresh address.
        # Exclusive: when set-up is retried in the background, DEL and GC are already served.
        try:
            with self.gate.exclusive():
                self._reconcile(ipam, state)
        except (OvsdbError, IpamError) as exc:
            log.error("reconcile failed (stale ports or addresses may remain until GC): %s", exc)
        with self._state_lock:
            if self._ipam is not None and self._ipam is not ipam:
                self._ipam.close()
            self._node, self._ipam = state, ipam
        self._setup_pending = False
        self.metrics.ready.set(1)
        return True

    def _allocated_count(self) -> int | None:
        # For the metrics scrape: None (unknown) until the podCIDR is known or if the store fails.
        ipam = self._ipam
        if ipam is None:
            return None
        try:
            return ipam.count()
        except IpamError as exc:
            log.debug("IPAM count for the metrics: %s", exc)
            return None

    def _usable_count(self) -> int | None:
        ipam = self._ipam
        return None if ipam is None else ipam.usable

    @property
    def node(self) -> NodeState | None:
        """The node's state once set up, else None."""
        return self._node

    @property
    def ipam(self) -> Ipam | None:
        """The IPAM store once the podCIDR is known, else None."""
        return self._ipam

    # --------------------------------------------------------------------------- reconciliation

    def _resync_loop(self) -> None:
        """Resync every `resync_seconds` (0: never), and as soon as something node set-up made
        (`_lost_setup`) is seen gone from OVSDB (looked at every `LOSS_CHECK_SECONDS`); while
        such a resync fails, again every `setup_retry_seconds`. After ovs-vswitchd restarted,
        resync `VSWITCHD_RESTART_RESYNCS` seconds later (it drops userspace internal ports that
        were moved into pods: the resync attaches those pods again)."""
        period = self.config.resync_seconds
        step = min(LOSS_CHECK_SECONDS, period) if period > 0 else LOSS_CHECK_SECONDS
        due = time.monotonic() + period if period > 0 else math.inf
        repairs: list[float] = []
        self._vswitchd_restarted()  # remember the running one
        while not self._stop.wait(step):
            now = time.monotonic()
            if self._vswitchd_restarted():
                log.info("ovs-vswitchd restarted: resyncing to repair what it dropped")
                repairs = [now + delay for delay in VSWITCHD_RESTART_RESYNCS]
            lost = self._lost_now()
            repair = bool(repairs) and now >= repairs[0]
            if repair:
                repairs.pop(0)
            if not lost and not repair and now < due:
                continue
            try:
                ok = self.resync()
            except Exception:  # the loop must outlive any one failure
                log.exception("resync failed")
                ok = False
            due = time.monotonic() + period if period > 0 else math.inf
            if lost and not ok:
                self._stop.wait(self.setup_retry_seconds)

    def _vswitchd_restarted(self) -> bool:
        """Whether ovs-vswitchd's pidfile in `ovs_rundir` names another process than when last
        read (False at the first read, and while there is no pidfile)."""
        try:
            pid = (self.config.ovs_rundir / VSWITCHD_PIDFILE).read_text().strip()
        except OSError:
            return False
        last, self._vswitchd_pid = self._vswitchd_pid, pid
        return last is not None and pid != last

    def _lost_now(self) -> bool:
        """Whether node set-up ran and something it made is gone (False when OVSDB cannot say)."""
        if self._node is None:
            return False
        try:
            return self.ovsdb.is_connected() and bool(self._lost_setup())
        except OvsdbError:
            return False

    def resync(self) -> bool:
        """Run the restart reconciliation again while serving (alone: no CNI operation is in
        flight); return False when it was skipped or failed (node not set up, no OVSDB).

        When something node set-up made is gone (`_lost_setup`), node set-up runs again first
        (`try_setup`); with br-int gone, the pods it carried are restored (`_restore`), with
        br-phy gone, the underlay address is put back.
        """
        with self._state_lock:
            node, ipam = self._node, self._ipam
        if node is None or ipam is None:
            return False
        with self.gate.exclusive():
            try:
                if not self.ovsdb.is_connected():
                    log.warning("resync skipped: no OVSDB connection to %s", self.ovsdb.target)
                    return False
                lost = self._lost_setup()
            except OvsdbError as exc:
                log.warning("resync skipped: %s", exc)
                return False
            if not lost and not self._setup_pending:
                try:
                    self._reconcile(ipam, node)
                except (OvsdbError, IpamError) as exc:
                    log.error("resync failed: %s", exc)
                    return False
                return True
            if self.config.bridge in lost:
                # Every port went with the bridge. Reconciling against the empty bridge would
                # free the address of every pod that still holds it: restore them instead.
                self._mark_restore()
            if PHYS_BRIDGE in lost or self.config.underlay_interface in lost:
                self._underlay_ready = False
            if lost:
                log.error("%s gone: setting the node up again", ", ".join(lost))
            self._setup_pending = True
        # try_setup takes the gate itself, for its reconciliation
        return self.try_setup()

    def _lost_setup(self) -> list[str]:
        """Return what node set-up made that is gone: br-phy or else the underlay interface's port
        on it (where used), and br-int or else the gateway and Geneve ports missing from it
        (empty: nothing). Raises OvsdbError."""
        lost = []
        if uses_phys_bridge(self.config):
            assert self.config.underlay_interface is not None
            if self.ovsdb.bridge(PHYS_BRIDGE) is None:
                lost.append(PHYS_BRIDGE)
            elif self.ovsdb.port(self.config.underlay_interface) is None:
                lost.append(self.config.underlay_interface)
        if self.ovsdb.bridge(self.config.bridge) is None:
            return [*lost, self.config.bridge]
        ports = (self.config.gateway_port, TUNNEL_PORT)
        return lost + [name for name in ports if self.ovsdb.port(name) is None]

    @property
    def _restore_mark(self) -> Path:
        return self.config.state_dir / RESTORE_MARK

    def _mark_restore(self) -> None:
        """Remember, durably, that the pods of a lost br-int are to be restored: before br-int is
        created again, so that an agent killed before restoring them all still restores them."""
        self._restore_pending = True
        try:
            makedirs_durable(self.config.state_dir)
            write_atomic(
                self._restore_mark, b"br-int was lost: its pods are restored at the next reconciliation\n"
            )
        except OSError as exc:  # this process still restores them; a restart would not
            log.error("cannot record the pending restore in %s: %s", self._restore_mark, exc)

    def _reconcile(self, ipam: Ipam, node: NodeState) -> None:
        """`reconcile`, restoring lost pods while a restore is pending (until one reconciliation
        actually ran: one skipped for want of the Pod list leaves it pending)."""
        if self.reconcile(ipam, node, restore=self._restore_pending) and self._restore_pending:
            try:
                remove_durable(self._restore_mark)
            except OSError as exc:
                log.error(
                    "cannot remove %s (a restart will look for lost pods again): %s", self._restore_mark, exc
                )
            self._restore_pending = False

    def reconcile(self, ipam: Ipam, node: NodeState, *, restore: bool = False) -> bool:
        """Restart reconciliation: delete the ports of pods that are gone, free IPs of nothing.

        Live pods are not touched, except an `internal` one whose device died with an
        ovs-vswitchd restart (userspace internal ports are taps owned by vswitchd), which is
        attached again. With `restore` (br-int was lost and created again), pods that hold an
        address but have no port are attached again first (`_restore`). Does nothing and returns
        False when the Pods cannot be listed (deleting on a failed list would cut every pod off).
        Runs before ADD is served.
        """
        try:
            pods = {(p.namespace, p.name): p.uid for p in self.kube.list_pods_on_node(self.config.node_name)}
        except KubeError as exc:
            log.warning("reconcile skipped: cannot list this node's Pods: %s", exc)
            return False
        live: list[Attachment] = []
        live_pods: list[PodIdentity] = []
        stale: list[PortRecord] = []
        repaired = 0
        for record in self.ovsdb.ports_by_external_ids():
            try:
                pod = PodIdentity.from_external_ids(record.external_ids)
            except ValueError as exc:
                log.info("port %s: unreadable identity (%s): stale", record.name, exc)
                stale.append(record)
                continue
            uid = pods.get((pod.namespace, pod.name))
            if uid is None or (uid and pod.uid and uid != pod.uid):
                log.info("port %s: pod %s/%s is gone: stale", record.name, pod.namespace, pod.name)
                stale.append(record)
            elif not os.path.exists(pod.netns):
                log.info(
                    "port %s: sandbox %s (netns %s) is gone: stale", record.name, pod.container_id, pod.netns
                )
                stale.append(record)
            else:
                live.append(Attachment(pod.container_id, pod.ifname))
                live_pods.append(pod)
                if record.external_ids.get(Key.KIND) == AttachmentKind.INTERNAL.value:
                    repaired += self._repair_internal(pod, node)
        for record in stale:
            with self.locks.hold(record.external_ids.get(Key.CONTAINER_ID, ""), record.name):
                try:
                    self._detach(record, record.external_ids.get(Key.NETNS) or None)
                except AttachError as exc:
                    log.error("reconcile: %s", exc)
        restored = self._restore(ipam, node, pods, set(live)) if restore else []
        live += restored
        recorded = self._record_live_addresses(ipam, live_pods)
        orphans = self._remove_orphan_veths()
        freed = ipam.reconcile(live)
        log.info(
            "reconciled: %d live pod(s) kept (%d re-attached, %d restored, %d address(es) recorded "
            "again), %d stale port(s) and %d orphan veth(s) removed, %d IP(s) freed",
            len(live),
            repaired,
            len(restored),
            recorded,
            len(stale),
            len(orphans),
            len(freed),
        )
        return True

    def _record_live_addresses(self, ipam: Ipam, pods: list[PodIdentity]) -> int:
        """Record again the address of every live pod whose IPAM record is missing; return how many.

        No crash loses a record (ADD records the address before plumbing, DEL frees it after
        unplumbing), but the store can be lost or wiped while OVSDB keeps the ports, and the next
        ADD would then hand a live pod's address out again. An address that another attachment's
        record holds is a double allocation already made: it is logged, nothing is changed. A
        record written before the sandbox's netns was recorded gets it (what `_restore` needs).
        """
        count = 0
        for pod in pods:
            owner = Owner(pod.container_id, pod.ifname, pod.namespace, pod.name, pod.uid, pod.netns)
            held = ipam.lookup(owner)
            if held is not None:
                if held.owner is not None and not held.owner.netns and held.ip == pod.ip.ip:
                    ipam.update(owner)
                continue
            try:
                ipam.allocate(owner, str(pod.ip.ip))
            except StaticIpRefused as exc:
                log.error("pod %s/%s uses %s, which the IPAM store cannot record for it: %s",
                          pod.namespace, pod.name, pod.ip.ip, exc)  # fmt: skip
                continue
            log.warning("pod %s/%s uses %s, which had no IPAM record: recorded again",
                        pod.namespace, pod.name, pod.ip.ip)  # fmt: skip
            count += 1
        return count

    def _restore(
        self, ipam: Ipam, node: NodeState, pods: dict[tuple[str, str], str], ported: set[Attachment]
    ) -> list[Attachment]:
        """Attach again the pods that lost their ports with br-int; return their attachments.

        A candidate holds an address but has no port (not in `ported`); it is restored when its
        Pod is still bound to this node (same uid) and its sandbox's namespace, recorded with the
        address, still exists. It gets its port back under the same name (`Attachment.restore`):
        with `veth`, an intact pair is kept, so the pod sees no change; otherwise (and always
        with `internal`, whose device died with its port) its interface is made again with the
        same name, address, MAC and routes. One pod at a time, so one failure costs only that
        pod, whose address is then freed like any address of nothing. Records written before the
        namespace was recorded cannot be restored.
        """
        attachment = attachment_for(self.config.interface_type.value, self.ovsdb, host_netns=self.host_netns)
        self.crash_hook(Stage.RESTORE_STARTED)
        restored = []
        for allocation in ipam.allocations():
            owner = allocation.owner
            if owner is None or owner.attachment in ported:
                continue
            uid = pods.get((owner.pod_namespace, owner.pod_name))
            who = f"pod {owner.pod_namespace}/{owner.pod_name} ({allocation.ip})"
            if uid is None or (uid and owner.pod_uid and uid != owner.pod_uid):
                continue  # its Pod is gone: the address belongs to nothing
            if not owner.netns or not os.path.exists(owner.netns):
                why = "its sandbox's namespace is gone" if owner.netns else "its record names no namespace"
                log.warning("%s lost its port and cannot be restored: %s", who, why)
                continue
            identity = PodIdentity(
                owner.pod_namespace,
                owner.pod_name,
                owner.pod_uid,
                owner.container_id,
                owner.ifname,
                _v4(allocation.interface),
                owner.netns,
            )
            with self.locks.hold(owner.container_id, identity.port_name):
                try:
                    attachment.restore(self._spec(identity, node))
                except AttachError as exc:
                    log.error("%s lost its port and restoring it failed: %s", who, exc)
                    continue
            log.warning(
                "%s lost its port with %s: restored as %s", who, self.config.bridge, identity.port_name
            )
            restored.append(owner.attachment)
            self.crash_hook(Stage.RESTORE_POD_RESTORED)
        return restored

    def _remove_orphan_veths(self) -> list[str]:
        """Delete host-side veth ends named like pod ports that are no OVS interface: what an ADD
        killed between creating the veth and adding its port, or a DEL killed between removing
        the port and the veth, leaves behind. Deleting the host end takes the pod end along."""
        try:
            links = netns.list_links(netns=self.host_netns)
        except netns.NetlinkError as exc:
            log.warning("cannot look for orphan veths: %s", exc)
            return []
        in_ovs = self.ovsdb.interface_names()
        removed = []
        for name, kind in links:
            if kind == "veth" and PORT_NAME_RE.match(name) and name not in in_ovs:
                with self.locks.hold(name):
                    try:
                        if netns.delete_link(name, netns=self.host_netns):
                            log.info("removed orphan veth %s (no OVS port)", name)
                            removed.append(name)
                    except netns.NetlinkError as exc:
                        log.error("cannot remove orphan veth %s: %s", name, exc)
        return removed

    def _repair_internal(self, pod: PodIdentity, node: NodeState) -> int:
        """Attach an internal-port pod again when its device is dead; return 1 if it was."""
        spec = self._spec(pod, node)
        attachment = attachment_for(AttachmentKind.INTERNAL, self.ovsdb, host_netns=self.host_netns)
        problems = attachment.check(spec)
        if not problems:
            return 0
        log.warning("pod %s/%s: %s: attaching it again", pod.namespace, pod.name, "; ".join(problems))
        try:
            attachment.attach(spec)
        except AttachError as exc:
            log.error("re-attaching pod %s/%s failed: %s", pod.namespace, pod.name, exc)
            return 0
        return 1

    def _spec(self, pod: PodIdentity, node: NodeState) -> AttachSpec:
        return AttachSpec(
            pod,
            self.config.bridge,
            node.gateway.ip,
            node.mtu,
            tx_checksum_off=self.config.datapath_type is DatapathType.NETDEV,
        )

    # ------------------------------------------------------------------------------- dispatch

    def handle(self, request: Request) -> Response:
        """Serve one CNI request; never raises."""
        started = time.monotonic()
        response = self._handle(request, started)
        code = 0 if response.error is None else response.error.code
        self.metrics.observe(request.command.value, code, time.monotonic() - started)
        return response

    def _handle(self, request: Request, started: float) -> Response:
        try:
            handler = {
                Command.ADD: self.add,
                Command.DEL: self.delete,
                Command.CHECK: self.check,
                Command.STATUS: self.status,
                Command.GC: self.gc,
            }[request.command]
            result = handler(request)
            # STATUS is polled by the runtime: keep it out of the INFO log
            log.log(
                logging.DEBUG if request.command is Command.STATUS else logging.INFO,
                "%s %s/%s ok in %.3fs", request.command, request.container_id, request.ifname,
                time.monotonic() - started,
            )  # fmt: skip
            return Response.success(result)
        except CniError as exc:
            log.warning("%s %s/%s failed: %s", request.command, request.container_id, request.ifname, exc)
            return Response.from_error(exc)
        except Exception as exc:
            log.exception("%s %s/%s: internal error", request.command, request.container_id, request.ifname)
            return Response.failure(ErrorCode.INTERNAL, f"sluice agent internal error: {exc}")

    # -------------------------------------------------------------------------------------- ADD

    def add(self, request: Request) -> dict[str, Any]:
        """ADD: allocate, attach, publish, wait for the pod's flows; return a 1.1.0 result."""
        deadline = time.monotonic() + max(0.0, request.timeout_seconds - DEADLINE_MARGIN)
        node, ipam = self._ready()
        pod = _pod_ref(request, required=True)
        assert pod is not None
        cid, ifname = request.container_id, request.ifname
        # the gate keeps a periodic resync out while an address exists without its port
        with self.gate.shared(), self.locks.hold(cid, pod.port_name):
            ours = self._take_over_port(pod, cid, ifname, ipam)
            owner = Owner(cid, ifname, pod.namespace, pod.name, pod.uid, request.netns)
            allocation = _allocate(ipam, owner, _requested_ip(request))
            self.crash_hook(Stage.ADD_IP_RESERVED)
            identity = PodIdentity(
                pod.namespace, pod.name, pod.uid, cid, ifname, _v4(allocation.interface), request.netns
            )
            spec = self._spec(identity, node)
            attachment = attachment_for(
                self.config.interface_type.value,
                self.ovsdb,
                host_netns=self.host_netns,
                on_stage=self.crash_hook,
            )
            if ours and not attachment.check(spec):
                log.debug("ADD %s: %s already attached, nothing to do", cid, pod.port_name)
            else:
                try:
                    attachment.attach(spec)
                except AttachError as exc:
                    try:
                        ipam.release(owner)
                    except IpamError as release_error:  # the attach error is the one to report
                        log.error("releasing %s after a failed attach: %s", owner, release_error)
                    code = (
                        ErrorCode.INVALID_NETNS
                        if not os.path.exists(request.netns)
                        else AgentCode.ATTACH_FAILED
                    )
                    raise CniError(code, str(exc)) from None
            self._publish(request, pod, identity)
            self.crash_hook(Stage.ADD_PUBLISHED)
        remaining = deadline - time.monotonic()
        wait = min(self.config.flow_wait_seconds, max(0.0, remaining))
        self.crash_hook(Stage.ADD_FLOW_WAIT)
        # Flows of an earlier incarnation of the pod (same name, hence the same cookie) may still
        # be there: only flows for this attachment's address are this pod's.
        waiting = time.monotonic()
        ready = self.probe.wait_for_flows(pod_cookie(pod.namespace, pod.name), wait, address=identity.ip.ip)
        self.metrics.flow_wait.labels("ready" if ready else "timeout").observe(time.monotonic() - waiting)
        if not ready:
            raise CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"the flows of pod {pod.namespace}/{pod.name} for {identity.ip.ip} are not on "
                f"{self.config.bridge} after {wait:.1f}s",
                "the pod is plumbed and published; the controller has not programmed it yet. A retried "
                "ADD returns as soon as it has.",
            )
        return self._result(identity, node)

    def _take_over_port(self, pod: PodRef, cid: str, ifname: str, ipam: Ipam) -> bool:
        """Refuse a port of another pod; replace one left by this pod's earlier sandbox. Return
        whether a port of this very attachment (a retried ADD) is in place."""
        record = self.ovsdb.port(pod.port_name)
        if record is None:
            return False
        ids = record.external_ids
        if (ids.get(Key.NAMESPACE), ids.get(Key.NAME)) != (pod.namespace, pod.name):
            raise CniError(
                AgentCode.PORT_CONFLICT,
                f"OVS port {pod.port_name} belongs to pod {ids.get(Key.NAMESPACE)}/{ids.get(Key.NAME)}, "
                f"not {pod.namespace}/{pod.name} (port-name hash collision)",
            )
        old = (ids.get(Key.CONTAINER_ID, ""), ids.get(Key.IFNAME, ""))
        if old == (cid, ifname):
            return True
        log.warning(
            "pod %s/%s: replacing the attachment of earlier sandbox %s/%s (never deleted) by %s/%s",
            pod.namespace, pod.name, old[0], old[1], cid, ifname,
        )  # fmt: skip
        try:
            self._detach(record, ids.get(Key.NETNS) or None)
        except AttachError as exc:
            raise CniError(AgentCode.ATTACH_FAILED, str(exc)) from None
        if old[0] and old[1]:
            ipam.release(Attachment(*old))
        return False

    def _publish(self, request: Request, pod: PodRef, identity: PodIdentity) -> None:
        status = [
            {
                "name": request.network_name,
                "interface": identity.ifname,
                "ips": [str(identity.ip.ip)],
                "mac": identity.mac,
                "default": True,
            }
        ]
        annotations = {POD_PORT_NAME: pod.port_name, NETWORK_STATUS: json.dumps(status)}
        try:
            self.kube.patch_pod_annotations(pod.namespace, pod.name, annotations)
        except NotFound:
            raise CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"Pod {pod.namespace}/{pod.name} does not exist in the API server: "
                "cannot publish its network status",
            ) from None
        except KubeError as exc:
            raise CniError(ErrorCode.TRY_AGAIN_LATER, f"cannot publish the network status: {exc}") from None

    def _result(self, identity: PodIdentity, node: NodeState) -> dict[str, Any]:
        host: dict[str, Any] = {"name": identity.port_name}
        if self.config.interface_type.value == AttachmentKind.VETH.value:
            mac = netns.link_mac(identity.port_name, netns=self.host_netns)
            if mac:
                host["mac"] = mac
        return {
            "cniVersion": RESULT_VERSION,
            "interfaces": [
                host,
                {"name": identity.ifname, "mac": identity.mac, "sandbox": identity.netns, "mtu": node.mtu},
            ],
            "ips": [{"address": str(identity.ip), "gateway": str(node.gateway.ip), "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": str(node.gateway.ip)}],
            "dns": {},
        }

    # -------------------------------------------------------------------------------------- DEL

    def delete(self, request: Request) -> None:
        """DEL: release port, pod interface, IP and annotations; whatever is already gone is fine.

        A port recorded for another container of the same pod is left alone (a stale DEL must not
        cut off the pod's live sandbox).
        """
        cid, ifname = request.container_id, request.ifname
        pod = _pod_ref(request, required=False)
        target_netns = request.netns or None
        with self.gate.shared(), self.locks.hold(cid, pod.port_name if pod else ""):
            record = self.ovsdb.port(pod.port_name) if pod else self._find_port(cid, ifname)
            ours = record is not None and (
                record.external_ids.get(Key.CONTAINER_ID),
                record.external_ids.get(Key.IFNAME),
            ) == (cid, ifname)
            if record is not None and ours:
                try:
                    self._detach(record, target_netns, on_stage=self.crash_hook)
                except AttachError as exc:
                    raise CniError(ErrorCode.TRY_AGAIN_LATER, str(exc)) from None
                if pod is None:
                    ids = record.external_ids
                    pod = PodRef(ids.get(Key.NAMESPACE, ""), ids.get(Key.NAME, ""), ids.get(Key.UID, ""))
            elif record is not None:
                log.info(
                    "DEL %s/%s: port %s belongs to container %s: left alone",
                    cid, ifname, record.name, record.external_ids.get(Key.CONTAINER_ID),
                )  # fmt: skip
            elif target_netns is not None:
                with contextlib.suppress(netns.NetlinkError):  # a half-done ADD's pod interface
                    netns.delete_link(ifname, netns=target_netns)
            ipam = self._ipam
            if ipam is not None:
                try:
                    ipam.release(Attachment(cid, ifname))
                except IpamError as exc:
                    raise CniError(ErrorCode.IO_FAILURE, str(exc)) from None
                self.crash_hook(Stage.DEL_IP_RELEASED)
            if pod is not None and pod.namespace and pod.name and (record is None or ours):
                self._unpublish(pod)
            self.crash_hook(Stage.DEL_UNPUBLISHED)

    def _unpublish(self, pod: PodRef) -> None:
        try:
            self.kube.patch_pod_annotations(
                pod.namespace, pod.name, {POD_PORT_NAME: None, NETWORK_STATUS: None}
            )
        except NotFound:
            pass
        except KubeError as exc:
            raise CniError(ErrorCode.TRY_AGAIN_LATER, f"cannot remove the network status: {exc}") from None

    def _find_port(self, cid: str, ifname: str) -> PortRecord | None:
        for record in self.ovsdb.ports_by_external_ids():
            ids = record.external_ids
            if ids.get(Key.CONTAINER_ID) == cid and ids.get(Key.IFNAME) == ifname:
                return record
        return None

    def _detach(self, record: PortRecord, pod_netns: str | None, on_stage: CrashHook = no_crash) -> None:
        kind = record.external_ids.get(Key.KIND, self.config.interface_type.value)
        if kind not in (k.value for k in AttachmentKind):
            kind = self.config.interface_type.value
        attachment = attachment_for(kind, self.ovsdb, host_netns=self.host_netns, on_stage=on_stage)
        ifname = record.external_ids.get(Key.IFNAME, "eth0")
        attachment.detach(DetachSpec(record.name, ifname, pod_netns))

    # ------------------------------------------------------------------------------------ CHECK

    def check(self, request: Request) -> None:
        """CHECK: compare prevResult with the interface, address, route, OVS port and IPAM record."""
        node, ipam = self._ready()
        cid, ifname = request.container_id, request.ifname
        pod = _pod_ref(request, required=False)
        with self.locks.hold(cid, pod.port_name if pod else ""):
            problems: list[str] = []
            allocation = ipam.lookup(Attachment(cid, ifname))
            record = self.ovsdb.port(pod.port_name) if pod else self._find_port(cid, ifname)
            if allocation is None and record is None:
                raise CniError(ErrorCode.UNKNOWN_CONTAINER, f"no attachment {cid}/{ifname} on this node")
            if allocation is None:
                problems.append(f"no IPAM record for {cid}/{ifname}")
            prev = request.prev_result or {}
            problems += _check_prev_result(
                prev, ifname, request.netns, _v4(allocation.interface) if allocation else None
            )
            if record is None:
                name = pod.port_name if pod else f"for {cid}/{ifname}"
                problems.append(f"OVS port {name} is missing")
            elif record.external_ids.get(Key.CONTAINER_ID) != cid:
                problems.append(
                    f"OVS port {record.name} belongs to container {record.external_ids.get(Key.CONTAINER_ID)}"
                )
            elif allocation is not None:
                identity = PodIdentity(
                    record.external_ids.get(Key.NAMESPACE, ""),
                    record.external_ids.get(Key.NAME, ""),
                    record.external_ids.get(Key.UID, ""),
                    cid,
                    ifname,
                    _v4(allocation.interface),
                    request.netns,
                )
                kind = record.external_ids.get(Key.KIND, self.config.interface_type.value)
                attachment = attachment_for(kind, self.ovsdb, host_netns=self.host_netns)
                problems += attachment.check(self._spec(identity, node))
            if problems:
                raise CniError(AgentCode.CHECK_FAILED, "CHECK failed: " + "; ".join(problems))

    # ----------------------------------------------------------------------------------- STATUS

    def status(self, request: Request) -> None:
        """STATUS: 0 when ADD can be served, 50 when it cannot, 51 when pods may be cut off."""
        try:
            connected = self.ovsdb.is_connected()
            lost = self._lost_setup() if connected else []
        except OvsdbError as exc:
            raise CniError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"no OVSDB connection: {exc}") from None
        if not connected:
            raise CniError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"no OVSDB connection to {self.ovsdb.target}")
        if self.config.bridge in lost:
            raise CniError(
                ErrorCode.LIMITED_CONNECTIVITY,
                f"bridge {self.config.bridge} is gone: existing pods may be cut off",
            )
        if self._node is None or self._ipam is None:
            raise CniError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"cannot serve ADD: {self._not_ready}")
        # Everything below exists once node set-up ran, so a missing one was deleted under us.
        if PHYS_BRIDGE in lost:
            raise CniError(
                ErrorCode.LIMITED_CONNECTIVITY,
                f"bridge {PHYS_BRIDGE} is gone, and the node's underlay address with it: "
                "existing pods may be cut off from other nodes",
            )
        # Without its gateway port no pod reaches the node; without the Geneve port (or the
        # underlay interface's port on br-phy) no pod reaches another node.
        if lost:
            raise CniError(
                ErrorCode.LIMITED_CONNECTIVITY,
                f"OVS port(s) {', '.join(lost)} gone: existing pods may be cut off",
            )

    # --------------------------------------------------------------------------------------- GC

    def gc(self, request: Request) -> None:
        """GC: remove ports, IPs and records of every attachment not in cni.dev/valid-attachments."""
        valid = request.valid_attachments
        if valid is None:
            log.warning(
                "GC without cni.dev/valid-attachments: nothing collected (it would delete everything)"
            )
            return
        with self.gate.shared():
            self._gc({Attachment(a.container_id, a.ifname) for a in valid})

    def _gc(self, keep: set[Attachment]) -> None:
        errors: list[str] = []
        removed: list[str] = []
        try:
            records = self.ovsdb.ports_by_external_ids()
        except OvsdbError as exc:
            records = []
            errors.append(f"cannot list OVS ports: {exc}")
        for record in records:
            ids = record.external_ids
            key = Attachment(ids.get(Key.CONTAINER_ID, ""), ids.get(Key.IFNAME, ""))
            if key in keep:
                continue
            with self.locks.hold(key.container_id, record.name):
                try:
                    self._detach(record, ids.get(Key.NETNS) or None)
                    removed.append(record.name)
                except AttachError as exc:
                    errors.append(str(exc))
                    continue
                if ids.get(Key.NAMESPACE) and ids.get(Key.NAME):
                    pod = PodRef(ids[Key.NAMESPACE], ids[Key.NAME], ids.get(Key.UID, ""))
                    try:
                        self._unpublish(pod)
                    except CniError as exc:
                        errors.append(exc.msg)
        freed = []
        ipam = self._ipam
        if ipam is not None:
            try:
                freed = ipam.reconcile(keep)
            except IpamError as exc:
                errors.append(f"IPAM: {exc}")
        log.info("GC: removed ports %s, freed %s", removed, [str(a.ip) for a in freed])
        if errors:
            raise CniError(
                AgentCode.GC_INCOMPLETE, f"GC finished with {len(errors)} error(s)", "; ".join(errors)
            )

    # ---------------------------------------------------------------------------------- helpers

    def _ready(self) -> tuple[NodeState, Ipam]:
        with self._state_lock:
            node, ipam = self._node, self._ipam
        if node is None or ipam is None:
            raise CniError(ErrorCode.TRY_AGAIN_LATER, f"the agent cannot serve ADD yet: {self._not_ready}")
        return node, ipam


def _v4(interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> ipaddress.IPv4Interface:
    if not isinstance(interface, ipaddress.IPv4Interface):
        raise CniError(ErrorCode.INTERNAL, f"IPAM returned {interface}: only IPv4 is supported")
    return interface


def _pod_ref(request: Request, *, required: bool) -> PodRef | None:
    args = request.args
    namespace = args.pod_namespace
    if not namespace and args.pod_name:
        # Runtimes that are not the kubelet (podman) pass only K8S_POD_NAME: the network config
        # may name the namespace their pods live in (docs/cni.md, `podNamespace`).
        fallback = request.config.get("podNamespace")
        if fallback is not None and not (isinstance(fallback, str) and _NAMESPACE_RE.match(fallback)):
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"podNamespace must be a Kubernetes namespace name (a DNS-1123 label), not {fallback!r}",
            )
        namespace = fallback
    if namespace and args.pod_name:
        return PodRef(namespace, args.pod_name, args.pod_uid or "")
    if required:
        missing = [n for n, v in (("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", args.pod_name)) if not v]
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            f"CNI_ARGS lacks {' and '.join(missing)}: "
            "Sluice attaches Kubernetes pods and needs to know which",
        )
    return None


def _requested_ip(request: Request) -> str | None:
    ips = request.runtime_config.get("ips")
    if isinstance(ips, list) and ips:
        for item in ips:
            if isinstance(item, str) and ":" not in item:
                return item
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"runtimeConfig.ips {ips!r} holds no IPv4 address")
    if ips not in (None, []):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "runtimeConfig.ips must be a list of addresses")
    return request.args.ip


def _allocate(ipam: Ipam, owner: Owner, requested: str | None) -> Any:
    try:
        return ipam.allocate(owner, requested)
    except RangeExhausted as exc:
        raise CniError(AgentCode.IP_RANGE_EXHAUSTED, str(exc)) from None
    except (IpInUse, AttachmentHoldsOtherIp) as exc:
        raise CniError(AgentCode.STATIC_IP_IN_USE, str(exc)) from None
    except StaticIpRefused as exc:  # out of range, reserved, prefix mismatch
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, str(exc)) from None
    except StoreError as exc:
        raise CniError(ErrorCode.IO_FAILURE, str(exc)) from None
    except IpamError as exc:  # InvalidIp, InvalidOwner
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, str(exc)) from None


def _check_prev_result(
    prev: Mapping[str, Any], ifname: str, sandbox: str, address: ipaddress.IPv4Interface | None
) -> list[str]:
    """Compare prevResult's pod interface, address and default route with what the agent recorded."""
    problems: list[str] = []
    interfaces = prev.get("interfaces") or []
    pod_index = next(
        (i for i, itf in enumerate(interfaces) if isinstance(itf, dict) and itf.get("sandbox")), None
    )
    if pod_index is None:
        problems.append("prevResult lists no pod interface (one with a sandbox)")
    else:
        itf = interfaces[pod_index]
        if itf.get("name") != ifname:
            problems.append(f"prevResult interface {itf.get('name')!r} is not {ifname!r}")
        if sandbox and itf.get("sandbox") != sandbox:
            problems.append(f"prevResult sandbox {itf.get('sandbox')!r} is not {sandbox!r}")
        if address is not None and itf.get("mac") and itf["mac"].lower() != mac_for_ip(address.ip):
            problems.append(f"prevResult MAC {itf['mac']} is not {mac_for_ip(address.ip)}")
    ips = [ip for ip in prev.get("ips") or [] if isinstance(ip, dict)]
    if not ips:
        problems.append("prevResult has no IP address")
    elif address is not None and ips[0].get("address") != str(address):
        problems.append(f"prevResult address {ips[0].get('address')} differs from the recorded {address}")
    gateway = str(address.network.network_address + 1) if address is not None else None
    routes = [r for r in prev.get("routes") or [] if isinstance(r, dict) and r.get("dst") == "0.0.0.0/0"]
    if gateway is not None and routes and routes[0].get("gw") != gateway:
        problems.append(f"prevResult default route via {routes[0].get('gw')}, expected {gateway}")
    return problems
