"""The plugin's stdin and stdout: reading the network config under a deadline, writing one JSON line."""

# No `from __future__ import annotations`: on the VERSION path even that import is measurable.

import posix
import sys
import time

MAX_STDIN_BYTES = 16 * 1024 * 1024


class StdinError(Exception):
    """Reading stdin failed (timed out, too large, or an I/O error); the message says which."""


def read_stdin(timeout: float, *, skip_tty: bool) -> bytes:
    """Return all of stdin, waiting at most `timeout` seconds for EOF; raise StdinError.

    A closed stdin reads as empty. With skip_tty, a terminal reads as empty instead of waiting for
    someone to type (an operator running VERSION by hand).
    """
    import select

    try:
        if skip_tty and posix.isatty(0):
            return b""
    except OSError:
        return b""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StdinError(f"timed out after {timeout:g}s reading the network configuration from stdin")
        try:
            ready, _, _ = select.select([0], [], [], left)
        except (OSError, ValueError):  # stdin is closed
            break
        if not ready:
            continue
        try:
            chunk = posix.read(0, 1 << 16)
        except OSError as exc:
            raise StdinError(f"cannot read the network configuration from stdin: {exc}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_STDIN_BYTES:
            raise StdinError(f"the network configuration on stdin exceeds {MAX_STDIN_BYTES} bytes")
    return b"".join(chunks)


def write_stdout(text: str) -> None:
    """Write one line to stdout and flush it; a reader that went away is ignored."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # the runtime stopped reading: nothing useful left to do
        pass
