"""A small standard-library Kubernetes REST client for the lab's own commands (fast to import).

The lab CLI runs once per command (`sluice lab pod create ...`); the official client takes about a
second to import, this takes milliseconds. It speaks JSON over HTTPS with the lab's CA and bearer
token, read from a kubeconfig.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API request failed: carries the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class KubeClient:
    """Requests to one API server: its URL, an SSL context trusting its CA, and the bearer token."""

    server: str
    context: ssl.SSLContext | None
    token: str | None
    timeout: float = 10.0

    @staticmethod
    def from_kubeconfig(path: Path | str) -> KubeClient:
        """Build a client from the current context of the kubeconfig at `path`.

        Raises KubeError if the file is missing or lacks a server."""
        try:
            doc = yaml.safe_load(Path(path).read_text())
            current = doc.get("current-context")
            ctx = next(c["context"] for c in doc["contexts"] if c["name"] == current)
            cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
            user: dict[str, Any] = next(
                (u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user")), {}
            )
        except (OSError, yaml.YAMLError, KeyError, StopIteration, TypeError, AttributeError) as exc:
            raise KubeError(f"cannot read kubeconfig {path}: {exc}") from exc
        server = str(cluster["server"])
        context = None
        if server.startswith("https://"):
            context = ssl.create_default_context()
            if "certificate-authority-data" in cluster:
                ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
                context.load_verify_locations(cadata=ca)
        return KubeClient(server, context, user.get("token"))

    def request(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer.

        Raises KubeError with the status and the server's message on an error answer, and with
        status 0 when the server cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout, context=self.context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                detail = str(json.loads(detail).get("message", detail))
            raise KubeError(f"{method} {path}: {err.code} {detail}", err.code) from None
        except (OSError, ssl.SSLError) as err:
            raise KubeError(f"{method} {path}: cannot reach the API server {self.server}: {err}") from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        """GET `path`."""
        return self.request("GET", path)

    def create(self, path: str, body: Any) -> Any:
        """POST `body` to the collection `path`."""
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        """Merge-patch `path` with `body`."""
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def delete(self, path: str) -> Any:
        """DELETE `path`; returns None if it did not exist."""
        try:
            return self.request("DELETE", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def wait_ready(self, timeout: float) -> None:
        """Poll /readyz until it answers; raises KubeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/readyz", timeout=2)
                return
            except KubeError as exc:
                if exc.status == 200:
                    return
                if time.monotonic() > deadline:
                    raise KubeError(f"API server not ready after {timeout:.0f}s: {exc}") from exc
            except json.JSONDecodeError:
                return  # /readyz answers "ok" as text: it is up
            time.sleep(0.1)
