"""Pod attachment: the pod's interface plus its OVS port, as a veth pair or as an OVS internal port.

Both kinds implement one `Attachment` protocol and are built from the two adapters: `ovsdb` (the
port, its ofport, the pod's identity in `external_ids`) and `netns` (the interface in the pod).

* `veth` (the default with the userspace datapath): a veth pair, the host end (named after the
  pod, `naming.port_name`) added to the bridge as a plain interface. It survives an
  ovs-vswitchd restart, which matters because userspace "internal" ports are tap devices owned by
  vswitchd: they vanish with it, pod and all.
* `internal` (the default with the kernel datapath): OVS creates an internal port, which is moved
  into the pod and renamed; no veth, one device less per packet.

Batching. `attach_many`/`detach_many` put every port of the batch in one OVSDB transaction, so
the ~30 ms wait for ovs-vswitchd to apply a configuration is paid once per batch. A batch is all
or nothing: when one pod fails, everything the batch created is removed again and the error is
raised, naming the pod.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ovsagent import netns
from ovsagent.crashpoints import CrashHook, Stage, no_crash
from ovsagent.naming import Key, PodIdentity
from ovsagent.ovsdb import OvsdbError, PortRecord, PortSpec

log = logging.getLogger(__name__)


class AttachmentKind(enum.StrEnum):
    """How a pod is joined to the bridge."""

    VETH = "veth"
    INTERNAL = "internal"


class AttachError(Exception):
    """Attaching or detaching a pod failed; the message names the pod and the step."""


class PortStore(Protocol):
    """The OVSDB operations an attachment needs (implemented by `ovsagent.ovsdb.Connection`)."""

    def add_pod_ports(
        self, bridge: str, specs: Sequence[PortSpec], *, timeout: float | None = None
    ) -> dict[str, int]: ...

    def del_ports(self, names: Sequence[str], *, timeout: float | None = None) -> list[str]: ...

    def port(self, name: str) -> PortRecord | None: ...


@dataclass(frozen=True, slots=True)
class AttachSpec:
    """Everything needed to attach one pod: who it is (and its netns, ifname, IP) and how."""

    pod: PodIdentity
    bridge: str
    gateway: ipaddress.IPv4Address | None
    mtu: int
    tx_checksum_off: bool = True
    ofport_request: int | None = None

    @property
    def port_name(self) -> str:
        """The pod's OVS port (and host-side veth) name."""
        return self.pod.port_name

    @property
    def mac(self) -> str:
        """The pod interface's MAC (derived from its IP)."""
        return self.pod.mac

    def interface_config(self) -> netns.InterfaceConfig:
        """The pod-side interface settings. Raises ValueError for inconsistent ones."""
        return netns.InterfaceConfig(
            ifname=self.pod.ifname,
            mac=self.mac,
            mtu=self.mtu,
            address=self.pod.ip,
            gateway=self.gateway,
            tx_checksum_off=self.tx_checksum_off,
        )

    def target(self) -> DetachSpec:
        """What `detach` needs to undo this attachment."""
        return DetachSpec(self.port_name, self.pod.ifname, self.pod.netns or None)


@dataclass(frozen=True, slots=True)
class DetachSpec:
    """What to remove: the OVS port, and the pod's interface if its namespace is known (DEL may
    come with an empty CNI_NETNS)."""

    port_name: str
    ifname: str
    netns: str | None


@dataclass(frozen=True, slots=True)
class AttachResult:
    """An attached pod: its port, ofport and interface as plumbed."""

    kind: AttachmentKind
    port_name: str
    ofport: int
    ifname: str
    mac: str
    ip: ipaddress.IPv4Interface
    mtu: int
    gateway: ipaddress.IPv4Address | None
    netns: str


