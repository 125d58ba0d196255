"""The agent's one door to netlink: pod interfaces (veth or moved OVS internal port) plumbed with pyroute2.

Namespaces are given as paths (`CNI_NETNS` is a path such as /var/run/netns/NAME or
/proc/PID/ns/net); `None` means the namespace this process runs in. The agent normally runs in
the node's namespace, where ovs-vswitchd runs, and passes `host_netns=None`; tests (which run in
the machine's namespace and put each node in a namespace of its own) pass the node's path.

No thread ever switches its own namespace for long: a socket opened in a namespace stays in that
namespace, so `_socket_in()` opens the netlink (or ioctl) socket from a short-lived thread that
calls setns(2) and exits, and every later operation runs in the caller's thread. pyroute2's own
`IPRoute(netns=...)` forks a child process per socket (and creates the namespace if it is
missing); this costs ~4 ms instead of ~15 ms and never creates anything.

The per-pod path (create, configure, delete, move, look up one device) speaks rtnetlink itself
(`_Rtnl`: one request, wait for its ack, through the stdlib socket module): pyroute2 runs an
asyncio loop per request, about 1 ms of CPU each, which made it most of a pod's plumbing time.
Devices are named in requests (IFLA_IFNAME) rather than looked up first, and the pod end of a
veth gets its MAC and MTU in the creation request itself. The node-side and read-back
helpers (CHECK, start-up) still use pyroute2.

TX checksum offload is switched off with the legacy ETHTOOL_STXCSUM ioctl (what `ethtool -K IF
tx off` amounts to: the kernel clears NETIF_F_CSUM_MASK, and TSO, which needs it, goes with it),
from a socket opened in the pod's namespace: no `ethtool` process in the ADD path. The OVS
userspace datapath forwards a packet's partial checksum as is, so a veth left with TX offload on
sends TCP segments the receiver drops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyrouteNetlinkError

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
IFNAMSIZ = 16
NETLINK_ROUTE = 0

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h, linux/veth.h)
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # length, type

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class NetlinkError(Exception):
    """A netlink or namespace operation failed; the message names the namespace and interface."""


class NetnsGone(NetlinkError):
    """The network namespace path does not exist (or is no longer a namespace)."""


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """How a pod interface is set up: name, MAC, MTU, address, default route, TX checksum."""

    ifname: str
    mac: str
    mtu: int
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    tx_checksum_off: bool = True

    def __post_init__(self) -> None:
        validate_ifname(self.ifname)
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"invalid MTU {self.mtu}: must be 68..65535")
        if self.gateway is not None and self.gateway not in self.address.network:
            raise ValueError(f"gateway {self.gateway} is outside {self.address.network}")


@dataclass(frozen=True, slots=True)
class InterfaceState:
    """A pod interface as the kernel has it (read back for CHECK)."""

    ifname: str
    kind: str | None
    mac: str
    mtu: int
    up: bool
    carrier: bool
    addresses: tuple[ipaddress.IPv4Interface, ...]
    default_gateway: ipaddress.IPv4Address | None
    tx_checksum: bool | None


def validate_ifname(name: str) -> None:
    """Raise ValueError unless `name` is a valid Linux interface name (1-15 bytes, no / : space)."""
    if not name or len(name.encode()) >= IFNAMSIZ or name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise ValueError(f"invalid interface name {name!r}")


# ---------------------------------------------------------------------------------------------
# Namespaced sockets


def _socket_in(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """Return a socket opened inside network namespace `netns` (None: this one).

    Raises NetnsGone if `netns` does not exist or is not a network namespace.
    """
    return _sockets_in(netns, [(family, kind, proto)])[0]


def _sockets_in(netns: str | None, specs: Sequence[tuple[int, int, int]]) -> list[socket.socket]:
    """Return one socket per (family, type, protocol) in `specs`, all opened inside `netns`.

    One short-lived thread enters the namespace, opens them all and exits (None: no thread, this
    namespace). Raises NetnsGone if `netns` does not exist or is not a network namespace.
    """
    if netns is None:
        return _open_sockets(None, specs)
    result: dict[str, Any] = {}

    def enter_and_open() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            result["error"] = NetnsGone(f"network namespace {netns} does not exist")
            return
        except OSError as exc:
            result["error"] = NetlinkError(f"cannot open network namespace {netns}: {exc.strerror}")
            return
        try:
            # setns(2) switches only this thread, which exits right after: nothing else ever
            # runs in the pod's namespace.
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                if err == errno.EINVAL:
                    result["error"] = NetnsGone(f"{netns} is not a network namespace (any more)")
                else:
                    result["error"] = NetlinkError(f"setns({netns}): {os.strerror(err)}")
                return
            result["sockets"] = _open_sockets(netns, specs)
        except NetlinkError as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_open, name="setns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sockets: list[socket.socket] = result["sockets"]
    return sockets


def _open_sockets(netns: str | None, specs: Sequence[tuple[int, int, int]]) -> list[socket.socket]:
    """Open the sockets `specs` in the calling thread's namespace; all or none (NetlinkError)."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto in specs:
            sockets.append(socket.socket(family, kind, proto))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise NetlinkError(f"socket in {_where(netns)}: {exc.strerror}") from None
    return sockets


