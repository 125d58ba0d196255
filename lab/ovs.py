"""One node's Open vSwitch: ovsdb-server and ovs-vswitchd in a network namespace, stopped by PID.

Each node has its own run directory holding the database, sockets, pidfiles and logs, and every
OVS tool is pointed at it through OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR (nothing touches
/var/run/openvswitch). The daemons run under `ip netns exec NS` and `--detach`: OVS's own
daemonize handshake makes the start command return only once the daemon is serving (ovsdb-server
listening, ovs-vswitchd connected to the database), so start-up needs no sleeping. The PIDs are read
from the pidfiles and are the only processes `stop()` signals.

The machines this project develops on have no openvswitch kernel module, so bridges use the
userspace datapath (`datapath_type=netdev`); only one ovs-vswitchd can run per network namespace
(the netdev datapath owns fixed tap names such as `ovs-netdev`).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lab import netns as netns_mod
from lab.procs import CommandError, pid_alive, process_cmdline, run, stop_pids

log = logging.getLogger(__name__)

OVS_PKGDATADIR = Path("/usr/share/openvswitch")
VSWITCH_SCHEMA = OVS_PKGDATADIR / "vswitch.ovsschema"
DEFAULT_PROTOCOLS: tuple[str, ...] = ("OpenFlow13", "OpenFlow15")
# Unix socket paths are limited to 107 bytes; a bridge's `NAME.snoop` socket (15-char name) must fit.
MAX_RUNDIR_LEN = 80


class OvsError(CommandError):
    """An OVS daemon or tool failed; carries the command, exit code and stderr (or log tail)."""


class Daemon(enum.Enum):
    """The two OVS daemons of a node, valued by their executable names."""

    OVSDB_SERVER = "ovsdb-server"
    VSWITCHD = "ovs-vswitchd"


class DatapathType(enum.StrEnum):
    """Bridge datapath types: userspace (`netdev`) or the kernel module (`system`)."""

    NETDEV = "netdev"
    SYSTEM = "system"


class FailMode(enum.StrEnum):
    """What a bridge does without a controller: `secure` keeps its flows, `standalone` learns."""

    SECURE = "secure"
    STANDALONE = "standalone"


@dataclass(frozen=True, slots=True)
class OvsPaths:
    """Every file of one node's OVS, all inside its run directory."""

    rundir: Path

    @property
    def db(self) -> Path:
        """The OVSDB database file."""
        return self.rundir / "conf.db"

    @property
    def db_sock(self) -> Path:
        """The ovsdb-server unix socket (`unix:` + this is the OVSDB target)."""
        return self.rundir / "db.sock"

    def pidfile(self, daemon: Daemon) -> Path:
        """The pidfile of `daemon`."""
        return self.rundir / f"{daemon.value}.pid"

    def ctl(self, daemon: Daemon) -> Path:
        """The unixctl socket of `daemon` (the `ovs-appctl -t` target)."""
        return self.rundir / f"{daemon.value}.ctl"

    def log(self, daemon: Daemon) -> Path:
        """The log file of `daemon`."""
        return self.rundir / f"{daemon.value}.log"

    def mgmt(self, bridge: str) -> Path:
        """The OpenFlow management socket of `bridge` (what `ovs-ofctl ... BRIDGE` connects to)."""
        return self.rundir / f"{bridge}.mgmt"


@dataclass(frozen=True, slots=True)
class OvsPids:
    """The PIDs of a node's daemons (None when not running)."""

    ovsdb_server: int | None
    vswitchd: int | None