class Attachment(Protocol):
    """One way of joining pods to the bridge (see module docstring)."""

    kind: AttachmentKind

    def attach(self, spec: AttachSpec) -> AttachResult:
        """Plumb one pod (idempotent for a retried ADD); raises AttachError."""
        ...

    def attach_many(self, specs: Sequence[AttachSpec]) -> list[AttachResult]:
        """Plumb several pods with one OVSDB transaction; all or nothing. Raises AttachError."""
        ...

    def detach(self, target: DetachSpec) -> None:
        """Remove a pod's port and interface; anything already gone is fine. Raises AttachError."""
        ...

    def detach_many(self, targets: Sequence[DetachSpec]) -> None:
        """`detach` for several pods with one OVSDB transaction. Raises AttachError."""
        ...

    def check(self, spec: AttachSpec) -> list[str]:
        """Return what differs from `spec` (empty when the attachment is intact)."""
        ...

    def restore(self, spec: AttachSpec) -> AttachResult:
        """Give back its OVS port to a pod whose port was lost with its bridge, keeping its
        interface when that is still intact (`veth`); else plumb it anew. Raises AttachError."""
        ...


class _Base:
    """What both kinds share: detach and the checks."""

    kind: AttachmentKind

    def __init__(
        self,
        ovsdb: PortStore,
        *,
        host_netns: str | None = None,
        timeout: float = 10.0,
        on_stage: CrashHook = no_crash,
    ) -> None:
        """`host_netns` is the namespace where ovs-vswitchd runs (None: this process's); `on_stage`
        is called after each step (the crash-point test hook, `ovsagent.crashpoints`)."""
        self.ovsdb = ovsdb
        self.host_netns = host_netns
        self.timeout = timeout
        self.on_stage = on_stage

    def attach(self, spec: AttachSpec) -> AttachResult:
        """Plumb one pod; see Attachment.attach."""
        return self.attach_many([spec])[0]

    def attach_many(self, specs: Sequence[AttachSpec]) -> list[AttachResult]:
        """Plumb several pods; see Attachment.attach_many."""
        raise NotImplementedError

    def detach(self, target: DetachSpec) -> None:
        """Remove one pod's port and interface; see Attachment.detach."""
        self.detach_many([target])

    def detach_many(self, targets: Sequence[DetachSpec]) -> None:
        """Remove the ports (one transaction), then the host ends and the pod interfaces."""
        if not targets:
            return
        try:
            self.ovsdb.del_ports([t.port_name for t in targets], timeout=self.timeout)
        except OvsdbError as exc:
            raise AttachError(f"cannot delete OVS ports {[t.port_name for t in targets]}: {exc}") from None
        self.on_stage(Stage.DEL_PORT_REMOVED)
        errors = []
        for t in targets:
            try:
                # A veth host end takes the pod end with it; for an internal port vswitchd has
                # already removed the device. Whatever is left over (a failed half ADD) goes too.
                netns.delete_link(t.port_name, netns=self.host_netns)
                if t.netns:
                    netns.delete_link(t.ifname, netns=t.netns)
            except netns.NetlinkError as exc:
                errors.append(f"{t.port_name}: {exc}")
        if errors:
            raise AttachError("cannot remove pod interfaces: " + "; ".join(errors))
        self.on_stage(Stage.DEL_INTERFACE_REMOVED)
        log.debug("detached %s", [t.port_name for t in targets])

    def check(self, spec: AttachSpec) -> list[str]:
        """Compare OVSDB and the pod's namespace with `spec`; return the differences."""
        problems = []
        record = self.ovsdb.port(spec.port_name)
        if record is None:
            problems.append(f"OVS port {spec.port_name} is missing")
        else:
            problems += _check_port(spec, record, self.kind)
        state = netns.read_interface(spec.pod.netns, spec.pod.ifname)
        if state is None:
            problems.append(f"interface {spec.pod.ifname} is missing in {spec.pod.netns}")
        else:
            problems += _check_interface(spec, state)
        return problems

    def restore(self, spec: AttachSpec) -> AttachResult:
        """Plumb the pod anew (see Attachment.restore)."""
        return self.attach(spec)

    def _port_spec(self, spec: AttachSpec) -> PortSpec:
        ids = {**spec.pod.external_ids(), Key.KIND.value: self.kind.value}
        return PortSpec(
            name=spec.port_name,
            type="internal" if self.kind is AttachmentKind.INTERNAL else "",
            ofport_request=spec.ofport_request,
            mac=spec.mac if self.kind is AttachmentKind.INTERNAL else None,
            external_ids=ids,
        )

    def _results(self, specs: Sequence[AttachSpec], ofports: dict[str, int]) -> list[AttachResult]:
        return [
            AttachResult(
                kind=self.kind,
                port_name=s.port_name,
                ofport=ofports[s.port_name],
                ifname=s.pod.ifname,
                mac=s.mac,
                ip=s.pod.ip,
                mtu=s.mtu,
                gateway=s.gateway,
                netns=s.pod.netns,
            )
            for s in specs
        ]

    def _undo(self, specs: Sequence[AttachSpec]) -> None:
        try:
            self.detach_many([s.target() for s in specs])
        except AttachError as exc:
            log.error("cleaning up after a failed attach: %s", exc)