def _attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (rtattr), padded to 4 bytes."""
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _name_attr(name: str) -> bytes:
    return _attr(IFLA_IFNAME, name.encode() + b"\0")


def _u32_attr(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, *, up: bool | None = None) -> bytes:
    """An ifinfomsg header for device `index` (0: named by IFLA_IFNAME), optionally setting IFF_UP."""
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _parse_mac(mac: str) -> bytes:
    """Return the 6 bytes of MAC `mac` (aa:bb:cc:dd:ee:ff); ValueError if it is not one."""
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6 or len(mac) != 17:
        raise ValueError(f"invalid MAC address {mac!r}")
    return raw


class _Rtnl:
    """A NETLINK_ROUTE socket used one request at a time: send, then wait for the kernel's ack.

    Errors from the kernel are raised as OSError(errno) for the caller to name the namespace and
    device in its NetlinkError.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[bytes]:
        """Send one request (acked); return the payloads of the kernel's answers before the ack."""
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0)
        self._sock.sendto(header + body, (0, 0))
        answers: list[bytes] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                if mseq == seq:
                    payload = data[offset + _NLMSGHDR.size : offset + length]
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        return answers
                    answers.append(payload)
                offset += (length + 3) & ~3

    def link(self, name: str) -> bytes | None:
        """Return device `name`'s RTM_NEWLINK payload (ifinfomsg + attributes), None if none."""
        try:
            answers = self.request(RTM_GETLINK, _ifinfo() + _name_attr(name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return answers[0] if answers else None

    def index(self, name: str) -> int | None:
        """Return device `name`'s index, or None if there is no such device."""
        link = self.link(name)
        if link is None:
            return None
        index: int = _IFINFOMSG.unpack_from(link)[2]
        return index

    def set_link(self, body: bytes) -> None:
        """RTM_NEWLINK on an existing device: `body` is an ifinfomsg (+ attributes) naming it."""
        self.request(RTM_NEWLINK, body)

    def delete_link(self, name: str) -> bool:
        """Delete device `name`; return False if there was none."""
        try:
            self.request(RTM_DELLINK, _ifinfo() + _name_attr(name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True


def _link_attrs(link: bytes) -> dict[int, bytes]:
    """The top-level attributes of an RTM_NEWLINK payload, by type."""
    attrs = {}
    offset = _IFINFOMSG.size
    while offset + _RTATTR.size <= len(link):
        length, kind = _RTATTR.unpack_from(link, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = link[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


@contextlib.contextmanager
def _rtnl(netns: str | None) -> Iterator[_Rtnl]:
    """Yield a `_Rtnl` talking to namespace `netns` (None: this one). Raises NetnsGone."""
    rtnl = _Rtnl(_socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
    try:
        yield rtnl
    finally:
        rtnl.close()


@contextlib.contextmanager
def _iproute(netns: str | None) -> Iterator[Any]:
    """Yield a pyroute2 IPRoute talking to namespace `netns` (None: this one)."""
    if netns is None:
        ipr = IPRoute()
    else:
        sock = _socket_in(netns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        try:
            ipr = IPRoute(use_socket=sock)
        except BaseException:
            sock.close()
            raise
    try:
        yield ipr
    finally:
        ipr.close()


def _where(netns: str | None) -> str:
    return netns or "the agent's namespace"


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _fail(what: str, exc: _PyrouteNetlinkError) -> NetlinkError:
    return NetlinkError(f"{what}: {os.strerror(exc.code) if exc.code else exc}")


# ---------------------------------------------------------------------------------------------
# Veth and internal-port plumbing


def create_veth(
    host_name: str, pod_netns: str, cfg: InterfaceConfig, *, host_netns: str | None = None
) -> None:
    """Create a veth pair: `host_name` in `host_netns`, `cfg.ifname` in `pod_netns`, configured by `cfg`.

    The pod end is created directly inside the pod's namespace (so its name never clashes with
    host devices), with its MAC and MTU in the creation request itself; then configured as
    `configure_pod_interface` does (lo up, link up, address, default route, TX checksum off); the host
    end gets the same MTU, is isolated (`isolate_host_end`) and brought up. A leftover host end
    of the same name (an earlier ADD that failed half way) is removed first. On failure the pair
    is removed again. Raises NetlinkError/NetnsGone.
    """
    validate_ifname(host_name)
    mac = _parse_mac(cfg.mac)
    try:
        pod_fd = os.open(pod_netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(f"pod network namespace {pod_netns} does not exist") from None
    try:
        with _rtnl(host_netns) as host:
            try:
                if host.delete_link(host_name):
                    log.info("removed stale %s in %s", host_name, _where(host_netns))
            except OSError as exc:
                raise NetlinkError(f"veth {host_name} in {_where(host_netns)}: {exc.strerror}") from None
            # The pod end's up flag cannot go in here: the kernel refuses (ENOTCONN) to bring up
            # a peer created in another namespace within the creation request.
            peer = (
                _ifinfo()
                + _name_attr(cfg.ifname)
                + _u32_attr(IFLA_MTU, cfg.mtu)
                + _attr(IFLA_ADDRESS, mac)
                + _u32_attr(IFLA_NET_NS_FD, pod_fd)
            )
            linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
            try:
                host.request(
                    RTM_NEWLINK,
                    _ifinfo()
                    + _name_attr(host_name)
                    + _u32_attr(IFLA_MTU, cfg.mtu)
                    + _attr(IFLA_LINKINFO, linkinfo),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
            except OSError as exc:
                raise NetlinkError(
                    f"cannot create veth {host_name} / {pod_netns}:{cfg.ifname}: {exc.strerror}"
                ) from None
            try:
                _configure_pod(pod_netns, cfg, mac_mtu_set=True)
                isolate_host_end(host_name, netns=host_netns)
                vanished = f"veth {host_name} vanished right after creation"
                _bring_up(host, host_name, host_netns, missing=vanished)
            except BaseException:
                with contextlib.suppress(Exception):
                    host.delete_link(host_name)
                raise
    finally:
        os.close(pod_fd)


def move_into_pod(name: str, pod_netns: str, cfg: InterfaceConfig, *, host_netns: str | None = None) -> None:
    """Move device `name` (an OVS internal port) from `host_netns` into `pod_netns` as `cfg.ifname`.

    If `name` is no longer in `host_netns` but `cfg.ifname` already exists in the pod (a retried
    ADD), only the configuration is applied again. If `name` is in `host_netns` while the pod
    already has a `cfg.ifname`, that one is a dead leftover and is deleted first: OVS makes
    userspace internal ports persistent tap devices, so after an ovs-vswitchd restart the pod
    keeps its old tap (no carrier: nobody reads it) and vswitchd creates a fresh one in its own
    namespace. Raises NetlinkError/NetnsGone.
    """
    validate_ifname(name)
    try:
        pod_fd = os.open(pod_netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(f"pod network namespace {pod_netns} does not exist") from None
    try:
        with _rtnl(host_netns) as host:
            index = host.index(name)
            if index is not None:
                if delete_link(cfg.ifname, netns=pod_netns):
                    log.info("replaced a dead %s in %s by %s", cfg.ifname, pod_netns, name)
                host.set_link(_ifinfo(index, up=False))
                host.set_link(_ifinfo(index) + _u32_attr(IFLA_NET_NS_FD, pod_fd))
    except OSError as exc:
        raise NetlinkError(
            f"cannot move {name} from {_where(host_netns)} into {pod_netns}: {exc.strerror}"
        ) from None
    finally:
        os.close(pod_fd)
    try:
        with _rtnl(pod_netns) as pod:
            index = pod.index(name)
            if index is not None and name != cfg.ifname:
                pod.set_link(_ifinfo(index) + _name_attr(cfg.ifname))
            elif index is None and pod.index(cfg.ifname) is None:
                raise NetlinkError(f"device {name} is neither in {_where(host_netns)} nor in {pod_netns}")
    except OSError as exc:
        raise NetlinkError(f"cannot rename {name} to {cfg.ifname} in {pod_netns}: {exc.strerror}") from None
    configure_pod_interface(pod_netns, cfg)


def configure_pod_interface(pod_netns: str, cfg: InterfaceConfig) -> None:
    """Give `cfg.ifname` in `pod_netns` its MAC, MTU, address and default route, TX checksum off, up.

    Idempotent: an address or route already present is kept. Raises NetlinkError/NetnsGone.
    """
    _configure_pod(pod_netns, cfg, mac_mtu_set=False)


def _configure_pod(pod_netns: str, cfg: InterfaceConfig, *, mac_mtu_set: bool) -> None:
    """`configure_pod_interface`; `mac_mtu_set`: MAC and MTU were set when the device was created.

    The netlink socket and the ioctl socket are opened by one thread entering `pod_netns`.
    """
    mac = _parse_mac(cfg.mac)
    specs = [(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)]
    if cfg.tx_checksum_off:
        specs.append((socket.AF_INET, socket.SOCK_DGRAM, 0))
    sockets = _sockets_in(pod_netns, specs)
    rtnl = _Rtnl(sockets[0])
    try:
        try:
            index = rtnl.index(cfg.ifname)
            if index is None:
                raise NetlinkError(f"no interface {cfg.ifname} in {pod_netns}")
            if not mac_mtu_set:
                rtnl.set_link(_ifinfo(index) + _attr(IFLA_ADDRESS, mac) + _u32_attr(IFLA_MTU, cfg.mtu))
            try:
                rtnl.set_link(_ifinfo(up=True) + _name_attr("lo"))
            except OSError as exc:
                if exc.errno != errno.ENODEV:  # no lo: nothing to bring up
                    raise
            rtnl.set_link(_ifinfo(index, up=True))
            address = socket.inet_aton(str(cfg.address.ip))
            rtnl.request(
                RTM_NEWADDR,
                _IFADDRMSG.pack(socket.AF_INET, cfg.address.network.prefixlen, 0, 0, index)
                + _attr(IFA_LOCAL, address)
                + _attr(IFA_ADDRESS, address),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            if cfg.gateway is not None:
                rtnl.request(
                    RTM_NEWROUTE,
                    _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, 0)
                    + _attr(RTA_GATEWAY, cfg.gateway.packed)
                    + _u32_attr(RTA_OIF, index),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
        except OSError as exc:
            raise NetlinkError(f"cannot configure {cfg.ifname} in {pod_netns}: {exc.strerror}") from None
        if cfg.tx_checksum_off:
            _ethtool_on(sockets[1], pod_netns, cfg.ifname, ETHTOOL_STXCSUM, 0)
    finally:
        for sock in sockets:
            sock.close()


def set_link_up(name: str, *, netns: str | None = None) -> None:
    """Bring device `name` in `netns` up; raises NetlinkError if it does not exist."""
    with _rtnl(netns) as rtnl:
        _bring_up(rtnl, name, netns, missing=f"no device {name} in {_where(netns)}")


def _bring_up(rtnl: _Rtnl, name: str, netns: str | None, *, missing: str) -> None:
    """Set device `name` up through `rtnl`; NetlinkError(`missing`) if there is no such device."""
    try:
        rtnl.set_link(_ifinfo(up=True) + _name_attr(name))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise NetlinkError(missing) from None
        raise NetlinkError(f"cannot bring {name} up in {_where(netns)}: {exc.strerror}") from None


def link_exists(name: str, *, netns: str | None = None) -> bool:
    """Return True if device `name` exists in `netns` (False if the namespace is gone)."""
    try:
        with _rtnl(netns) as rtnl:
            return rtnl.index(name) is not None
    except NetnsGone:
        return False
    except OSError as exc:
        raise NetlinkError(f"cannot look up {name} in {_where(netns)}: {exc.strerror}") from None


def list_links(*, netns: str | None = None) -> list[tuple[str, str]]:
    """Return (name, kind) of every device in `netns` (kind "" for a device without link info,
    e.g. `lo` or a physical NIC; "veth", "tun", "openvswitch", ... otherwise). Raises NetlinkError."""
    with _iproute(netns) as ipr:
        try:
            messages = ipr.get_links()
        except _PyrouteNetlinkError as exc:
            raise _fail(f"cannot list the devices of {_where(netns)}", exc) from None
    out = []
    for msg in messages:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        out.append((str(msg.get_attr("IFLA_IFNAME")), str(kind or "")))
    return out


def delete_link(name: str, *, netns: str | None = None) -> bool:
    """Delete device `name` in `netns` (a veth takes its peer along); return True if it existed.

    Idempotent: a missing device or a missing namespace is not an error. Raises NetlinkError.
    """
    try:
        with _rtnl(netns) as rtnl:
            return rtnl.delete_link(name)
    except NetnsGone:
        return False
    except OSError as exc:
        raise NetlinkError(f"cannot delete {name} in {_where(netns)}: {exc.strerror}") from None


def read_interface(pod_netns: str, ifname: str) -> InterfaceState | None:
    """Return the state of `ifname` in `pod_netns`, or None if it (or the namespace) is gone."""
    try:
        with _iproute(pod_netns) as ipr:
            index = _index(ipr, ifname)
            if index is None:
                return None
            link = ipr.get_links(index)[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            addresses = tuple(
                ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                for a in ipr.get_addr(family=socket.AF_INET, index=index)
            )
            gateway = None
            for route in ipr.get_routes(family=socket.AF_INET, table=254):
                if route["dst_len"] == 0 and route.get_attr("RTA_OIF") == index:
                    gw = route.get_attr("RTA_GATEWAY")
                    if gw is not None:
                        gateway = ipaddress.IPv4Address(gw)
            state = InterfaceState(
                ifname=ifname,
                kind=kind,
                mac=str(link.get_attr("IFLA_ADDRESS")),
                mtu=int(link.get_attr("IFLA_MTU")),
                up=bool(link["flags"] & 1),
                carrier=bool(link.get_attr("IFLA_CARRIER")),
                addresses=addresses,
                default_gateway=gateway,
                tx_checksum=None,
            )
    except NetnsGone:
        return None
    try:
        tx = tx_checksum(pod_netns, ifname)
    except NetlinkError:
        tx = None
    return dataclasses.replace(state, tx_checksum=tx)


# ---------------------------------------------------------------------------------------------
# ethtool


def _ethtool(netns: str | None, ifname: str, cmd: int, data: int = 0) -> int:
    """Run one ethtool_value ioctl on `ifname` in `netns`; return the value the kernel left."""
    validate_ifname(ifname)
    with _socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return _ethtool_on(sock, netns, ifname, cmd, data)


def _ethtool_on(sock: socket.socket, netns: str | None, ifname: str, cmd: int, data: int = 0) -> int:
    """Run one ethtool_value ioctl on `ifname` through `sock` (opened in `netns`); return the value."""
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise NetlinkError(f"ethtool on {ifname} in {_where(netns)}: {exc.strerror}") from None
    result: int = struct.unpack("II", value.raw)[1]
    return result


def tx_checksum(netns: str | None, ifname: str) -> bool:
    """Return whether TX checksum offload is on for `ifname` in `netns`. Raises NetlinkError."""
    return bool(_ethtool(netns, ifname, ETHTOOL_GTXCSUM))


def set_tx_checksum(netns: str | None, ifname: str, *, enabled: bool) -> None:
    """Switch TX checksum offload of `ifname` in `netns` on or off. Raises NetlinkError."""
    _ethtool(netns, ifname, ETHTOOL_STXCSUM, 1 if enabled else 0)


# ---------------------------------------------------------------------------------------------
# Node-side devices (the gateway port, the underlay interface)


@dataclass(frozen=True, slots=True)
class LinkAddresses:
    """A device's IPv4 addresses and MTU."""

    ifname: str
    mtu: int
    addresses: tuple[ipaddress.IPv4Interface, ...]


def link_addresses(name: str, *, netns: str | None = None) -> LinkAddresses | None:
    """Return device `name`'s IPv4 addresses and MTU in `netns`, or None if it does not exist."""
    with _iproute(netns) as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        link = ipr.get_links(index)[0]
        return LinkAddresses(name, int(link.get_attr("IFLA_MTU")), tuple(_addresses_of(ipr, index)))


def default_route_interface(*, netns: str | None = None) -> str | None:
    """Return the name of the device the IPv4 default route leaves by in `netns`, or None."""
    with _iproute(netns) as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF") is not None:
                links = ipr.get_links(route.get_attr("RTA_OIF"))
                if links:
                    return str(links[0].get_attr("IFLA_IFNAME"))
    return None


def configure_host_port(
    name: str, address: ipaddress.IPv4Interface, mtu: int | None, *, netns: str | None = None
) -> None:
    """Give device `name` (e.g. the gateway internal port) `address` (the kernel then routes its
    network through it), set its MTU, bring it up. Idempotent. Raises NetlinkError."""
    with _iproute(netns) as ipr:
        index = _index(ipr, name)
        if index is None:
            raise NetlinkError(f"no device {name} in {_where(netns)}")
        try:
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            ipr.link("set", index=index, state="up")
            ipr.addr("replace", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        except _PyrouteNetlinkError as exc:
            raise _fail(f"cannot configure {name} in {_where(netns)}", exc) from None


def link_mac(name: str, *, netns: str | None = None) -> str | None:
    """Return device `name`'s MAC address in `netns`, or None if it (or the namespace) is gone."""
    try:
        with _rtnl(netns) as rtnl:
            link = rtnl.link(name)
    except NetnsGone:
        return None
    except OSError as exc:
        raise NetlinkError(f"cannot look up {name} in {_where(netns)}: {exc.strerror}") from None
    if link is None:
        return None
    mac = _link_attrs(link).get(IFLA_ADDRESS)
    return None if mac is None else ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    """A main-table IPv4 route through a gateway (how the node reaches beyond its underlay subnet)."""

    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    def __str__(self) -> str:
        return f"{self.dst} via {self.gateway}"


def _addresses_of(ipr: Any, index: int) -> list[ipaddress.IPv4Interface]:
    return [
        ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        for a in ipr.get_addr(family=socket.AF_INET, index=index)
    ]


def _gateway_routes_of(ipr: Any, index: int) -> list[GatewayRoute]:
    return [
        GatewayRoute(
            ipaddress.IPv4Network(f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}"),
            ipaddress.IPv4Address(r.get_attr("RTA_GATEWAY")),
        )
        for r in ipr.get_routes(family=socket.AF_INET, table=254)
        if r.get_attr("RTA_OIF") == index and r.get_attr("RTA_GATEWAY") is not None
    ]


def _put(
    ipr: Any, index: int, addresses: Sequence[ipaddress.IPv4Interface], routes: Sequence[GatewayRoute]
) -> None:
    """Bring device `index` up with `addresses`, then route `routes` through it (replacing)."""
    ipr.link("set", index=index, state="up")
    for address in addresses:
        ipr.addr("replace", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    for route in routes:
        _route_via(ipr, index, route)


def _route_via(ipr: Any, index: int, route: GatewayRoute) -> None:
    ipr.route("replace", dst=str(route.dst), gateway=str(route.gateway), oif=index)


def gateway_routes(name: str, *, netns: str | None = None) -> list[GatewayRoute] | None:
    """Return the main-table gateway routes that leave by device `name`, or None if it does not exist."""
    with _iproute(netns) as ipr:
        index = _index(ipr, name)
        return None if index is None else _gateway_routes_of(ipr, index)


def put_addresses(
    name: str,
    addresses: Sequence[ipaddress.IPv4Interface],
    routes: Sequence[GatewayRoute],
    *,
    netns: str | None = None,
) -> list[tuple[GatewayRoute, str]]:
    """Give device `name` `addresses` (up), then route each of `routes` through it. Idempotent.
    Returns the routes the kernel refused, with why (say, a gateway no longer on any of the
    addresses' subnets): the others are in place. Raises NetlinkError for the device and addresses."""
    refused: list[tuple[GatewayRoute, str]] = []
    with _iproute(netns) as ipr:
        index = _index(ipr, name)
        if index is None:
            raise NetlinkError(f"no device {name} in {_where(netns)}")
        try:
            _put(ipr, index, addresses, ())
        except _PyrouteNetlinkError as exc:
            raise _fail(f"cannot put addresses on {name} in {_where(netns)}", exc) from None
        for route in routes:
            try:
                _route_via(ipr, index, route)
            except _PyrouteNetlinkError as exc:
                refused.append((route, str(_fail(f"route {route}", exc))))
    return refused


def move_addresses(src: str, dst: str, *, netns: str | None = None) -> list[ipaddress.IPv4Interface]:
    """Move every IPv4 address of device `src` to device `dst` (up), with the routes via `src`.

    This is how an underlay interface joins an OVS bridge (OVS userspace tunnelling needs the
    tunnel endpoint address on a bridge's internal port): addresses first appear on `dst`, then
    the gateway routes that left by `src` are re-added by `dst`, then `src` loses its addresses
    (and with them its connected routes). Idempotent: nothing to move is fine. Returns what moved.
    Raises NetlinkError.
    """
    with _iproute(netns) as ipr:
        src_index, dst_index = _index(ipr, src), _index(ipr, dst)
        if src_index is None or dst_index is None:
            raise NetlinkError(
                f"cannot move addresses from {src} to {dst} in {_where(netns)}: no such device"
            )
        try:
            addresses = _addresses_of(ipr, src_index)
            routes = _gateway_routes_of(ipr, src_index)
            _put(ipr, dst_index, addresses, routes)
            for address in addresses:
                ipr.addr("del", index=src_index, address=str(address.ip), prefixlen=address.network.prefixlen)
            ipr.link("set", index=src_index, state="up")
        except _PyrouteNetlinkError as exc:
            raise _fail(f"cannot move addresses from {src} to {dst} in {_where(netns)}", exc) from None
    if addresses:
        log.info("moved %s and %d route(s) from %s to %s", [str(a) for a in addresses], len(routes), src, dst)
    return addresses


ARP_REQUEST = 1
ARP_REPLY = 2


def _arp_frame(op: int, mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast gratuitous ARP frame (sender and target address both `ip`), padded to 60 bytes."""
    # A gratuitous reply names the sender's MAC as target hardware address too (Linux counts a
    # reply as gratuitous only then); a request leaves it zero.
    target_mac = mac if op == ARP_REPLY else bytes(6)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip.packed, target_mac, ip.packed)
    frame = b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp
    return frame.ljust(60, b"\x00")


def announce_addresses(
    name: str,
    addresses: list[ipaddress.IPv4Address],
    *,
    netns: str | None = None,
    rounds: int = 3,
    interval: float = 0.2,
) -> str:
    """Send gratuitous ARP (a request and a reply per address, `rounds` times) out of device `name`.

    Tells the underlay that `addresses` now live at `name`'s MAC: Linux neighbours update an
    existing entry from a gratuitous request or reply, and OVS's userspace tunnel neighbour cache
    (tnl_arp_snoop) learns from ARP replies and gratuitous ARP passing through a bridge. Returns the
    MAC announced. Raises NetlinkError (NetnsGone) when the device or namespace is missing.
    """
    validate_ifname(name)
    mac_text = link_mac(name, netns=netns)
    if mac_text is None:
        raise NetlinkError(f"cannot announce addresses of {name} in {_where(netns)}: no such device")
    mac = bytes.fromhex(mac_text.replace(":", ""))
    frames = [_arp_frame(op, mac, ip) for ip in addresses for op in (ARP_REQUEST, ARP_REPLY)]
    if not frames:
        return mac_text
    sock = _socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((name, 0))
        for round_ in range(rounds):
            if round_:
                time.sleep(interval)
            for frame in frames:
                sock.send(frame)
    except OSError as exc:
        raise NetlinkError(
            f"cannot send gratuitous ARP on {name} in {_where(netns)}: {exc.strerror}"
        ) from None
    finally:
        sock.close()
    log.info("announced %s at %s on %s (gratuitous ARP)", [str(a) for a in addresses], mac_text, name)
    return mac_text


# ---------------------------------------------------------------------------------------------
# sysctl


def write_sysctl(key: str, value: str, *, netns: str | None = None) -> None:
    """Write `value` to /proc/sys/`key` (slashed: `net/ipv4/...`) as seen from network namespace `netns`.

    /proc/sys/net resolves against the network namespace of the calling thread, so for another
    namespace a short-lived thread enters it (as `_socket_in` does). Raises NetlinkError/NetnsGone.
    """
    _write_sysctls([(key, value, True)], netns=netns)


def _write_sysctls(writes: list[tuple[str, str, bool]], *, netns: str | None) -> None:
    """Write each (key, value, required) in order, as seen from `netns` (one thread for them all).

    A failed write of a required key stops there and raises NetlinkError (NetnsGone when the
    namespace cannot be entered); a failed optional one is skipped.
    """
    result: dict[str, BaseException] = {}

    def write() -> None:
        try:
            if netns is not None:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise NetnsGone(f"{netns} is not a network namespace (any more)")
                finally:
                    os.close(fd)
        except OSError as exc:
            result["error"] = NetlinkError(f"sysctl {writes[0][0]} in {_where(netns)}: {exc.strerror}")
            return
        except NetlinkError as exc:
            result["error"] = exc
            return
        for key, value, required in writes:
            try:
                with open("/proc/sys/" + key, "w") as f:
                    f.write(value)
            except OSError as exc:
                if required:
                    result["error"] = NetlinkError(f"sysctl {key} in {_where(netns)}: {exc.strerror}")
                    return

    if netns is None:
        write()  # this thread's own namespace: no thread needed
    else:
        thread = threading.Thread(target=write, name="sysctl")
        thread.start()
        thread.join()
    if "error" in result:
        raise result["error"]


def isolate_host_end(name: str, *, netns: str | None = None) -> None:
    """Keep the kernel's IP stack off a pod's host-side veth end: it is only an OVS port.

    Without this the kernel of the node answers the pod's ARP for the gateway (or any node
    address) on the veth itself (arp_ignore=0 replies for every local address on every
    interface), the pod may cache the veth's MAC as its gateway's, and its packets then reach the
    node's IP stack directly, beside OVS's pipeline (seen as duplicated ping replies).
    arp_ignore=8 never answers ARP on that device; IPv6 is switched off on it too (skipped
    where the kernel or namespace has no IPv6). Both are written from one thread. Raises
    NetlinkError.
    """
    validate_ifname(name)
    _write_sysctls(
        [(f"net/ipv4/conf/{name}/arp_ignore", "8", True), (f"net/ipv6/conf/{name}/disable_ipv6", "1", False)],
        netns=netns,
    )


def answer_arp_only_for_own_addresses(name: str, *, netns: str | None = None) -> None:
    """Make device `name` answer ARP only for addresses configured on it (arp_ignore=1).

    With the default arp_ignore=0 Linux answers an ARP request arriving on any interface for any
    local address, with that interface's MAC. Once an underlay interface's address has moved to
    br-phy, the node's kernel would keep answering on the underlay interface (an OVS port now)
    with the old MAC, racing br-phy's answer. Raises NetlinkError.
    """
    validate_ifname(name)
    write_sysctl(f"net/ipv4/conf/{name}/arp_ignore", "1", netns=netns)
