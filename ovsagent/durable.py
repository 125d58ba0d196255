"""Files that survive a crash: written whole or not at all, with their directory entries fsync'ed.

Used by the IPAM store (`ovsagent.ipam`) and the agent's own state (`ovsagent.agent`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# Temporary files of writes in progress start with this; a crash may leave one behind, and the
# owner of the directory removes them.
TMP_PREFIX = ".tmp."


def fsync_dir(path: Path) -> None:
    """fsync directory `path`: the entries created, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A unique name, beside `path`, for a write in progress that will become `path`."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")


def write_synced(path: Path, payload: bytes) -> None:
    """Create `path` (which must not exist) with `payload`, fsync'ed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace `path` with `payload`: temporary file, fsync, rename, fsync the directory."""
    tmp = temp_path(path)
    write_synced(tmp, payload)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def makedirs_durable(path: Path) -> None:
    """Create `path` and missing parents, fsync'ing each parent so the new entries survive a crash."""
    missing: list[Path] = []
    probe = path.absolute()
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o755)
        fsync_dir(directory.parent)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")


def remove_durable(path: Path) -> bool:
    """Remove file `path` and fsync its directory; return False when there was none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True
