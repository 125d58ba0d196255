"""Running commands and stopping processes by PID, shared by the lab's netns and OVS helpers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class CommandError(Exception):
    """A command failed (non-zero exit, timeout, or missing executable).

    Carries the command line, its exit code (-1 when it did not run to completion) and its stderr.
    """

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: str, stdout: str = "") -> None:
        self.cmd = tuple(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.stdout = stdout
        super().__init__(
            f"command failed (exit {returncode}): {' '.join(self.cmd)}"
            + (f"\n{self.stderr}" if self.stderr else "")
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command printed and returned."""

    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    error: type[CommandError] = CommandError,
) -> CommandResult:
    """Run `cmd` (no shell) and return its output.

    Raises `error` (a CommandError subclass) when the executable is missing, the command times out,
    or (with check=True) it exits non-zero.
    """
    argv = [str(part) for part in cmd]
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            check=False,
        )
    except FileNotFoundError as exc:
        raise error(argv, -1, f"executable not found: {exc.filename or argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(argv, -1, f"timed out after {timeout:.1f}s") from exc
    result = CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise error(argv, proc.returncode, proc.stderr, proc.stdout)
    return result


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    return data[data.rfind(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """Return True if `pid` exists and is not a zombie.

    Detached daemons are re-parented to PID 1, which on some machines reaps late; a zombie has
    exited and holds no resources, so it counts as gone.
    """
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_start_time(pid: int) -> int | None:
    """Return the start time of `pid` in clock ticks since boot (guards against PID reuse)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[19])  # field 22 of /proc/PID/stat


def process_cmdline(pid: int) -> tuple[str, ...]:
    """Return the argv of `pid`, or an empty tuple if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Poll until every PID in `pids` is gone or `timeout` passes; return the ones still alive."""
    remaining = {pid for pid in pids if pid_alive(pid)}
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        time.sleep(0.01)
        remaining = {pid for pid in remaining if pid_alive(pid)}
    return remaining


def stop_pids(pids: Iterable[int], *, timeout: float = 5.0) -> set[int]:
    """Send SIGTERM to each PID, wait up to `timeout`, then SIGKILL what is left and wait again.

    Returns the PIDs that ignored SIGTERM and had to be killed (empty after a clean stop). The
    caller must have established that the PIDs are its own. Raises RuntimeError if a process
    survives SIGKILL (it is in uninterruptible sleep and cannot be stopped from here).
    """
    targets = {pid for pid in pids if pid > 1 and pid != os.getpid()}
    for pid in sorted(targets):
        _signal(pid, signal.SIGTERM)
    killed = wait_gone(targets, timeout)
    if not killed:
        return killed
    log.warning("SIGKILL after %.1fs: pids %s", timeout, sorted(killed))
    for pid in sorted(killed):
        _signal(pid, signal.SIGKILL)
    left = wait_gone(killed, 5.0)
    if left:
        raise RuntimeError(f"processes survived SIGKILL: {sorted(left)}")
    return killed


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
