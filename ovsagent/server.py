"""The CNI server: the agent's unix socket, one thread per connection, one request per connection.

The socket file is created with mode 0600 (only root, i.e. the runtime, may ask for pods) in a
directory created if missing; a stale socket left by a crashed agent is replaced. The protocol is
`cni.protocol` (newline-delimited JSON, see docs/cni.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from cni.protocol import ErrorCode, ProtocolError, Request, Response, read_request, write_response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Response]
# A connection that sends nothing for this long is dropped (the plugin sends at once).
READ_TIMEOUT = 30.0


class ServerError(Exception):
    """The socket cannot be created; the message names the path."""


class CniServer:
    """Serves CNI requests on a unix socket with `handler`, each connection in its own thread."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._active: set[threading.Thread] = set()
        self._active_lock = threading.Lock()

    def start(self) -> CniServer:
        """Bind and listen (mode 0600), then accept in a background thread. Raises ServerError."""
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)  # a crashed agent's socket: nobody serves it any more
                else:
                    raise ServerError(f"{self.path} exists and is not a socket: refusing to replace it")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)  # the socket is born 0600: no window where others connect
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            listener.listen(128)
        except OSError as exc:
            raise ServerError(f"cannot serve CNI on {self.path}: {exc.strerror or exc}") from None
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="cni-accept", daemon=True)
        self._thread.start()
        log.info("serving CNI on %s", self.path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket file, wait (bounded) for requests in flight."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._active_lock:
            active = list(self._active)
        for thread in active:
            thread.join(timeout)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept on %s failed", self.path)
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="cni-conn", daemon=True)
            with self._active_lock:
                self._active.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            with conn, cast(BinaryIO, conn.makefile("rwb")) as stream:
                try:
                    request = read_request(stream)
                except (ProtocolError, OSError) as exc:
                    log.warning("bad request on %s: %s", self.path, exc)
                    with contextlib.suppress(ProtocolError, OSError):
                        write_response(stream, Response.failure(ErrorCode.DECODING_FAILURE, str(exc)))
                    return
                conn.settimeout(None)  # the handler bounds itself by the request's deadline
                response = self.handler(request)
                try:
                    write_response(stream, response)
                except (ProtocolError, OSError) as exc:
                    log.warning("%s: cannot answer (the plugin gave up?): %s", request.command, exc)
        except Exception:
            log.exception("CNI connection failed")
        finally:
            with self._active_lock:
                self._active.discard(threading.current_thread())
