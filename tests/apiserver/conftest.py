"""Fixtures for the API-server stand-in tests: real servers on 127.0.0.1 (port 0), the official
`kubernetes` client and raw HTTP, a fresh namespace per test."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from lab.apiserver import ApiServer


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    """A plain-HTTP stand-in shared by the tests of one module (each test uses its own namespace)."""
    srv = ApiServer("127.0.0.1", 0).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api(server: ApiServer) -> Iterator[client.ApiClient]:
    """An official client configured for `server`."""
    api_client = server.api_client()
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api on the module's server."""
    return client.CoreV1Api(api)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A namespace that exists for one test and is deleted (with its contents) afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.ApiException as err:
            if err.status != 404:
                raise


def pod_body(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> dict[str, Any]:
    """Return a minimal valid Pod."""
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def message(err: client.ApiException) -> str:
    """Return the message of the Status an ApiException carries."""
    status: dict[str, Any] = json.loads(err.body)
    assert status["kind"] == "Status", status
    return str(status["message"])


def raw(
    server: ApiServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    parse: bool = True,
) -> tuple[int, dict[str, Any] | str]:
    """Send one HTTP request with urllib; return (status, decoded JSON body, or text if not `parse`)."""
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, data = err.code, err.read()
    if not parse:
        return status, data.decode()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()
