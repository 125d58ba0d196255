"""IP address management for a node's podCIDR, one durable file per allocated address.

Store layout (under `store_dir`)::

    range                 JSON {"version": 1, "cidr": "100.64.1.0/24"}: the range this store serves
    lock                  flock(2) target for the whole store; its content is a cache hint (below)
    allocations/<ip>      one file per allocated address, name = canonical IP text, content = JSON
                          {"version", "ip", "container_id", "ifname", "pod_namespace", "pod_name",
                          "pod_uid", "netns"} ("netns", the sandbox's namespace path, may be
                          absent: records of agents before it was added)
    allocations/.tmp.*    a write in progress, or left by a crash; removed under the lock

Crash safety. A record is written to a temporary file, fsync'ed, then hard-linked to its final name
(`link(2)` fails with EEXIST when the name exists: O_CREAT|O_EXCL semantics, so two writers can never
both own one address, even across processes), the temporary name is unlinked and the directory is
fsync'ed, and only then is the allocation returned. A record file therefore never appears with
partial content. A crash before the link leaves only a temporary file (ignored, then removed: the
address was never handed out); a crash after it leaves a complete record, perhaps for an allocation
the caller never received, which a retried ADD for the same attachment gets back (allocation is
idempotent per attachment) and which `reconcile` frees if the attachment is gone. A release unlinks
the record and fsyncs the directory before returning; a crash before that fsync can only bring the
record back (a leak that `reconcile` fixes), never lose one. Nothing is ever double-allocated.
`update` replaces a record by renaming a complete fsync'ed file over it, so a crash leaves the old
record or the new one.

Concurrency. Every operation holds a threading lock (threads sharing one `Ipam`) and an exclusive
flock on `lock` (other `Ipam` objects in this or other processes). Each object caches the records;
every mutation first bumps a generation number kept in the lock file, and an object whose cached
generation differs re-reads the directory, so caches are coherent without reading every record on
every call. The lock file content (generation and the last reserved address, for rotation) is only a
hint: it is not fsync'ed, and when it is unreadable the store is simply re-read.

Corrupt records. A record that cannot be read or parsed (or whose address differs from its file
name) is logged at WARNING and kept as an allocation with an unknown owner (`Allocation.owner is
None`): the address is never silently reused, `lookup`/`release` by attachment do not match it, and
`reconcile` frees it (its owner cannot be live) as do `release_ip` and GC. Files in `allocations/`
whose names are not canonical IP addresses are logged and ignored.

podCIDR change. Opening a store whose `range` differs from the requested CIDR raises
`PodCidrChanged` while any allocation exists; an empty store adopts the new range.

Only IPv4 ranges are served today. The types (`IPAddress`, `IPNetwork`) and the store format (file
name = canonical address text) already cover IPv6; adding it needs the reserved-address rules and a
next-free search that does not walk a /64.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ovsagent.durable import TMP_PREFIX, fsync_dir, makedirs_durable, temp_path, write_atomic, write_synced

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

RECORD_VERSION = 1
RANGE_FILE = "range"
LOCK_FILE = "lock"
ALLOCATIONS_DIR = "allocations"
# The smallest IPv4 range with one pod address: network, gateway, pod, broadcast.
MAX_IPV4_PREFIX = 30
_MAX_RECORD_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Attachment:
    """The identity of one CNI attachment (what ADD, DEL and GC name): container id and ifname."""

    container_id: str
    ifname: str

    def __str__(self) -> str:
        return f"{self.container_id}/{self.ifname}"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds an address: the attachment (the key) plus the pod it belongs to, and the
    sandbox's network namespace (what restoring a pod whose OVS port was lost needs)."""

    container_id: str
    ifname: str
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    netns: str = ""

    @property
    def attachment(self) -> Attachment:
        """Return the attachment identity, the key allocations are looked up by."""
        return Attachment(self.container_id, self.ifname)

    def __str__(self) -> str:
        pod = f" (pod {self.pod_namespace}/{self.pod_name})" if self.pod_name else ""
        return f"{self.container_id}/{self.ifname}{pod}"