def _validate(specs: Sequence[AttachSpec]) -> None:
    names = [s.port_name for s in specs]
    if len({s.bridge for s in specs}) > 1:
        raise AttachError(f"a batch must use one bridge, not {sorted({s.bridge for s in specs})}")
    if len(set(names)) != len(names):
        raise AttachError(f"a batch names one pod twice: {names}")
    for s in specs:
        if not s.pod.netns:
            raise AttachError(f"pod {s.pod.namespace}/{s.pod.name}: no network namespace to attach")
        try:
            s.interface_config()
        except ValueError as exc:
            raise AttachError(f"pod {s.pod.namespace}/{s.pod.name}: {exc}") from None


class VethAttachment(_Base):
    """Pods joined by a veth pair; the host end is the OVS port."""

    kind = AttachmentKind.VETH

    def attach_many(self, specs: Sequence[AttachSpec]) -> list[AttachResult]:
        """Create each veth (pod end configured), then add all host ends in one transaction."""
        _validate(specs)
        if not specs:
            return []
        done: list[AttachSpec] = []
        try:
            for spec in specs:
                netns.create_veth(
                    spec.port_name, spec.pod.netns, spec.interface_config(), host_netns=self.host_netns
                )
                done.append(spec)
            self.on_stage(Stage.ADD_INTERFACE_CONFIGURED)
            ofports = self.ovsdb.add_pod_ports(
                specs[0].bridge, [self._port_spec(s) for s in specs], timeout=self.timeout
            )
            self.on_stage(Stage.ADD_PORT_CREATED)
        except (netns.NetlinkError, OvsdbError) as exc:
            failed = specs[len(done)] if len(done) < len(specs) else None
            who = f"pod {failed.pod.namespace}/{failed.pod.name}" if failed else "OVS ports"
            self._undo(specs)
            raise AttachError(f"veth attach of {who} failed: {exc}") from None
        return self._results(specs, ofports)

    def restore(self, spec: AttachSpec) -> AttachResult:
        """Add back the port of a pod whose pair is intact (the host end exists and the pod's
        interface is as `spec` says, carrier included): the pod sees no change at all. Otherwise
        the pair is made anew, as by `attach`."""
        _validate([spec])
        try:
            state = netns.read_interface(spec.pod.netns, spec.pod.ifname)
            intact = (
                state is not None
                and not _check_interface(spec, state)
                and netns.link_exists(spec.port_name, netns=self.host_netns)
            )
        except netns.NetlinkError as exc:
            raise AttachError(f"pod {spec.pod.namespace}/{spec.pod.name}: {exc}") from None
        if not intact:
            return self.attach(spec)
        try:
            ofports = self.ovsdb.add_pod_ports(spec.bridge, [self._port_spec(spec)], timeout=self.timeout)
        except OvsdbError as exc:
            raise AttachError(f"OVS port of pod {spec.pod.namespace}/{spec.pod.name}: {exc}") from None
        return self._results([spec], ofports)[0]


