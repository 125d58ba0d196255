"""Names and identity the agent derives from a pod: its MAC, its OVS port name, its `external_ids`.

Everything here is a pure function of the pod's facts, so a restarted agent (or the controller)
computes the same names again without any stored state.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

MAC_PREFIX = "0a:58"
EXTERNAL_ID_PREFIX = "sluice.io/"

# Linux interface names are at most 15 bytes (IFNAMSIZ - 1). A port name is
# <up to 6 characters of the pod name> "-" <8 hex digits of SHA-256(namespace/name)>.
PORT_NAME_MAX = 15
_PREFIX_LEN = 6
_HASH_LEN = 8
_NOT_IFNAME_CHAR = re.compile(r"[^a-z0-9]")


class Key(enum.StrEnum):
    """The `sluice.io/` keys of a pod's identity in an OVS Interface's `external_ids`."""

    NAMESPACE = EXTERNAL_ID_PREFIX + "namespace"
    NAME = EXTERNAL_ID_PREFIX + "name"
    UID = EXTERNAL_ID_PREFIX + "uid"
    CONTAINER_ID = EXTERNAL_ID_PREFIX + "container-id"
    IFNAME = EXTERNAL_ID_PREFIX + "ifname"
    IP = EXTERNAL_ID_PREFIX + "ip"
    MAC = EXTERNAL_ID_PREFIX + "mac"
    NETNS = EXTERNAL_ID_PREFIX + "netns"
    KIND = EXTERNAL_ID_PREFIX + "kind"  # the attachment kind (veth, internal): how to undo it


def mac_for_ip(ip: ipaddress.IPv4Address | str) -> str:
    """Return the MAC of the interface holding `ip`: `0a:58:` followed by the four IPv4 bytes.

    The same scheme as `flows.identity.mac_for_ip` (and Kubernetes' bridge plugin), so the
    controller computes every pod MAC from its IP alone. Raises ValueError for a non-IPv4 `ip`.
    """
    packed = ipaddress.IPv4Address(ip).packed
    return MAC_PREFIX + "".join(f":{b:02x}" for b in packed)


#: What every `port_name` looks like; used to recognise our own leftover host-side veth ends.
PORT_NAME_RE = re.compile(rf"^[a-z0-9]{{1,{_PREFIX_LEN}}}-[0-9a-f]{{{_HASH_LEN}}}$")


def port_name(namespace: str, name: str) -> str:
    """Return the OVS port (and host-side interface) name of pod `namespace/name`, <= 15 chars.

    Readable and unique: the first 6 letters/digits of the pod name (so `ip link` and `ovs-vsctl
    show` hint at the pod), then `-` and 8 hex digits of SHA-256 of `namespace/name` (so pods
    with the same name prefix, or the same name in two namespaces, get different ports). The
    name depends on the pod, not on the sandbox's container id, so a restarted agent finds the
    port from the Pod alone; the container id is kept in `external_ids`. A 32-bit hash collision
    between two pods of one node (~1e-5 with 250 pods) shows as an existing port with another
    pod's identity, which the agent must refuse rather than take over.
    Raises ValueError for an empty namespace or name.
    """
    if not namespace or not name:
        raise ValueError("a pod needs a namespace and a name to derive its port name")
    prefix = _NOT_IFNAME_CHAR.sub("", name.lower())[:_PREFIX_LEN] or "pod"
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_HASH_LEN]
    return f"{prefix}-{digest}"


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who an OVS port belongs to, as stored (keys prefixed `sluice.io/`) in its `external_ids`."""

    namespace: str
    name: str
    uid: str
    container_id: str
    ifname: str
    ip: ipaddress.IPv4Interface
    netns: str

    @property
    def mac(self) -> str:
        """The pod interface's MAC, derived from its IP."""
        return mac_for_ip(self.ip.ip)

    @property
    def port_name(self) -> str:
        """The pod's OVS port name."""
        return port_name(self.namespace, self.name)

    def external_ids(self) -> dict[str, str]:
        """Return the identity as `sluice.io/` external_ids."""
        return {
            Key.NAMESPACE.value: self.namespace,
            Key.NAME.value: self.name,
            Key.UID.value: self.uid,
            Key.CONTAINER_ID.value: self.container_id,
            Key.IFNAME.value: self.ifname,
            Key.IP.value: str(self.ip),
            Key.MAC.value: self.mac,
            Key.NETNS.value: self.netns,
        }

    @classmethod
    def from_external_ids(cls, ids: Mapping[str, str]) -> PodIdentity:
        """Parse the identity back from `external_ids`; raises ValueError naming a missing or bad key."""
        try:
            values = {
                "namespace": ids[Key.NAMESPACE],
                "name": ids[Key.NAME],
                "uid": ids[Key.UID],
                "container_id": ids[Key.CONTAINER_ID],
                "ifname": ids[Key.IFNAME],
                "netns": ids[Key.NETNS],
            }
        except KeyError as exc:
            raise ValueError(f"external_ids lack {exc.args[0]}") from None
        try:
            ip = ipaddress.IPv4Interface(ids[Key.IP])
        except KeyError:
            raise ValueError(f"external_ids lack {Key.IP}") from None
        except ValueError as exc:
            raise ValueError(f"external_ids {Key.IP}: {exc}") from None
        return cls(ip=ip, **values)