class OvsNode:
    """ovsdb-server + ovs-vswitchd for one node, in network namespace `netns`, files in `rundir`.

    `OvsNode.create()` makes a fresh namespace and directory that the node owns and removes on
    `close()`. Constructing `OvsNode(netns, rundir)` directly uses existing ones (and can stop
    daemons a previous process started there: the PIDs are read back from the pidfiles).
    """

    def __init__(
        self,
        netns: str,
        rundir: Path | str,
        *,
        name: str | None = None,
        disable_system: bool = True,
    ) -> None:
        """Describe a node; nothing starts until `start()`. Raises ValueError for bad arguments."""
        netns_mod.validate_netns_name(netns)
        rundir = Path(rundir).absolute()
        if len(str(rundir)) > MAX_RUNDIR_LEN:
            raise ValueError(
                f"OVS run directory {rundir} is too long ({len(str(rundir))} > {MAX_RUNDIR_LEN}"
                " characters): unix socket paths inside it would not fit"
            )
        self.netns = netns
        self.name = name or netns
        self.paths = OvsPaths(rundir)
        self.disable_system = disable_system
        self._pids: dict[Daemon, int] = {}
        self._owns_netns = False
        self._owns_rundir = False
        self.env: dict[str, str] = {
            **os.environ,
            "OVS_RUNDIR": str(rundir),
            "OVS_DBDIR": str(rundir),
            "OVS_LOGDIR": str(rundir),
            "OVS_SYSCONFDIR": str(rundir),
            "OVS_PKGDATADIR": str(OVS_PKGDATADIR),
        }

    @classmethod
    def create(
        cls,
        prefix: str = "slovs",
        *,
        base_dir: Path | str | None = None,
        name: str | None = None,
        persistent: bool = False,
    ) -> OvsNode:
        """Make a fresh uniquely named namespace and run directory owned by the returned node.

        The directory is `base_dir/<namespace name>` (default base: the system temp dir) and is
        registered with the namespace, so `lab.netns.cleanup_leftovers(prefix)` removes both after
        a crash. The node is not started. Raises NetnsError/OSError if creation fails.
        """
        ns = netns_mod.create_netns(netns_mod.unique_name(prefix), persistent=persistent)
        try:
            rundir = Path(base_dir or tempfile.gettempdir()) / ns.name
            netns_mod.register_dir(ns.name, rundir)
            rundir.mkdir(mode=0o700)
            node = cls(ns.name, rundir, name=name)
        except BaseException:
            netns_mod.delete_netns(ns.name)
            raise
        node._owns_netns = True
        node._owns_rundir = True
        return node

    # -----------------------------------------------------------------------------------------
    # Properties

    @property
    def rundir(self) -> Path:
        """The node's run directory."""
        return self.paths.rundir

    @property
    def db_target(self) -> str:
        """The OVSDB connection string for this node (`unix:RUNDIR/db.sock`)."""
        return f"unix:{self.paths.db_sock}"

    @property
    def pids(self) -> OvsPids:
        """The PIDs of the running daemons (from memory, or the pidfiles if this process did not
        start them)."""
        return OvsPids(self._pid(Daemon.OVSDB_SERVER), self._pid(Daemon.VSWITCHD))

    def is_running(self) -> bool:
        """Return True if both daemons are running."""
        pids = self.pids
        return pids.ovsdb_server is not None and pids.vswitchd is not None

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    def start(self, *, timeout: float = 10.0) -> None:
        """Create the database if needed, then start ovsdb-server and ovs-vswitchd.

        Returns when both serve requests. Raises OvsError (with the daemon's log tail) on failure;
        a daemon this call started is stopped again before the error propagates.
        """
        started = time.monotonic()
        self.rundir.mkdir(parents=True, exist_ok=True)
        if not self.paths.db.exists():
            self._tool(["ovsdb-tool", "create", str(self.paths.db), str(VSWITCH_SCHEMA)], timeout)
        started_here: list[Daemon] = []
        try:
            self.start_ovsdb(timeout=timeout)
            started_here.append(Daemon.OVSDB_SERVER)
            init = ["--no-wait", "init"]
            if self.name:
                init += ["--", "set", "Open_vSwitch", ".", f"external_ids:system-id={self.name}"]
            self.vsctl(*init, wait=False, timeout=timeout)
            self.start_vswitchd(timeout=timeout)
        except BaseException:
            for daemon in reversed(started_here):
                self._stop_daemon(daemon, 5.0)
            raise
        log.info("ovs node %s started in %.3fs", self.name, time.monotonic() - started)

    def start_ovsdb(self, *, timeout: float = 10.0) -> int:
        """Start ovsdb-server inside the namespace; return its PID. Raises OvsError."""
        p = self.paths
        args = [
            str(p.db),
            f"--remote=punix:{p.db_sock}",
            # Managers configured in the database (`ovs-vsctl set-manager`) are served too.
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
        ]
        return self._start_daemon(Daemon.OVSDB_SERVER, args, timeout)

    def start_vswitchd(self, *, timeout: float = 10.0) -> int:
        """Start ovs-vswitchd inside the namespace; return its PID. Raises OvsError.

        Also used to restart vswitchd alone (after `stop_vswitchd()`), keeping the database.
        """
        self._refuse_second_vswitchd()
        args = [self.db_target]
        if self.disable_system:
            # No kernel module here: do not even register the `system` datapath type.
            args.append("--disable-system")
        return self._start_daemon(Daemon.VSWITCHD, args, timeout)

    def stop_vswitchd(self, *, timeout: float = 5.0) -> None:
        """Stop ovs-vswitchd (SIGTERM, then SIGKILL after `timeout`), leaving ovsdb-server up."""
        self._stop_daemon(Daemon.VSWITCHD, timeout)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop ovs-vswitchd then ovsdb-server, by PID; files and namespace are kept.

        Only a PID whose command line names this node's run directory is signalled.
        """
        self._stop_daemon(Daemon.VSWITCHD, timeout)
        self._stop_daemon(Daemon.OVSDB_SERVER, timeout)

    def close(self) -> None:
        """Stop the daemons and remove the namespace and run directory if this node created them."""
        try:
            self.stop()
        finally:
            if self._owns_netns:
                netns_mod.delete_netns(self.netns)
                self._owns_netns = False
            if self._owns_rundir:
                shutil.rmtree(self.rundir, ignore_errors=True)
                self._owns_rundir = False

    def __enter__(self) -> OvsNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OvsNode(name={self.name!r}, netns={self.netns!r}, rundir={str(self.rundir)!r})"

    # -----------------------------------------------------------------------------------------
    # Tools

    def vsctl(self, *args: str, wait: bool = True, timeout: float = 10.0) -> str:
        """Run `ovs-vsctl --db=unix:RUNDIR/db.sock ARGS` and return stdout; raises OvsError.

        With wait=True (the default, as plain ovs-vsctl) a configuration change returns only
        once ovs-vswitchd has applied it.
        """
        cmd = ["ovs-vsctl", f"--db={self.db_target}", f"--timeout={math.ceil(timeout)}"]
        if not wait and "--no-wait" not in args:
            cmd.append("--no-wait")
        return self._tool([*cmd, *args], timeout + 5)

    def ofctl(self, *args: str, protocol: str | None = "OpenFlow15", timeout: float = 10.0) -> str:
        """Run `ovs-ofctl [-O PROTOCOL] ARGS` against this node and return stdout.

        A bridge name resolves to RUNDIR/BRIDGE.mgmt through OVS_RUNDIR. `protocol` must be one
        the bridge allows (plain ovs-ofctl speaks OpenFlow10, which our bridges refuse).
        Raises OvsError.
        """
        cmd = ["ovs-ofctl", f"--timeout={math.ceil(timeout)}"]
        if protocol is not None:
            cmd += ["-O", protocol]
        return self._tool([*cmd, *args], timeout + 5)

    def appctl(self, *args: str, daemon: Daemon = Daemon.VSWITCHD, timeout: float = 10.0) -> str:
        """Run `ovs-appctl -t RUNDIR/<daemon>.ctl ARGS` and return stdout; raises OvsError."""
        cmd = ["ovs-appctl", "-t", str(self.paths.ctl(daemon)), f"--timeout={math.ceil(timeout)}"]
        return self._tool([*cmd, *args], timeout + 5)

    def add_bridge(
        self,
        name: str,
        *,
        datapath_type: DatapathType | str = DatapathType.NETDEV,
        fail_mode: FailMode | str = FailMode.SECURE,
        protocols: Sequence[str] = DEFAULT_PROTOCOLS,
        other_config: Mapping[str, str] | None = None,
        external_ids: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Add bridge `name` and return once ovs-vswitchd has built it (its mgmt socket exists).

        Raises ValueError for a bad name/type/mode and OvsError if OVS refuses (e.g. it exists).
        """
        netns_mod.validate_ifname(name)  # the bridge's internal port is a Linux device
        dp = DatapathType(datapath_type)
        mode = FailMode(fail_mode)
        if not protocols:
            raise ValueError("add_bridge needs at least one OpenFlow protocol")
        settings = [
            f"datapath_type={dp.value}",
            f"fail_mode={mode.value}",
            f"protocols={','.join(protocols)}",
        ]
        settings += [f"other_config:{k}={v}" for k, v in (other_config or {}).items()]
        settings += [f"external_ids:{k}={v}" for k, v in (external_ids or {}).items()]
        self.vsctl("add-br", name, "--", "set", "Bridge", name, *settings, timeout=timeout)
        mgmt = self.paths.mgmt(name)
        deadline = time.monotonic() + timeout
        while not mgmt.exists():
            if time.monotonic() > deadline:
                raise self._failure(["ovs-vsctl", "add-br", name], f"{mgmt} never appeared")
            time.sleep(0.005)

    def del_bridge(self, name: str, *, timeout: float = 10.0) -> None:
        """Delete bridge `name` (no error if it does not exist)."""
        self.vsctl("--if-exists", "del-br", name, timeout=timeout)

    def dump_flows(self, bridge: str, *args: str) -> list[str]:
        """Return the flows of `bridge` as `ovs-ofctl --no-stats dump-flows` lines (no header)."""
        out = self.ofctl("--no-stats", "dump-flows", bridge, *args)
        return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]

    def add_flows(self, bridge: str, text: str, *, bundle: bool = True) -> None:
        """Install `ovs-ofctl add-flows` text (flows, or add/delete_strict lines) on `bridge`.

        With `bundle` the whole file is applied atomically, as the controller's pushes are.
        The file goes through the node's run dir, never one process per flow; each call has its
        own file, so concurrent callers cannot overwrite each other's flows. Tables and ports must
        be numbers (as `flows/` renders them): `--no-names` spares ovs-ofctl fetching the table
        features of all 255 tables (about 2 MB, 10-20 ms) to resolve names nobody used.
        """
        fd, name = tempfile.mkstemp(prefix=f"{bridge}.add-flows.", suffix=".txt", dir=self.rundir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            self.ofctl("--no-names", *(["--bundle"] if bundle else []), "add-flows", bridge, name)
        finally:
            os.unlink(name)

    def trace(self, bridge: str, packet: str) -> str:
        """Return `ovs-appctl ofproto/trace BRIDGE PACKET` output (across recirculations)."""
        return self.appctl("ofproto/trace", bridge, packet)

    def ofport(self, interface: str) -> int:
        """Return the OpenFlow port number of `interface`; raises OvsError if it has none."""
        raw = self.vsctl("get", "Interface", interface, "ofport").strip()
        port = int(raw) if raw.lstrip("-").isdigit() else -1
        if port <= 0:
            err = self.vsctl("get", "Interface", interface, "error").strip()
            raise self._failure(["ovs-vsctl", "get", "Interface", interface], f"no ofport: {err}")
        return port

    # -----------------------------------------------------------------------------------------
    # Internals

    def _tool(self, cmd: Sequence[str], timeout: float) -> str:
        return run(cmd, timeout=timeout, env=self.env, error=OvsError).stdout

    def _pid(self, daemon: Daemon) -> int | None:
        pid = self._pids.get(daemon) or self._read_pidfile(daemon)
        if pid is None or not pid_alive(pid) or not self._is_ours(pid):
            return None
        return pid

    def _read_pidfile(self, daemon: Daemon) -> int | None:
        try:
            text = self.paths.pidfile(daemon).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _is_ours(self, pid: int) -> bool:
        # A pidfile may be stale and its PID reused: only a process started with our run
        # directory on its command line is this node's daemon.
        rundir = str(self.rundir)
        return any(rundir in arg for arg in process_cmdline(pid))

    def _start_daemon(self, daemon: Daemon, args: Sequence[str], timeout: float) -> int:
        if self._pid(daemon) is not None:
            raise self._failure([daemon.value], f"{daemon.value} is already running")
        p = self.paths
        cmd = [
            "ip", "netns", "exec", self.netns, daemon.value, *args,
            f"--pidfile={p.pidfile(daemon)}",
            f"--unixctl={p.ctl(daemon)}",
            f"--log-file={p.log(daemon)}",
            "-vconsole:off",
            "--detach",
        ]  # fmt: skip
        try:
            run(cmd, timeout=timeout, env=self.env, error=OvsError)
        except OvsError as exc:
            raise self._failure(cmd, exc.stderr, daemon, exc.returncode) from exc
        pid = self._read_pidfile(daemon)
        if pid is None or not pid_alive(pid):
            raise self._failure(cmd, "daemon exited right after start", daemon)
        self._pids[daemon] = pid
        # --detach returned, so the daemon has signalled readiness; the control socket must
        # be there (poll briefly in case the filesystem lags).
        deadline = time.monotonic() + timeout
        while not p.ctl(daemon).exists():
            if time.monotonic() > deadline or not pid_alive(pid):
                raise self._failure(cmd, f"{p.ctl(daemon)} never appeared", daemon)
            time.sleep(0.005)
        log.debug("%s: %s started, pid %d", self.name, daemon.value, pid)
        return pid

    def _stop_daemon(self, daemon: Daemon, timeout: float) -> None:
        pid = self._pid(daemon)
        self._pids.pop(daemon, None)
        if pid is None:
            return
        log.debug("%s: stopping %s pid %d", self.name, daemon.value, pid)
        stop_pids([pid], timeout=timeout)
        # After a SIGKILL the daemon could not remove its pidfile.
        self.paths.pidfile(daemon).unlink(missing_ok=True)

    def _refuse_second_vswitchd(self) -> None:
        if not netns_mod.netns_exists(self.netns):
            raise self._failure(["ip", "netns", "exec", self.netns], "no such network namespace")
        for pid in netns_mod.Netns(self.netns).pids():
            cmdline = process_cmdline(pid)
            if cmdline and os.path.basename(cmdline[0]) == Daemon.VSWITCHD.value:
                raise self._failure(
                    [Daemon.VSWITCHD.value],
                    f"network namespace {self.netns} already runs ovs-vswitchd (pid {pid});"
                    " only one userspace vswitchd can run per namespace",
                )

    def _failure(
        self,
        cmd: Sequence[str],
        message: str,
        daemon: Daemon | None = None,
        returncode: int = -1,
    ) -> OvsError:
        detail = f"{self.name}: {message}"
        if daemon is not None:
            detail += f"\n--- last lines of {self.paths.log(daemon)} ---\n{self._log_tail(daemon)}"
        return OvsError(cmd, returncode, detail)

    def _log_tail(self, daemon: Daemon, lines: int = 15) -> str:
        try:
            text = self.paths.log(daemon).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])
