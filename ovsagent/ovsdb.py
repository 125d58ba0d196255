"""The agent's one door to OVSDB: a python-ovs IDL replica driven by its own thread, and batched transactions.

Design (after ovsdbapp's `Connection`, smaller). One daemon thread owns the `ovs.db.idl.Idl`: it
blocks in an `ovs.poller.Poller` on the IDL's socket and on a wake-up pipe, calls `Idl.run()`, and
runs the jobs other threads hand it. No other thread touches the IDL, so no lock guards the
replica. A job either reads the replica and returns plain values (`PortRecord`, ...), or builds
and commits one transaction (`Transaction.commit_block()`, retried on TRY_AGAIN, the status OVSDB
returns when a `verify` failed or the connection dropped mid-commit). Callers wait on a Future.

Writes that need ovs-vswitchd to act (a new port needs an ofport) increment `Open_vSwitch.next_cfg`
in the same transaction, as `ovs-vsctl` does, and the caller then waits until vswitchd reports
`cur_cfg >= next_cfg`. That wait (about 30 ms on the userspace datapath) is paid once per
transaction, not per port: `add_pod_ports` and `del_ports` put any number of ports in one
transaction, and concurrent `add_ports` and `del_ports` calls (parallel CNI ADDs and DELs)
share one: each queues its request and the IDL thread commits everything queued by then
together (a group commit), so 20 pods added at once cost a few transactions and vswitchd
reconfigurations, not 20 in a row. The
wait is a predicate the IDL thread re-checks after every update, so the thread keeps serving
other callers meanwhile.

Only the tables and columns used here are replicated (SchemaHelper.register_columns). The schema
is fetched from the server (`get_schema`), so it always matches the running ovsdb-server; if the
server is not reachable yet, the installed vswitch.ovsschema is used and the IDL keeps
reconnecting in the background.

python-ovs logs through its own `ovs.vlog.Vlog`, which stays silent until `Vlog.init()` takes over
the process's logging; like Neutron, `Connection.start()` routes those messages to the
`ovsagent.ovsdb.ovs` logger instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import ovs.db.idl
import ovs.json
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.vlog

from ovsagent.config import OFPORT_MAX

log = logging.getLogger(__name__)
_ovs_log = logging.getLogger(__name__ + ".ovs")

T = TypeVar("T")
OVS_DEBUG = logging.DEBUG - 5
#: The key of `Connection._port_bridges`'s map among the replica's derived lookups (tables have
#: their own names there).
_PORT_BRIDGES = "port -> bridge"

DEFAULT_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
DB_NAME = "Open_vSwitch"

# The tables and columns the agent reads or writes; nothing else is replicated.
COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg", "external_ids"],
    "Bridge": [
        "name",
        "ports",
        "controller",
        "fail_mode",
        "protocols",
        "datapath_type",
        "datapath_id",
        "other_config",
        "external_ids",
    ],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": [
        "name",
        "type",
        "options",
        "ofport",
        "ofport_request",
        "mac",
        "error",
        "external_ids",
    ],
    "Controller": ["target", "inactivity_probe", "max_backoff", "connection_mode", "is_connected"],
}

TUNNEL_PORT = "sluice-tun0"
TUNNEL_OFPORT = 10


class OvsdbError(Exception):
    """An OVSDB operation failed; the message says which and why (the server's error if any)."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A port to create (or bring up to date) on a bridge: one Interface of the same name.

    `type` is the Interface type: "" for an existing Linux device such as a veth end, "internal"
    for a device OVS creates. `mac` applies to internal ports only (OVS sets the device's MAC).
    Raises ValueError for an `ofport_request` outside OpenFlow's port range (python-ovs would
    log the bad value and leave the column unset, so the port would get any ofport).
    """

    name: str
    type: str = ""
    ofport_request: int | None = None
    mac: str | None = None
    external_ids: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ofport_request is not None and not 1 <= self.ofport_request <= OFPORT_MAX:
            raise ValueError(
                f"port {self.name}: ofport_request {self.ofport_request} is not in 1-{OFPORT_MAX}"
            )


@dataclass(frozen=True, slots=True)
class PortRecord:
    """A port as OVSDB has it: its bridge, its interface's type, ofport (None until assigned,
    -1 when vswitchd failed to open it, with `error` saying why) and external_ids."""

    name: str
    bridge: str | None
    type: str
    ofport: int | None
    external_ids: Mapping[str, str]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BridgeRecord:
    """A bridge's settings as OVSDB has them."""

    name: str
    datapath_type: str
    fail_mode: str | None
    protocols: tuple[str, ...]
    datapath_id: str | None
    controllers: tuple[str, ...]
    external_ids: Mapping[str, str]
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Waiter:
    """A caller blocked until `predicate()` holds on the replica; its future then gets `result()`
    (both run on the IDL thread). A waiter whose future is already done (its caller gave up) is
    dropped at the next check."""

    predicate: Callable[[], bool]
    future: Future[Any]
    result: Callable[[], Any] = lambda: None


