"""Saving the store to disk: one JSON file, replaced atomically (temp file, fsync, rename, fsync dir).

Writes are batched: a commit marks the state dirty and a background thread saves it at most every
`interval` seconds, so a burst of writes costs one file write. `close()` saves whatever is pending;
a crash (SIGKILL) can lose at most the last `interval` seconds of changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MIN_INTERVAL = 0.01


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(directory: Path) -> dict[str, Any] | None:
    """Return the saved state in `directory`, or None when there is none.

    Raises ValueError when the file exists but is not valid JSON.
    """
    path = directory / STATE_FILE
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    return data


class FilePersister:
    """Saves `export()` to DIR/state.json shortly after each `mark_dirty()`."""

    def __init__(self, directory: Path, export: Callable[[], dict[str, Any]], interval: float = 0.2) -> None:
        self._path = directory / STATE_FILE
        self._export = export
        # Never save synchronously from mark_dirty: it runs with the store lock held, and export()
        # takes that lock.
        self._interval = max(interval, MIN_INTERVAL)
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._save_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="apiserver-persist", daemon=True)

    def start(self) -> None:
        """Start the background saver."""
        self._thread.start()

    def mark_dirty(self) -> None:
        """Note that the state changed (called with the store lock held: must not block)."""
        self._dirty.set()

    def save(self) -> None:
        """Write the current state now."""
        with self._save_lock:
            state = self._export()
            atomic_write(self._path, json.dumps(state, separators=(",", ":")).encode())

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait()
            if self._stopping.is_set():
                break
            self._stopping.wait(self._interval)
            self._dirty.clear()
            try:
                self.save()
            except OSError:
                log.exception("saving %s failed; will retry on the next change", self._path)

    def close(self) -> None:
        """Stop the saver and write any pending change."""
        self._stopping.set()
        self._dirty.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.save()
