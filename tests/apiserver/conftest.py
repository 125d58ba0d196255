"""Fixtures for the API-server stand-in tests: real servers on 127.0.0.1 (port 0), the official
`kubernetes` client and raw HTTP, a fresh namespace per test; helpers for the client's models,
every field of which is optional, and a typed `kubernetes.watch.Watch`."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch

from lab.apiserver import ApiServer
from tests.support import body

T = TypeVar("T")


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
    core.create_namespace(body({"metadata": {"name": name}}))
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


def present(value: T | None) -> T:
    """`value`, a field the API server fills in the object it returns (the client's models type
    every field as optional); the test fails if it is missing."""
    assert value is not None
    return value


def version(obj: Any) -> int:
    """The resourceVersion of an object or a list the API server returned, as the number it is."""
    metadata = obj.metadata
    assert isinstance(metadata, (client.V1ObjectMeta, client.V1ListMeta)), obj
    return int(present(metadata.resource_version))


class Watcher:
    """`kubernetes.watch.Watch`, whose methods the package leaves untyped, with types."""

    def __init__(self) -> None:
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]

    def stream(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """`Watch.stream`: the events (dicts with "type", "object" and "raw_object") of a watch
        made by the list call `func` with these arguments."""
        events: Iterator[dict[str, Any]] = self._watch.stream(  # type: ignore[no-untyped-call]
            func, *args, **kwargs
        )
        return events

    def stop(self) -> None:
        """`Watch.stop`: end the stream after the current event."""
        self._watch.stop()  # type: ignore[no-untyped-call]

    @property
    def resource_version(self) -> str | None:
        """The resourceVersion the watch resumes from: its last event's, bookmarks included."""
        resume: str | None = self._watch.resource_version
        return resume


def message(err: client.ApiException) -> str:
    """Return the message of the Status an ApiException carries."""
    status: dict[str, Any] = json.loads(present(err.body))
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