class InternalAttachment(_Base):
    """Pods given an OVS internal port, moved into the pod and renamed."""

    kind = AttachmentKind.INTERNAL

    def attach_many(self, specs: Sequence[AttachSpec]) -> list[AttachResult]:
        """Add all internal ports in one transaction, then move each device into its pod."""
        _validate(specs)
        if not specs:
            return []
        current = None
        try:
            ofports = self.ovsdb.add_pod_ports(
                specs[0].bridge, [self._port_spec(s) for s in specs], timeout=self.timeout
            )
            self.on_stage(Stage.ADD_PORT_CREATED)
            for spec in specs:
                current = spec
                netns.move_into_pod(
                    spec.port_name, spec.pod.netns, spec.interface_config(), host_netns=self.host_netns
                )
            self.on_stage(Stage.ADD_INTERFACE_CONFIGURED)
        except (netns.NetlinkError, OvsdbError) as exc:
            who = f"pod {current.pod.namespace}/{current.pod.name}" if current else "OVS ports"
            self._undo(specs)
            raise AttachError(f"internal-port attach of {who} failed: {exc}") from None
        return self._results(specs, ofports)


def attachment_for(
    kind: AttachmentKind | str,
    ovsdb: PortStore,
    *,
    host_netns: str | None = None,
    timeout: float = 10.0,
    on_stage: CrashHook = no_crash,
) -> Attachment:
    """Return the Attachment of `kind`; raises ValueError for an unknown kind."""
    classes: dict[AttachmentKind, type[_Base]] = {
        AttachmentKind.VETH: VethAttachment,
        AttachmentKind.INTERNAL: InternalAttachment,
    }
    try:
        cls = classes[AttachmentKind(kind)]
    except ValueError:
        raise ValueError(f"unknown attachment kind {kind!r}: use veth or internal") from None
    return cls(ovsdb, host_netns=host_netns, timeout=timeout, on_stage=on_stage)


def _check_port(spec: AttachSpec, record: PortRecord, kind: AttachmentKind) -> list[str]:
    problems = []
    if record.bridge != spec.bridge:
        problems.append(f"OVS port {spec.port_name} is on bridge {record.bridge}, not {spec.bridge}")
    if record.ofport is None or record.ofport < 0:
        problems.append(f"OVS port {spec.port_name} has no ofport ({record.error or 'not assigned'})")
    wanted_type = "internal" if kind is AttachmentKind.INTERNAL else ""
    if record.type != wanted_type:
        problems.append(f"OVS port {spec.port_name} has type {record.type!r}, expected {wanted_type!r}")
    for key, value in spec.pod.external_ids().items():
        got = record.external_ids.get(key)
        if got != value:
            problems.append(f"OVS port {spec.port_name} external_ids {key}={got!r}, expected {value!r}")
    return problems


def _check_interface(spec: AttachSpec, state: netns.InterfaceState) -> list[str]:
    where = f"{spec.pod.ifname} in {spec.pod.netns}"
    problems = []
    if state.mac.lower() != spec.mac:
        problems.append(f"{where} has MAC {state.mac}, expected {spec.mac}")
    if state.mtu != spec.mtu:
        problems.append(f"{where} has MTU {state.mtu}, expected {spec.mtu}")
    if not state.up:
        problems.append(f"{where} is down")
    elif not state.carrier:
        problems.append(f"{where} has no carrier: its OVS side is gone")
    if spec.pod.ip not in state.addresses:
        problems.append(f"{where} lacks address {spec.pod.ip} (has {[str(a) for a in state.addresses]})")
    if spec.gateway is not None and state.default_gateway != spec.gateway:
        problems.append(f"{where}: default route via {state.default_gateway}, expected {spec.gateway}")
    if spec.tx_checksum_off and state.tx_checksum:
        problems.append(f"{where} has TX checksum offload on")
    return problems
