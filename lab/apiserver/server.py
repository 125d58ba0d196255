"""The HTTP(S) transport and the `ApiServer` object that owns the store, the persister and the
listening socket.

HTTP/1.1 with keep-alive, one thread per connection (`ThreadingHTTPServer`); TLS handshakes run
in the connection's thread, never in the accept loop. Watches are chunked responses written by
their connection's thread; writers never touch a watcher's socket (see `store.Watcher`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.apiserver.api import MAX_BODY_BYTES, Api, Request, Response, WatchSettings, WatchStream
from lab.apiserver.errors import ApiError, Reason, status_object
from lab.apiserver.kubeconfig import api_client, kubeconfig, kubeconfig_yaml
from lab.apiserver.persist import FilePersister, atomic_write, load_state
from lab.apiserver.store import Store
from lab.apiserver.tls import ensure_tls

log = logging.getLogger(__name__)

URL_FILE = "apiserver.url"
KUBECONFIG_FILE = "kubeconfig"
PKI_DIR = "pki"
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
_DRAIN_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Tuning of the stand-in; the defaults suit the lab."""

    history_size: int = 10_000  # events kept for watch replay; older resourceVersions get 410 Gone
    watch_queue_size: int = 1_000  # live events a watcher may fall behind before its stream is closed
    bookmark_interval: float = 60.0  # seconds between BOOKMARK events (allowWatchBookmarks=true)
    default_watch_timeout: float = 1800.0  # seconds a watch without timeoutSeconds lasts
    service_cidr: str = "100.127.0.0/16"  # Service cluster IPs are allocated from this range
    extra_sans: tuple[str, ...] = ()  # more names/IPs for the TLS server certificate
    flush_interval: float = 0.2  # at most this many seconds between a write and its save to disk
    idle_timeout: float = 120.0  # seconds an idle keep-alive connection (or a blocked write) may last


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, owner: ApiServer) -> None:
        self.address_family = family
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Dropped connections and failed TLS handshakes are routine; never print tracebacks for them.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        owner = self.server.owner
        if owner.ssl_context is not None:
            self.request.settimeout(10.0)
            self.request = owner.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()
        self.connection.settimeout(owner.options.idle_timeout)
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK stall every response by 40 ms.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, response: Response) -> None:
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-cache, private")
        for warning in response.warnings:
            self.send_header("Warning", '299 - "' + warning.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def _send_error(self, err: ApiError) -> None:
        self._send(Response(err.code, json.dumps(err.status()).encode()))

    def _read_body(self) -> bytes | None:
        """Return the request body, or None after answering 413/400 (the connection then closes)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    self._send_error(ApiError(400, Reason.BAD_REQUEST, "malformed chunked request body"))
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._send_error(_too_large())
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            self._send_error(ApiError(400, Reason.BAD_REQUEST, f"invalid Content-Length {length_text!r}"))
            return None
        if length > MAX_BODY_BYTES:
            # Read (and drop) a moderately oversized body first, so that the client, still sending,
            # gets the 413 Status rather than a broken pipe.
            remaining = length if length <= _DRAIN_LIMIT else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            self.close_connection = True
            self._send_error(_too_large())
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _authorized(self, path: str) -> bool:
        token = self.server.owner.token
        if token is None or path in _PUBLIC_PATHS:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def _client_gone(self) -> bool:
        # During a watch the client sends nothing; a readable socket means it closed (or broke) the
        # connection, so the stream can end now instead of at the next event.
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _serve(self) -> None:
        split = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        if not self._authorized(split.path):
            self._send(
                Response(401, json.dumps(status_object(401, Reason.UNAUTHORIZED, "Unauthorized")).encode())
            )
            return
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            content_type=self.headers.get("Content-Type", ""),
            accept=self.headers.get("Accept", ""),
            body=body,
        )
        try:
            result = self.server.owner.api.handle(request)
        except Exception:
            log.exception("internal error serving %s %s", self.command, self.path)
            self._send_error(
                ApiError(500, Reason.INTERNAL_ERROR, f"internal error serving {self.command} {split.path}")
            )
            return
        if isinstance(result, Response):
            self._send(result)
        else:
            self._stream(result)

    def _stream(self, stream: WatchStream) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        try:
            stream.run(write, self._client_gone)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            log.debug("watch client went away")


def _too_large() -> ApiError:
    return ApiError(
        413, Reason.REQUEST_ENTITY_TOO_LARGE, f"the request body is larger than {MAX_BODY_BYTES} bytes"
    )


class ApiServer:
    """The stand-in, in-process: `ApiServer("127.0.0.1", 0).start()`, then `.url`, `.api_client()`,
    `.kubeconfig()`, and `.stop()` (or use it as a context manager).

    With `data_dir`, the state is saved there (state.json) and reloaded at the next start, the URL
    is written to `apiserver.url`, a kubeconfig to `kubeconfig`, and with TLS the CA and server
    certificate to `pki/`. Without it, the state lives in memory and TLS files in a temp dir.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        token: str | None = None,
        tls: bool = False,
        options: ServerOptions | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.token = token or None
        self.tls = tls
        self.options = options or ServerOptions()
        self.store = Store(
            history_size=self.options.history_size,
            watch_queue_size=self.options.watch_queue_size,
            service_cidr=self.options.service_cidr,
        )
        self.api = Api(
            self.store,
            WatchSettings(
                bookmark_interval=self.options.bookmark_interval,
                default_timeout=self.options.default_watch_timeout,
            ),
            self._server_address,
        )
        self.ssl_context: ssl.SSLContext | None = None
        self.ca_file: Path | None = None
        self._persister: FilePersister | None = None
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ApiServer:
        """Load state, bind the socket and serve in a background thread; return self.

        Raises OSError when the address cannot be bound, ValueError for a corrupt state file.
        """
        if self._httpd is not None:
            raise RuntimeError("the API server is already running")
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            state = load_state(self.data_dir)
            if state is not None:
                self.store.import_state(state)
                log.info(
                    "loaded state at resourceVersion %d from %s", self.store.resource_version, self.data_dir
                )
            self._persister = FilePersister(
                self.data_dir, self.store.export_state, self.options.flush_interval
            )
            self.store.set_persister(self._persister)
            self._persister.start()
        self.store.bootstrap()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        if self.tls:
            if self.data_dir is not None:
                pki = self.data_dir / PKI_DIR
            else:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="sluice-apiserver-pki-"))
                pki = self._tmpdir
            files = ensure_tls(pki, (self.host, *self.options.extra_sans))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(files.cert, files.key)
            context.set_alpn_protocols(["http/1.1"])
            self.ssl_context = context
            self.ca_file = files.ca_cert
        try:
            self._httpd = _HttpServer((self.host, self.requested_port), family, self)
        except OSError:
            self._release_files()
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="apiserver-http",
            daemon=True,
        )
        self._thread.start()
        if self.data_dir is not None:
            atomic_write(self.data_dir / URL_FILE, (self.url + "\n").encode(), 0o644)
            atomic_write(self.data_dir / KUBECONFIG_FILE, self.kubeconfig_yaml().encode(), 0o600)
        log.info("lab API server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving: close watches and connections, save the state, remove temp files (idempotent)."""
        httpd = self._httpd
        if httpd is None:
            return
        self._httpd = None
        httpd.shutdown()
        self.store.close_watchers()
        httpd.close_connections()
        httpd.server_close()
        deadline = time.monotonic() + 5.0
        while httpd.open_connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release_files()
        log.info("lab API server stopped")

    def _release_files(self) -> None:
        if self._persister is not None:
            self._persister.close()
            self.store.set_persister(None)
            self._persister = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses and clients ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the bound port (useful with port 0)."""
        if self._httpd is None:
            raise RuntimeError("the API server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Return the URL clients use, e.g. `https://127.0.0.1:6443`."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _server_address(self) -> str:
        return self.url.split("://", 1)[1]

    @property
    def ca_pem(self) -> bytes | None:
        """Return the CA certificate (PEM) clients must trust, or None without TLS."""
        return self.ca_file.read_bytes() if self.ca_file is not None else None

    def kubeconfig(self, name: str = "sluice-lab") -> dict[str, Any]:
        """Return a kubeconfig dict for this server (CA embedded, bearer token if one is set)."""
        return kubeconfig(self.url, ca_pem=self.ca_pem, token=self.token, name=name)

    def kubeconfig_yaml(self, name: str = "sluice-lab") -> str:
        """Return the kubeconfig as YAML text."""
        return kubeconfig_yaml(self.url, ca_pem=self.ca_pem, token=self.token, name=name)

    def write_kubeconfig(self, path: str | Path, name: str = "sluice-lab") -> Path:
        """Write the kubeconfig to `path` (mode 0600) and return the path."""
        target = Path(path)
        atomic_write(target, self.kubeconfig_yaml(name).encode(), 0o600)
        return target

    def api_client(self) -> Any:
        """Return an official `kubernetes.client.ApiClient` configured for this server."""
        return api_client(self.url, ca_file=self.ca_file, token=self.token)