@dataclass(frozen=True, slots=True)
class Allocation:
    """One allocated address with its range, gateway and owner (None when the record is corrupt)."""

    ip: IPAddress
    network: IPNetwork
    gateway: IPAddress
    owner: Owner | None

    @property
    def attachment(self) -> Attachment | None:
        """Return the owner's attachment identity, or None for a corrupt record."""
        return None if self.owner is None else self.owner.attachment

    @property
    def interface(self) -> IPInterface:
        """Return the address with the range's prefix length, e.g. 100.64.1.5/24."""
        return ipaddress.ip_interface(f"{self.ip}/{self.network.prefixlen}")


# --------------------------------------------------------------------------------------------- errors


class IpamError(Exception):
    """Base of every IPAM error; the message says what and why."""


class InvalidRange(IpamError):
    """The CIDR given for the store is malformed or not one this IPAM serves."""


class StoreError(IpamError):
    """The store directory cannot be used (permissions, disk full, I/O error)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"IPAM store {path}: {reason}")
        self.path = path
        self.reason = reason


class PodCidrChanged(IpamError):
    """The store holds allocations from a different podCIDR than the one requested."""

    def __init__(self, store_dir: Path, stored: str, requested: IPNetwork, count: int) -> None:
        super().__init__(
            f"IPAM store {store_dir} serves podCIDR {stored} and holds {count} allocation(s), but "
            f"the node's podCIDR is now {requested}; drain the node's pods (or remove the store "
            "once no pod uses it) before changing the podCIDR"
        )
        self.store_dir = store_dir
        self.stored = stored
        self.requested = requested
        self.count = count


class RangeExhausted(IpamError):
    """Every usable address of the range is allocated."""

    def __init__(self, network: IPNetwork, usable: int) -> None:
        super().__init__(f"no free address in podCIDR {network}: all {usable} usable addresses are allocated")
        self.network = network


class InvalidOwner(IpamError):
    """The owner has an empty container id or ifname."""


class InvalidIp(IpamError):
    """A requested address is not an IP address."""

    def __init__(self, ip: str, reason: str) -> None:
        super().__init__(f"requested IP {ip!r} is invalid: {reason}")
        self.ip = ip
        self.reason = reason


class StaticIpRefused(IpamError):
    """A specific address was requested (CNI `ips` capability or CNI_ARGS IP=) and cannot be given."""

    def __init__(self, ip: str, reason: str) -> None:
        super().__init__(f"requested IP {ip} refused: {reason}")
        self.ip = ip
        self.reason = reason


class IpNotInRange(StaticIpRefused):
    """The requested address is outside the node's podCIDR."""


class IpReserved(StaticIpRefused):
    """The requested address is the network, gateway or broadcast address."""


class IpInUse(StaticIpRefused):
    """The requested address is allocated to another attachment."""

    def __init__(self, ip: str, reason: str, holder: Owner | None) -> None:
        super().__init__(ip, reason)
        self.holder = holder


class AttachmentHoldsOtherIp(StaticIpRefused):
    """The attachment already holds a different address than the one requested."""


# ----------------------------------------------------------------------------------------------- IPAM


@dataclass(frozen=True, slots=True)
class _LockState:
    generation: int | None
    last_reserved: IPAddress | None