@dataclass(slots=True)
class _PortChange:
    """One caller's `add_ports` (a bridge and port specs) or `del_ports` (port names), queued to
    share a transaction with the others pending at the time.

    The IDL thread takes it from commit to vswitchd's answer: its future gets the ports'
    ofports (an add) or the names deleted (a deletion), or the error. `stage` says how far it
    got (for a timeout's message)."""

    bridge: str | None  # None: a deletion
    specs: Sequence[PortSpec]
    deletes: Sequence[str]
    future: Future[Any]
    deadline: float
    stage: str = "queued"  # "held" while vswitchd catches up, then "committed"
    deleted: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        """The ports this change touches."""
        return {s.name for s in self.specs} | set(self.deletes)

    def describe(self) -> str:
        """What it does, for messages."""
        if self.bridge is None:
            return f"delete ports {list(self.deletes)}"
        return f"add ports {[s.name for s in self.specs]} to {self.bridge}"


def route_python_ovs_logging() -> None:
    """Send python-ovs's vlog messages to the `ovsagent.ovsdb.ovs` logger (idempotent)."""

    def emit(level: int) -> Callable[..., None]:
        def log_message(_self: object, message: str, **_kwargs: Any) -> None:
            _ovs_log.log(level, "%s", message)

        return log_message

    vlog = ovs.vlog.Vlog
    vlog.emer = emit(logging.CRITICAL)
    vlog.err = emit(logging.ERROR)
    vlog.warn = emit(logging.WARNING)
    vlog.info = emit(logging.INFO)
    # python-ovs logs every poll wake-up at debug level: keep that below our own DEBUG.
    vlog.dbg = emit(OVS_DEBUG)