class Ipam:
    """Allocates addresses of one podCIDR to CNI attachments, durably, in a store directory.

    Safe for threads sharing one object and for several objects (in one or several processes) on the
    same store. After `os.fork()`, the child reopens its lock on first use.
    """

    def __init__(self, store_dir: str | os.PathLike[str], cidr: str | IPNetwork) -> None:
        """Open (creating if needed) the store for `cidr`.

        Raises InvalidRange for a bad or unsupported CIDR, PodCidrChanged when the store holds
        allocations of another CIDR, StoreError when the directory cannot be used.
        """
        self._network = _parse_range(cidr)
        net_int = int(self._network.network_address)
        self._addr_type = type(self._network.network_address)
        self._gateway = self._addr_type(net_int + 1)
        self._first = net_int + 2
        self._last = int(self._network.broadcast_address) - 1
        self._dir = Path(store_dir)
        self._alloc_dir = self._dir / ALLOCATIONS_DIR
        self._records: dict[IPAddress, Allocation] = {}
        self._generation: int | None = None
        self._last_reserved: IPAddress | None = None
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        try:
            makedirs_durable(self._alloc_dir)
            self._lock_fd: int | None = self._open_lock()
        except OSError as exc:
            raise StoreError(self._dir, f"cannot create or open: {exc.strerror or exc}") from exc
        try:
            with self._locked():
                self._check_range()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------- public

    @property
    def network(self) -> IPNetwork:
        """Return the podCIDR this store serves."""
        return self._network

    @property
    def gateway(self) -> IPAddress:
        """Return the gateway address (the first usable address of the range, never allocated)."""
        return self._gateway

    @property
    def store_dir(self) -> Path:
        """Return the store directory."""
        return self._dir

    @property
    def usable(self) -> int:
        """Return how many addresses pods can get (range minus network, gateway and broadcast)."""
        return self._last - self._first + 1

    def allocate(self, owner: Owner, requested_ip: str | IPAddress | None = None) -> Allocation:
        """Allocate an address to `owner` (the next free one, or `requested_ip`) and return it.

        The allocation is durable before this returns. When the attachment already holds an
        address, that allocation is returned unchanged (a retried ADD). `requested_ip` may carry a
        prefix length (`100.64.1.5/24`, as the `ips` capability sends it), which must match the range.

        Raises InvalidOwner, InvalidIp, IpNotInRange, IpReserved, IpInUse, AttachmentHoldsOtherIp
        (all but the first two are StaticIpRefused), RangeExhausted, StoreError.
        """
        if not owner.container_id or not owner.ifname:
            raise InvalidOwner(f"owner needs a container id and an ifname, got {owner!r}")
        wanted = None if requested_ip is None else self._check_request(requested_ip)
        with self._locked():
            existing = self._find(owner.attachment)
            if existing:
                if wanted is not None and existing[0].ip != wanted:
                    raise AttachmentHoldsOtherIp(
                        str(wanted), f"attachment {owner.attachment} already holds {existing[0].ip}"
                    )
                log.debug("attachment %s already holds %s", owner.attachment, existing[0].ip)
                return existing[0]
            if wanted is not None:
                return self._allocate_static(owner, wanted)
            for candidate in self._candidates():
                if candidate in self._records:
                    continue
                allocation = self._create(candidate, owner)
                if allocation is not None:
                    self._note_reserved(candidate)
                    log.info("allocated %s to %s", candidate, owner)
                    return allocation
            raise RangeExhausted(self._network, self.usable)

    def release(self, who: Owner | Attachment) -> list[Allocation]:
        """Free what the attachment holds and return it (empty when it held nothing: not an error)."""
        key = who.attachment if isinstance(who, Owner) else who
        with self._locked():
            victims = self._find(key)
            self._remove(victims)
        for allocation in victims:
            log.info("released %s from %s", allocation.ip, key)
        return victims

    def release_ip(self, ip: str | IPAddress) -> Allocation | None:
        """Free `ip` whoever holds it (corrupt records too); return what was freed, or None.

        Raises InvalidIp when `ip` is not an address.
        """
        address = _parse_ip(ip)
        with self._locked():
            victim = self._records.get(address)
            if victim is None:
                return None
            self._remove([victim])
        log.info("released %s (held by %s)", address, victim.owner or "an unknown owner")
        return victim

    def update(self, owner: Owner) -> Allocation | None:
        """Rewrite the record of `owner`'s attachment to name `owner` (e.g. with the netns, which
        records of earlier agents lack); return the allocation, None when it holds no address.

        The record is replaced atomically (temporary file, fsync, rename, fsync of the directory).
        Raises StoreError.
        """
        with self._locked():
            found = self._find(owner.attachment)
            if not found:
                return None
            current = found[0]
            if current.owner == owner:
                return current
            path = self._alloc_dir / str(current.ip)
            try:
                self._bump()
                write_atomic(path, _record(current.ip, owner))
            except OSError as exc:
                self._generation = None
                raise StoreError(path, f"cannot rewrite the record: {exc.strerror or exc}") from exc
            updated = Allocation(current.ip, self._network, self._gateway, owner)
            self._records[current.ip] = updated
        log.info("record of %s now names %s", current.ip, owner)
        return updated

    def lookup(self, who: Owner | Attachment) -> Allocation | None:
        """Return the attachment's allocation, or None when it holds none."""
        key = who.attachment if isinstance(who, Owner) else who
        with self._locked():
            found = self._find(key)
        return found[0] if found else None

    def count(self) -> int:
        """Return how many addresses are allocated (corrupt records included). Raises IpamError."""
        with self._locked():
            return len(self._records)

    def allocations(self) -> list[Allocation]:
        """Return every allocation on disk (corrupt records included), sorted by address."""
        with self._locked():
            return sorted(self._records.values(), key=lambda a: a.ip)

    def reconcile(self, live: Iterable[Owner | Attachment]) -> list[Allocation]:
        """Free every allocation whose attachment is not in `live` (and every corrupt record).

        Used for restart reconciliation and CNI GC. Returns what was freed, sorted by address.
        """
        keep = {w.attachment if isinstance(w, Owner) else w for w in live}
        with self._locked():
            victims = sorted(
                (a for a in self._records.values() if a.attachment is None or a.attachment not in keep),
                key=lambda a: a.ip,
            )
            self._remove(victims)
        if victims:
            log.info(
                "reconcile freed %d address(es): %s",
                len(victims),
                ", ".join(f"{a.ip} ({a.owner or 'unknown owner'})" for a in victims),
            )
        return victims

    def close(self) -> None:
        """Close the store's lock file; the object must not be used afterwards."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ipam:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- locking/cache

    def _open_lock(self) -> int:
        return os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if os.getpid() != self._pid:
            # A forked child shares the parent's open file description, hence its flock: take
            # our own, and a fresh mutex (the parent's could have been held at fork time).
            self._pid = os.getpid()
            self._mutex = threading.Lock()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = self._open_lock()
            self._generation = None
        with self._mutex:
            fd = self._lock_fd
            if fd is None:
                raise IpamError(f"IPAM store {self._dir} is closed")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                state = self._read_lock_state(fd)
                if state.generation is None or state.generation != self._generation:
                    self._reload()
                    self._generation = state.generation
                if state.last_reserved is not None:
                    self._last_reserved = state.last_reserved
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _read_lock_state(self, fd: int) -> _LockState:
        try:
            words = os.pread(fd, 128, 0).decode("ascii").split()
            generation = int(words[0])
            last = ipaddress.ip_address(words[1]) if len(words) > 1 and words[1] != "-" else None
            return _LockState(generation, last)
        except (OSError, ValueError, IndexError):
            return _LockState(None, None)

    def _write_lock_state(self) -> None:
        # Not fsync'ed: a hint that keeps caches coherent and rotation going; see the docstring.
        assert self._lock_fd is not None
        last = "-" if self._last_reserved is None else str(self._last_reserved)
        data = f"{self._generation or 0} {last}\n".encode("ascii")
        os.pwrite(self._lock_fd, data, 0)
        os.ftruncate(self._lock_fd, len(data))

    def _bump(self) -> None:
        """Announce a mutation before touching the disk, so other objects re-read the store."""
        self._generation = (self._generation or 0) + 1
        self._write_lock_state()

    def _note_reserved(self, ip: IPAddress) -> None:
        self._last_reserved = ip
        with contextlib.suppress(OSError):
            self._write_lock_state()

    def _reload(self) -> None:
        records: dict[IPAddress, Allocation] = {}
        removed_tmp = False
        try:
            entries = list(os.scandir(self._alloc_dir))
        except OSError as exc:
            raise StoreError(self._alloc_dir, f"cannot list: {exc.strerror or exc}") from exc
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(TMP_PREFIX):
                # Only writers holding the lock (which we hold) create these: this one is left by a
                # crash between creating the temporary file and linking it, so it was never handed out.
                log.info("removing %s, left by an interrupted write", path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed_tmp = True
                continue
            try:
                ip = ipaddress.ip_address(entry.name)
            except ValueError:
                log.warning("ignoring %s: not an IPAM record (name is not an IP address)", path)
                continue
            if str(ip) != entry.name:
                log.warning("ignoring %s: not an IPAM record (name is not a canonical address)", path)
                continue
            records[ip] = self._read_record(ip, path)
        if removed_tmp:
            with contextlib.suppress(OSError):
                fsync_dir(self._alloc_dir)
        self._records = records

    def _read_record(self, ip: IPAddress, path: Path) -> Allocation:
        try:
            with open(path, "rb") as f:
                owner = _owner_from_record(json.loads(f.read(_MAX_RECORD_BYTES)), ip)
        except (OSError, ValueError) as exc:
            log.warning(
                "IPAM record %s is unreadable (%s): %s stays allocated to an unknown owner until "
                "reconcile or release_ip frees it",
                path,
                exc,
                ip,
            )
            owner = None
        return Allocation(ip, self._network, self._gateway, owner)

    # ---------------------------------------------------------------------------------- mutations

    def _check_range(self) -> None:
        for leftover in self._dir.glob(f"{TMP_PREFIX}*"):
            log.info("removing %s, left by an interrupted write", leftover)
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        path = self._dir / RANGE_FILE
        stored: str | None = None
        try:
            doc = json.loads(path.read_bytes())
            stored = str(ipaddress.ip_network(doc["cidr"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("IPAM range file %s is unreadable (%s)", path, exc)
            stored = "unknown"
        if stored == str(self._network):
            return
        outside = [ip for ip in self._records if ip not in self._network]
        # A missing or unreadable range file is rewritten when every record fits the requested range.
        if outside or (stored not in (None, "unknown") and self._records):
            raise PodCidrChanged(self._dir, stored or "unknown", self._network, len(self._records))
        if stored is not None:
            log.info(
                "IPAM store %s: range %s replaced by %s (no allocation held)",
                self._dir,
                stored,
                self._network,
            )
        payload = json.dumps({"version": RECORD_VERSION, "cidr": str(self._network)}).encode()
        try:
            write_atomic(path, payload)
        except OSError as exc:
            raise StoreError(path, f"cannot write: {exc.strerror or exc}") from exc

    def _allocate_static(self, owner: Owner, wanted: IPAddress) -> Allocation:
        holder = self._records.get(wanted)
        if holder is None:
            allocation = self._create(wanted, owner)
            if allocation is not None:
                self._note_reserved(wanted)
                log.info("allocated requested %s to %s", wanted, owner)
                return allocation
            holder = self._records[wanted]
        who = holder.owner or "an owner whose record is unreadable"
        raise IpInUse(str(wanted), f"already allocated to {who}", holder.owner)

    def _create(self, ip: IPAddress, owner: Owner) -> Allocation | None:
        """Durably create the record for `ip`; return None (and cache the holder) if it exists."""
        final = self._alloc_dir / str(ip)
        tmp = temp_path(final)
        try:
            self._bump()
            write_synced(tmp, _record(ip, owner))
            try:
                os.link(tmp, final)
            except FileExistsError:
                # Only a file created behind our back (the lock keeps caches coherent): respect it.
                log.warning("%s exists but was not in the cache; keeping it", final)
                self._records[ip] = self._read_record(ip, final)
                return None
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            fsync_dir(self._alloc_dir)
        except OSError as exc:
            self._generation = None  # the disk is in an unknown state: re-read it next time
            raise StoreError(final, f"cannot record the allocation: {exc.strerror or exc}") from exc
        allocation = Allocation(ip, self._network, self._gateway, owner)
        self._records[ip] = allocation
        return allocation

    def _remove(self, victims: list[Allocation]) -> None:
        if not victims:
            return
        try:
            self._bump()
            for allocation in victims:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._alloc_dir / str(allocation.ip))
                del self._records[allocation.ip]
            fsync_dir(self._alloc_dir)
        except OSError as exc:
            self._generation = None
            raise StoreError(self._alloc_dir, f"cannot remove a record: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------------------------ helpers

    def _find(self, key: Attachment) -> list[Allocation]:
        return sorted((a for a in self._records.values() if a.attachment == key), key=lambda a: a.ip)

    def _candidates(self) -> Iterator[IPAddress]:
        """Yield every usable address, starting after the last reserved one (as host-local does)."""
        size = self._last - self._first + 1
        start = self._first
        if self._last_reserved is not None and self._last_reserved in self._network:
            last = int(self._last_reserved)
            if self._first <= last <= self._last:
                start = last + 1
        for i in range(size):
            yield self._addr_type(self._first + (start - self._first + i) % size)

    def _check_request(self, requested: str | IPAddress) -> IPAddress:
        text = str(requested).strip()
        ip: IPAddress
        if "/" in text:
            try:
                iface = ipaddress.ip_interface(text)
            except ValueError as exc:
                raise InvalidIp(text, str(exc)) from exc
            ip = iface.ip
            if ip in self._network and iface.network.prefixlen != self._network.prefixlen:
                raise StaticIpRefused(
                    text, f"prefix length /{iface.network.prefixlen} differs from podCIDR {self._network}"
                )
        else:
            ip = _parse_ip(text)
        if ip.version != self._network.version or ip not in self._network:
            raise IpNotInRange(str(ip), f"not in the node's podCIDR {self._network}")
        if ip == self._network.network_address:
            raise IpReserved(str(ip), f"it is the network address of {self._network}")
        if ip == self._gateway:
            raise IpReserved(str(ip), f"it is the gateway address of {self._network}")
        if ip == self._network.broadcast_address:
            raise IpReserved(str(ip), f"it is the broadcast address of {self._network}")
        return ip


# ---------------------------------------------------------------------------------------- functions


def _parse_range(cidr: str | IPNetwork) -> IPNetwork:
    try:
        network = ipaddress.ip_network(cidr, strict=True) if isinstance(cidr, str) else cidr
    except ValueError as exc:
        raise InvalidRange(f"podCIDR {cidr!r} is invalid: {exc}") from exc
    if network.version != 4:
        raise InvalidRange(f"podCIDR {network}: only IPv4 ranges are supported")
    if network.prefixlen > MAX_IPV4_PREFIX:
        raise InvalidRange(
            f"podCIDR {network} is too small: it needs a network, gateway, pod and broadcast "
            f"address (/{MAX_IPV4_PREFIX} at most)"
        )
    return network


def _parse_ip(ip: str | IPAddress) -> IPAddress:
    if not isinstance(ip, str):
        return ip
    try:
        return ipaddress.ip_address(ip.strip())
    except ValueError as exc:
        raise InvalidIp(ip, "not an IP address") from exc


def _record(ip: IPAddress, owner: Owner) -> bytes:
    """The content of the record of `ip` held by `owner`."""
    doc = {
        "version": RECORD_VERSION,
        "ip": str(ip),
        "container_id": owner.container_id,
        "ifname": owner.ifname,
        "pod_namespace": owner.pod_namespace,
        "pod_name": owner.pod_name,
        "pod_uid": owner.pod_uid,
        "netns": owner.netns,
    }
    return json.dumps(doc, sort_keys=True).encode()


def _owner_from_record(doc: object, ip: IPAddress) -> Owner:
    """Return the owner stored in a parsed record; raise ValueError when it is not a valid record."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("version") != RECORD_VERSION:
        raise ValueError(f"unknown record version {doc.get('version')!r}")
    if doc.get("ip") != str(ip):
        raise ValueError(f"records address {doc.get('ip')!r}, not {ip}")
    values: dict[str, str] = {}
    for key in ("container_id", "ifname", "pod_namespace", "pod_name", "pod_uid", "netns"):
        value = doc.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"{key} is not a string")
        values[key] = value
    if not values["container_id"] or not values["ifname"]:
        raise ValueError("container_id or ifname is empty")
    return Owner(**values)