def fetch_schema(target: str, timeout: float) -> dict[str, Any]:
    """Return the Open_vSwitch schema JSON served at `target`; raises OvsdbError if it cannot."""
    deadline = time.monotonic() + timeout
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(target), int(timeout * 1000))
    if error:
        raise OvsdbError(f"cannot connect to OVSDB at {target}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [DB_NAME])
        error = rpc.send(request)
        while True:
            if error:
                raise OvsdbError(f"get_schema from {target} failed: {os.strerror(error)}")
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                if time.monotonic() > deadline:
                    raise OvsdbError(f"get_schema from {target}: no answer within {timeout}s")
                poller = ovs.poller.Poller()
                rpc.run()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait(50)
                poller.block()
                error = 0
                continue
            if error:
                continue
            if reply.id != request.id:
                continue
            if reply.error:
                raise OvsdbError(f"get_schema from {target}: {reply.error}")
            result: dict[str, Any] = reply.result
            return result
    finally:
        rpc.close()


class Connection:
    """A replica of the local Open_vSwitch database and the agent's OVSDB operations.

    `Connection(target).start()` connects, replicates the tables in COLUMNS and returns once the
    replica is in sync (raises OvsdbError after `timeout`). Every public method is thread-safe.
    `close()` stops the thread.
    """

    def __init__(self, target: str, *, timeout: float = 10.0, schema_path: Path = DEFAULT_SCHEMA) -> None:
        """Describe a connection to `target` (e.g. `unix:/var/run/openvswitch/db.sock`); nothing
        connects until `start()`. `timeout` bounds every operation unless it takes its own."""
        self.target = target
        self.timeout = timeout
        self._schema_path = schema_path
        self._idl: ovs.db.idl.Idl | None = None
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._jobs_lock = threading.Lock()
        self._port_changes: list[_PortChange] = []  # port adds and deletions awaiting a transaction
        self._holding = False  # port changes are held until vswitchd catches up (IDL thread only)
        self._waiters: list[_Waiter] = []
        # Lookups computed from the replica as of IDL change `_derived_seqno` (IDL thread only):
        # row uuids by name per table (`_named`), bridge by port name (`_port_bridges`)
        self._derived: dict[str, dict[str, Any]] = {}
        self._derived_seqno = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._running = False

    # ------------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> Connection:
        """Connect and wait until the replica is in sync; return self. Raises OvsdbError."""
        if self._thread is not None:
            return self
        route_python_ovs_logging()
        try:
            schema_json = fetch_schema(self.target, min(self.timeout, 5.0))
        except OvsdbError as exc:
            if not self._schema_path.exists():
                raise
            log.warning("%s; using %s until the server answers", exc, self._schema_path)
            schema_json = ovs.json.from_file(str(self._schema_path))
        helper = ovs.db.idl.SchemaHelper(schema_json=schema_json)
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        self._idl = ovs.db.idl.Idl(self.target, helper)
        self._forget_derived()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = True
        self._holding = False
        self._thread = threading.Thread(target=self._loop, name=f"ovsdb {self.target}", daemon=True)
        self._thread.start()
        try:
            self.wait_synced(self.timeout)
        except OvsdbError:
            self.close()
            raise
        log.info("connected to OVSDB at %s", self.target)
        return self

    def close(self) -> None:
        """Stop the IDL thread and close the connection (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        self._running = False
        self._wake()
        thread.join(timeout=5.0)
        self._thread = None
        if self._idl is not None:
            self._idl.close()
            self._idl = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Connection:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_synced(self, timeout: float | None = None) -> None:
        """Return once the replica holds the database's contents; raises OvsdbError on timeout."""
        self._wait(
            lambda: self._ready_idl().has_ever_connected(),
            timeout,
            f"no OVSDB replica from {self.target}",
        )

    def is_connected(self) -> bool:
        """Return True while the IDL has a live, synced session to ovsdb-server."""
        return bool(self._call(lambda: self._ready_idl()._session.is_connected(), None))

    # ------------------------------------------------------------------------------------------
    # Reads

    def bridge(self, name: str) -> BridgeRecord | None:
        """Return bridge `name` as OVSDB has it, or None."""
        return self._call(lambda: self._bridge_record(name), None)

    def port(self, name: str) -> PortRecord | None:
        """Return port `name` (with its interface of the same name), or None."""
        return self._call(lambda: self._port_record(name), None)

    def interface_names(self) -> set[str]:
        """Return the name of every Interface in OVSDB, on any bridge."""
        return self._call(lambda: {str(iface.name) for iface in self._rows("Interface")}, None)

    def ports_by_external_ids(self, prefix: str = "sluice.io/") -> list[PortRecord]:
        """Return every port whose interface has an external_ids key starting with `prefix`.

        This is how a restarted agent finds the pods it plumbed: the identity lives in OVSDB.
        """

        def job() -> list[PortRecord]:
            out = []
            for iface in self._rows("Interface"):
                if any(k.startswith(prefix) for k in iface.external_ids):
                    record = self._port_record(iface.name)
                    if record is not None:
                        out.append(record)
            return sorted(out, key=lambda r: r.name)

        return self._call(job, None)

    def wait_for_ofport(self, name: str, timeout: float | None = None) -> int:
        """Return the ofport of interface `name` once vswitchd has assigned one.

        Raises OvsdbError if the interface is missing or vswitchd failed to open it (ofport -1,
        with the Interface's `error`), or on timeout.
        """
        self._wait(
            lambda: (r := self._interface(name)) is not None and _ofport(r) is not None,
            timeout,
            f"interface {name} got no ofport",
        )
        record = self.port(name)
        if record is None or record.ofport is None:
            raise OvsdbError(f"interface {name} disappeared while waiting for its ofport")
        if record.ofport < 0:
            raise OvsdbError(f"ovs-vswitchd cannot open interface {name}: {record.error or 'unknown'}")
        return record.ofport

    # ------------------------------------------------------------------------------------------
    # Bridge and node ports

    def ensure_bridge(
        self,
        name: str,
        *,
        datapath_type: str = "system",
        fail_mode: str = "secure",
        protocols: Sequence[str] = ("OpenFlow13", "OpenFlow14", "OpenFlow15"),
        datapath_id: str | None = None,
        controllers: Sequence[str] = (),
        inactivity_probe_ms: int | None = None,
        max_backoff_ms: int | None = None,
        external_ids: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Create bridge `name` or bring it to these settings, touching only what differs.

        Returns True if anything was written. Settings already right are not rewritten: a
        rewritten controller or fail_mode disturbs the OpenFlow connection, and a bridge going
        from no controller to some (or back) has its flows flushed by ovs-vswitchd
        (bridge_configure_remotes), so controllers are set in the bridge's creating transaction.
        `inactivity_probe_ms` and `max_backoff_ms` are set on every Controller row (None: the OVS
        default). `datapath_id` is 16 hex digits; `external_ids` keys are merged (others are kept).
        Raises OvsdbError, ValueError for bad arguments.
        """
        if datapath_id is not None and (
            len(datapath_id) != 16 or any(c not in "0123456789abcdef" for c in datapath_id.lower())
        ):
            raise ValueError(f"datapath_id {datapath_id!r} must be 16 hex digits")
        if not protocols:
            raise ValueError("ensure_bridge needs at least one OpenFlow protocol")
        wanted_ids = dict(external_ids or {})

        def build(txn: ovs.db.idl.Transaction) -> bool:
            br = self._find("Bridge", name)
            changed = False
            if br is None:
                iface = self._insert(txn, "Interface", name)
                iface.type = "internal"
                port = self._insert(txn, "Port", name)
                port.interfaces = [iface]
                br = self._insert(txn, "Bridge", name)
                br.ports = [port]
                self._root().addvalue("bridges", br)
                changed = True
            if _col(br, "datapath_type", "") != datapath_type:
                br.datapath_type = datapath_type
                changed = True
            if _col(br, "fail_mode", []) != [fail_mode]:
                br.fail_mode = fail_mode
                changed = True
            if set(_col(br, "protocols", [])) != set(protocols):
                br.protocols = list(protocols)
                changed = True
            other_config = _col(br, "other_config", {})
            if datapath_id is not None and other_config.get("datapath-id") != datapath_id.lower():
                br.setkey("other_config", "datapath-id", datapath_id.lower())
                changed = True
            ids = _col(br, "external_ids", {})
            for key, value in wanted_ids.items():
                if ids.get(key) != value:
                    br.setkey("external_ids", key, value)
                    changed = True
            changed |= self._ensure_controllers(txn, br, controllers, inactivity_probe_ms, max_backoff_ms)
            if changed:
                self._root().increment("next_cfg")
            return changed

        return self._transact(build, f"ensure bridge {name}", timeout)

    def _ensure_controllers(
        self,
        txn: ovs.db.idl.Transaction,
        br: Any,
        targets: Sequence[str],
        inactivity_probe_ms: int | None,
        max_backoff_ms: int | None,
    ) -> bool:
        existing = {c.target: c for c in _col(br, "controller", [])}
        changed = False
        rows = []
        for target in targets:
            row = existing.get(target)
            if row is None:
                row = txn.insert(self._ready_idl().tables["Controller"])
                row.target = target
                # Out-of-band: the controller is reached over the underlay, never through br-int;
                # in-band mode would add hidden flows to the bridge.
                row.connection_mode = "out-of-band"
                changed = True
            probe = [] if inactivity_probe_ms is None else [inactivity_probe_ms]
            if _col(row, "inactivity_probe", []) != probe:
                row.inactivity_probe = probe
                changed = True
            backoff = [] if max_backoff_ms is None else [max_backoff_ms]
            if _col(row, "max_backoff", []) != backoff:
                row.max_backoff = backoff
                changed = True
            rows.append(row)
        if set(existing) != set(targets):
            br.controller = rows
            changed = True
        return changed

    def ensure_internal_port(
        self,
        bridge: str,
        name: str,
        *,
        ofport_request: int | None = None,
        mac: str | None = None,
        external_ids: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Create internal port `name` on `bridge` (or fix it) and return its ofport. Raises OvsdbError."""
        spec = PortSpec(name, "internal", ofport_request, mac, dict(external_ids or {}))
        return self.add_ports(bridge, [spec], timeout=timeout)[name]

    def ensure_tunnel_port(
        self,
        bridge: str,
        name: str = TUNNEL_PORT,
        *,
        ofport_request: int = TUNNEL_OFPORT,
        tunnel_type: str = "geneve",
        options: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Create the one flow-based tunnel port (`remote_ip=flow`, `key=flow`) and return its ofport.

        The flows pick the remote node per packet (`set_field:IP->tun_dst`), so adding a node
        changes flows only. Extra `options` are merged. Raises OvsdbError.
        """
        opts = {"remote_ip": "flow", "key": "flow", **(options or {})}
        spec = PortSpec(name, tunnel_type, ofport_request, None, {}, opts)
        return self.add_ports(bridge, [spec], timeout=timeout)[name]

    # ------------------------------------------------------------------------------------------
    # Pod ports, batched

    def add_pod_ports(
        self, bridge: str, specs: Sequence[PortSpec], *, timeout: float | None = None
    ) -> dict[str, int]:
        """Add (or update) all `specs` on `bridge` in ONE transaction; return name -> ofport.

        See `add_ports`.
        """
        return self.add_ports(bridge, specs, timeout=timeout)

    def add_ports(
        self, bridge: str, specs: Sequence[PortSpec], *, timeout: float | None = None
    ) -> dict[str, int]:
        """Add or update ports on `bridge` in one transaction, wait for vswitchd, return their ofports.

        A port that already exists (on this bridge) is brought to its spec: type, ofport_request,
        mac, options are set if they differ and `external_ids` are replaced. A port of the same
        name on another bridge is an error. Raises OvsdbError (which names the ports vswitchd
        could not open), ValueError for duplicate names.
        """
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate port names in {names}")
        if not specs:
            return {}
        result: dict[str, int] = self._change_ports(
            _PortChange(bridge, tuple(specs), (), Future(), 0.0), timeout
        )
        return result

    def _change_ports(self, request: _PortChange, timeout: float | None) -> Any:
        """Queue `request` for the next shared transaction and wait for its result."""
        if self._thread is None:
            raise OvsdbError(f"OVSDB connection to {self.target} is not started")
        limit = self.timeout if timeout is None else timeout
        request.deadline = time.monotonic() + limit
        # Every caller queues a flush; the first one to run takes all requests queued by then,
        # commits them together and leaves each one a waiter for vswitchd's answer. The caller
        # hands over once and is woken once, with its result (one IDL-thread round trip).
        with self._jobs_lock:
            self._port_changes.append(request)
            self._jobs.append((self._flush_port_changes, Future()))
        self._wake()
        try:
            return request.future.result(limit)
        except FutureTimeout:
            request.future.cancel()  # its waiter, if any, is dropped at the next check
            what = {
                "queued": "OVSDB did not answer",
                "held": "ovs-vswitchd did not apply the changes before them",
                "committed": "ovs-vswitchd did not "
                + ("apply the deletion" if request.bridge is None else "open them"),
            }[request.stage]
            raise OvsdbError(f"{request.describe()}: {what} within {limit:.1f}s") from None

    def _flush_port_changes(self) -> None:
        """Commit every queued port add and deletion in ONE transaction (IDL thread).

        Group commit: while one transaction waits for ovsdb-server, or ovs-vswitchd is still
        applying an earlier change, concurrent ADDs and DELs queue up and then share the next
        one, and ovs-vswitchd reconfigures once for all of them instead of once per pod (each
        reconfiguration costs it milliseconds of CPU, more as the bridge grows). A lone call on
        an idle node is committed at once. An add that cannot be applied (its bridge is missing,
        a port exists on another bridge) fails alone; a request naming a port that an earlier
        request of the batch also names waits for the next batch.
        """
        if self._vswitchd_behind():
            self._hold_port_changes()
            return
        with self._jobs_lock:
            queued, self._port_changes = self._port_changes, []
        batch: list[_PortChange] = []
        later: list[_PortChange] = []
        taken: set[str] = set()
        for request in queued:
            if request.future.done():
                continue
            names = request.names
            if names & taken:
                later.append(request)
                continue
            try:
                if request.bridge is not None:
                    self._check_port_add(request)
            except Exception as exc:  # OvsdbError; anything else must not leave the caller hanging
                _settle(request.future, error=exc)
                continue
            taken |= names
            batch.append(request)
        if later:
            with self._jobs_lock:
                self._port_changes[:0] = later
                self._jobs.append((self._flush_port_changes, Future()))
            self._wake()
        if not batch:
            return
        deadline = max(r.deadline for r in batch)

        def build(txn: ovs.db.idl.Transaction) -> bool:
            changed = False
            for request in batch:
                if request.bridge is None:
                    changed |= self._build_port_del(request)
                else:
                    changed |= self._build_port_add(txn, request)
            if changed:
                self._root().increment("next_cfg")
            return changed

        try:
            _changed, next_cfg = self._commit_job(build, "; ".join(r.describe() for r in batch), deadline)
        except BaseException as exc:
            for request in batch:
                _settle(request.future, error=exc)
            return
        for request in batch:
            request.stage = "committed"
            if request.bridge is None:
                self._await_deletion(request, next_cfg)
            else:
                self._await_ports(request, next_cfg)

    def _applied(self, next_cfg: int | None) -> bool:
        """Whether ovs-vswitchd has applied configuration `next_cfg` (None: nothing to apply)."""
        return next_cfg is None or _int(self._root().cur_cfg) >= next_cfg

    def _vswitchd_behind(self) -> bool:
        """Whether ovs-vswitchd has yet to apply a committed change (IDL thread). A replica
        without its root row says no: the commit that follows reports what is wrong."""
        try:
            root = self._root()
        except OvsdbError:
            return False
        return _int(root.cur_cfg) < _int(root.next_cfg)

    def _hold_port_changes(self) -> None:
        """Leave the queued port changes queued until vswitchd has caught up, then commit them
        together (IDL thread). They could not take effect sooner anyway: vswitchd applies
        changes one reconfiguration after the other."""
        with self._jobs_lock:
            for request in self._port_changes:
                request.stage = "held"
        if self._holding:
            return
        self._holding = True

        def release() -> None:
            self._holding = False
            with self._jobs_lock:
                self._jobs.append((self._flush_port_changes, Future()))
            self._wake()

        self._waiters.append(_Waiter(lambda: not self._vswitchd_behind(), Future(), release))

    def _await_deletion(self, request: _PortChange, next_cfg: int | None) -> None:
        """Resolve deletion `request` with the names it deleted once vswitchd has applied
        `next_cfg` (None: nothing changed) (IDL thread)."""

        if not request.future.done():  # else the caller gave up meanwhile
            self._waiters.append(
                _Waiter(lambda: self._applied(next_cfg), request.future, lambda: sorted(request.deleted))
            )

    def _await_ports(self, request: _PortChange, next_cfg: int | None) -> None:
        """Resolve `request` once vswitchd has applied `next_cfg` (None: nothing changed) and
        given each port an ofport (IDL thread)."""
        names = [s.name for s in request.specs]

        def opened() -> bool:
            if not self._applied(next_cfg):
                return False
            return all((i := self._interface(n)) is not None and _ofport(i) is not None for n in names)

        def ofports() -> dict[str, int]:
            out: dict[str, int] = {}
            failed = []
            for name in names:
                record = self._port_record(name)
                if record is None or record.ofport is None or record.ofport < 0:
                    failed.append(f"{name}: {record.error if record else 'gone'}")
                else:
                    out[name] = record.ofport
            if failed:
                raise OvsdbError("ovs-vswitchd could not open " + "; ".join(failed))
            return out

        if not request.future.done():  # else the caller gave up meanwhile
            self._waiters.append(_Waiter(opened, request.future, ofports))

    def _check_port_add(self, request: _PortChange) -> None:
        """Raise OvsdbError if `request` cannot be applied to the replica as it is (IDL thread)."""
        assert request.bridge is not None  # an add, not a deletion
        if self._find("Bridge", request.bridge) is None:
            raise OvsdbError(f"bridge {request.bridge} does not exist")
        owner = self._port_bridges()
        for spec in request.specs:
            where = owner.get(spec.name)
            if where is not None and where != request.bridge:
                raise OvsdbError(f"port {spec.name} exists on bridge {where}, not {request.bridge}")

    def _build_port_del(self, request: _PortChange) -> bool:
        """Delete `request`'s ports that exist, from whichever bridge, noting which in
        `request.deleted`; return whether there were any (IDL thread)."""
        request.deleted.clear()  # a retried transaction builds again
        names = self._named("Port")
        wanted = {uuid: name for name in request.deletes if (uuid := names.get(name)) is not None}
        for br in self._rows("Bridge"):
            for port in br.ports:
                name = wanted.get(port.uuid)  # by uuid: reading each port's name costs a decode
                if name is not None:
                    br.delvalue("ports", port)
                    for iface in port.interfaces:
                        iface.delete()
                    port.delete()
                    request.deleted.append(name)
        return bool(request.deleted)

    def _build_port_add(self, txn: ovs.db.idl.Transaction, request: _PortChange) -> bool:
        """Add `request`'s ports to the transaction (or bring existing ones to spec); return whether
        anything changed (IDL thread)."""
        assert request.bridge is not None  # an add, not a deletion
        br = self._find("Bridge", request.bridge)
        if br is None:
            raise OvsdbError(f"bridge {request.bridge} does not exist")
        changed = False
        for spec in request.specs:
            port = self._find("Port", spec.name)
            iface = self._find("Interface", spec.name)
            if port is None or iface is None:
                iface = self._insert(txn, "Interface", spec.name)
                port = self._insert(txn, "Port", spec.name)
                port.interfaces = [iface]
                br.addvalue("ports", port)
                changed = True
            changed |= _update_interface(iface, spec)
        return changed

    def del_ports(self, names: Iterable[str], *, timeout: float | None = None) -> list[str]:
        """Delete the named ports (from whichever bridge) in ONE transaction; return those deleted.

        Names that do not exist are ignored (deleting is idempotent). Returns once vswitchd has
        applied the change. Raises OvsdbError.
        """
        wanted = sorted(set(names))
        if not wanted:
            return []
        deleted: list[str] = self._change_ports(_PortChange(None, (), tuple(wanted), Future(), 0.0), timeout)
        return deleted

    def del_bridge(self, name: str, *, timeout: float | None = None) -> bool:
        """Delete bridge `name` with its ports; return False if it did not exist. Raises OvsdbError."""

        def build(_txn: ovs.db.idl.Transaction) -> bool:
            br = self._find("Bridge", name)
            if br is None:
                return False
            for port in br.ports:
                for iface in port.interfaces:
                    iface.delete()
                port.delete()
            for controller in br.controller:
                controller.delete()
            self._root().delvalue("bridges", br)
            br.delete()
            self._root().increment("next_cfg")
            return True

        return self._transact(build, f"delete bridge {name}", timeout)

    # ------------------------------------------------------------------------------------------
    # Transactions

    def _transact(
        self, build: Callable[[ovs.db.idl.Transaction], bool], what: str, timeout: float | None
    ) -> bool:
        """Commit the transaction `build` composes; wait for vswitchd if it incremented next_cfg.

        `build` returns whether it wrote anything. TRY_AGAIN is retried until the deadline.
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        changed, next_cfg = self._call(lambda: self._commit_job(build, what, deadline), limit)
        if next_cfg is not None:
            remaining = max(0.0, deadline - time.monotonic())
            self._wait(
                lambda: self._applied(next_cfg),
                remaining,
                f"{what}: ovs-vswitchd did not apply configuration {next_cfg}",
            )
        return changed

    def _commit_job(
        self, build: Callable[[ovs.db.idl.Transaction], bool], what: str, deadline: float
    ) -> tuple[bool, int | None]:
        """Compose (`build`) and commit one transaction on the IDL thread; return (changed, the new
        next_cfg if `build` incremented it). TRY_AGAIN is retried until the deadline."""
        idl = self._ready_idl()
        attempts = 0
        while True:
            attempts += 1
            txn = ovs.db.idl.Transaction(idl)
            try:
                try:
                    changed = build(txn)
                except BaseException:
                    txn.abort()
                    raise
                if not changed:
                    txn.abort()
                    return False, None
                txn.add_comment(f"sluice-agent: {what}")
                status = _commit(idl, txn, deadline)
            finally:
                # Ended either way: the replica has its rows back (deletions undone, inserts gone)
                # or will have the server's, so what was derived from it has to be recomputed.
                self._forget_derived()
            if status == txn.SUCCESS:
                return True, txn.get_increment_new_value()
            if status == txn.UNCHANGED:
                return False, None
            if status == txn.TRY_AGAIN and time.monotonic() < deadline:
                log.debug("%s: TRY_AGAIN (attempt %d), retrying", what, attempts)
                # A reconnect between Idl.run() calls leaves commit_block() answering
                # TRY_AGAIN until the IDL runs again (ovsdbapp does the same).
                idl.run()
                continue
            raise OvsdbError(f"{what} failed: {txn.get_error()} (after {attempts} attempts)")

    # ------------------------------------------------------------------------------------------
    # The IDL thread

    def _call(self, fn: Callable[[], T], timeout: float | None) -> T:
        """Run `fn` on the IDL thread and return its result (re-raising its exception)."""
        if self._thread is None:
            raise OvsdbError(f"OVSDB connection to {self.target} is not started")
        if threading.current_thread() is self._thread:
            return fn()
        future: Future[T] = Future()
        with self._jobs_lock:
            self._jobs.append((fn, future))
        self._wake()
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except FutureTimeout:
            future.cancel()
            raise OvsdbError(f"OVSDB at {self.target} did not answer in time") from None

    def _wait(self, predicate: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Block until `predicate()` (evaluated on the IDL thread after each update) is true."""
        waiter = _Waiter(predicate, Future())

        def register() -> None:
            if predicate():
                waiter.future.set_result(None)
            else:
                self._waiters.append(waiter)

        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        self._call(register, limit)
        try:
            waiter.future.result(max(0.0, limit - (time.monotonic() - started)))
        except FutureTimeout:
            raise OvsdbError(f"{what} within {limit:.1f}s") from None
        finally:
            waiter.future.cancel()  # if still pending, the IDL loop drops the waiter at its next pass

    def _wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, that we are stopping.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        idl = self._ready_idl()
        while self._running:
            try:
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.fd_wait(self._wake_r, select.POLLIN)
                poller.timer_wait(1000)
                poller.block()
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                idl.run()
            except Exception:
                log.exception("OVSDB IDL loop error; continuing")
            self._run_jobs()
            self._check_waiters()
        # Stopping: nobody will run what is still queued, so fail it rather than let callers hang.
        closed = OvsdbError(f"OVSDB connection to {self.target} closed")
        with self._jobs_lock:
            jobs, self._jobs = self._jobs, []
            port_changes, self._port_changes = self._port_changes, []
        for _fn, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(closed)
        for request in port_changes:
            _settle(request.future, error=closed)
        for waiter in self._waiters:
            _settle(waiter.future, error=closed)
        self._waiters = []

    def _run_jobs(self) -> None:
        with self._jobs_lock:
            jobs, self._jobs = self._jobs, []
        for fn, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _check_waiters(self) -> None:
        still = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            try:
                if not waiter.predicate():
                    still.append(waiter)
                    continue
                value = waiter.result()
            except Exception as exc:
                _settle(waiter.future, error=exc)
                continue
            _settle(waiter.future, value)
        self._waiters = still

    # ------------------------------------------------------------------------------------------
    # Replica helpers (IDL thread only)

    def _ready_idl(self) -> ovs.db.idl.Idl:
        if self._idl is None:
            raise OvsdbError(f"OVSDB connection to {self.target} is closed")
        return self._idl

    def _rows(self, table: str) -> list[Any]:
        return list(self._ready_idl().tables[table].rows.values())

    def _root(self) -> Any:
        rows = self._rows("Open_vSwitch")
        if not rows:
            raise OvsdbError("the Open_vSwitch table is empty (database not initialised)")
        return rows[0]

    def _find(self, table: str, name: str) -> Any:
        uuid = self._named(table).get(name)
        return None if uuid is None else self._ready_idl().tables[table].rows.get(uuid)

    def _named(self, table: str) -> dict[str, Any]:
        """`table`'s row uuids by name (IDL thread).

        A lookup used to read the name of every row, and python-ovs decodes a column on each
        read: with a few dozen pods, the port lookups of a group commit and of its ofport waits
        (re-checked after every update) took most of the agent's CPU during a burst of ADDs.
        The index is rebuilt on first use after any change (`_derived_from_replica`). During a
        transaction of ours, a row it deleted is gone from `rows` (`_find` checks) and a row it
        inserts is added by `_insert`.
        """
        derived = self._derived_from_replica()
        names = derived.get(table)
        if names is None:
            rows = self._ready_idl().tables[table].rows.values()
            names = derived[table] = {row.name: row.uuid for row in rows}
        return names

    def _derived_from_replica(self) -> dict[str, dict[str, Any]]:
        """The lookups computed from the replica, emptied whenever it may have changed since: an
        update from the server (the IDL's change_seqno moved) or the end of a transaction of ours,
        which changes `rows` until it ends (IDL thread)."""
        seqno = self._ready_idl().change_seqno
        if self._derived_seqno != seqno:
            self._derived, self._derived_seqno = {}, seqno
        return self._derived

    def _forget_derived(self) -> None:
        self._derived, self._derived_seqno = {}, -1

    def _insert(self, txn: ovs.db.idl.Transaction, table: str, name: str) -> Any:
        """Insert a row named `name` into `table` in `txn` and index it; return it."""
        names = self._named(table)
        row = txn.insert(self._ready_idl().tables[table])
        row.name = name
        names[name] = row.uuid
        return row

    def _interface(self, name: str) -> Any:
        return self._find("Interface", name)

    def _port_bridges(self) -> dict[str, str]:
        """Bridge name by port name (IDL thread); kept with the derived lookups, except during a
        transaction, whose own changes it would miss."""
        in_transaction = self._ready_idl().txn is not None
        derived = {} if in_transaction else self._derived_from_replica()
        owners = derived.get(_PORT_BRIDGES)
        if owners is None:
            owners = derived[_PORT_BRIDGES] = {
                port.name: br.name for br in self._rows("Bridge") for port in br.ports
            }
        return owners

    def _port_record(self, name: str) -> PortRecord | None:
        port = self._find("Port", name)
        if port is None:
            return None
        iface = next((i for i in port.interfaces if i.name == name), None)
        if iface is None and port.interfaces:
            iface = port.interfaces[0]
        bridge = self._port_bridges().get(name)
        if iface is None:
            return PortRecord(name, bridge, "", None, {}, None)
        error = list(iface.error)
        return PortRecord(
            name=name,
            bridge=bridge,
            type=iface.type,
            ofport=_ofport(iface),
            external_ids=dict(iface.external_ids),
            error=error[0] if error else None,
        )

    def _bridge_record(self, name: str) -> BridgeRecord | None:
        br = self._find("Bridge", name)
        if br is None:
            return None
        fail_mode = list(br.fail_mode)
        dpid = list(br.datapath_id)
        return BridgeRecord(
            name=name,
            datapath_type=br.datapath_type,
            fail_mode=fail_mode[0] if fail_mode else None,
            protocols=tuple(sorted(br.protocols)),
            datapath_id=dpid[0] if dpid else None,
            controllers=tuple(sorted(c.target for c in br.controller)),
            external_ids=dict(br.external_ids),
            ports=tuple(sorted(p.name for p in br.ports)),
        )


def _commit(idl: ovs.db.idl.Idl, txn: ovs.db.idl.Transaction, deadline: float) -> str:
    """`Transaction.commit_block()` with a deadline: a hung server must not hang the IDL thread."""
    while True:
        status: str = txn.commit()
        if status != txn.INCOMPLETE:
            return status
        if time.monotonic() > deadline:
            txn.abort()
            raise OvsdbError("OVSDB did not confirm the transaction in time")
        idl.run()
        poller = ovs.poller.Poller()
        idl.wait(poller)
        txn.wait(poller)
        poller.timer_wait(100)
        poller.block()


def _update_interface(iface: Any, spec: PortSpec) -> bool:
    """Bring an Interface row to `spec`; return True if anything was written."""
    wanted: dict[str, Any] = {
        "type": spec.type,
        "ofport_request": [] if spec.ofport_request is None else [spec.ofport_request],
        "mac": [] if spec.mac is None else [spec.mac.lower()],
        "options": dict(spec.options),
        "external_ids": dict(spec.external_ids),
    }
    changed = False
    for column, value in wanted.items():
        if _col(iface, column, None) != value:
            setattr(iface, column, value)
            changed = True
    return changed


def _col(row: Any, column: str, default: Any) -> Any:
    """Read `column` of `row`, or `default` for a row inserted in this transaction and not set yet."""
    try:
        value = getattr(row, column)
    except AttributeError:
        return default
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple | set):
        return list(value)
    return value


def _settle(future: Future[Any], value: Any = None, *, error: BaseException | None = None) -> None:
    """Give `future` its result (or `error`) unless its caller has already given up on it."""
    with contextlib.suppress(InvalidStateError):  # cancelled (or settled) meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _ofport(iface: Any) -> int | None:
    """The Interface's ofport: None while vswitchd has not assigned one, -1 on failure."""
    value = list(iface.ofport)
    return int(value[0]) if value else None


def _int(value: Any) -> int:
    if isinstance(value, list):
        return int(value[0]) if value else 0
    return int(value)
