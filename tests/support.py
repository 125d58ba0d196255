"""Helpers shared by every test folder: the skip-locally, fail-in-CI rule for missing
prerequisites, polling for a condition, Kubernetes objects to and from the typed client, and
reading a Prometheus /metrics page."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families


def body(obj: Mapping[str, Any]) -> Any:
    """`obj`, a Kubernetes object written as its JSON (malformed ones included, on purpose), as
    the body of a typed `kubernetes` client call, which sends a mapping as it is."""
    return obj


def meta(obj: Any) -> client.V1ObjectMeta:
    """An API object's metadata, which the API server always sends (the client's models type it
    as optional)."""
    metadata = obj.metadata
    assert isinstance(metadata, client.V1ObjectMeta), obj
    return metadata


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` on the /metrics page
    `text` (0 if there are none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def in_ci() -> bool:
    """Return True when running under CI (`CI=true`), where nothing may be skipped."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    """Skip the test with `reason` when `ok` is false; under CI, fail it instead.

    `reason` must say how to get the prerequisite (usually: run `make test` as root).
    """
    if ok:
        return
    if in_ci():
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root_and_ovs() -> None:
    """Require root, `ip netns` and the Open vSwitch daemons and tools."""
    require(os.geteuid() == 0, "needs root for network namespaces: run `make test` as root")
    for tool in ("ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"):
        require(
            shutil.which(tool) is not None
            or os.path.exists(f"/usr/sbin/{tool}")
            or os.path.exists(f"/usr/bin/{tool}"),
            f"needs {tool}: `make test` installs openvswitch-switch and iproute2",
        )


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `check` every `interval` seconds until true; after `timeout` seconds fail naming
    `what`, with `detail()` appended (e.g. the state that was waited on)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            message = f"timed out after {timeout}s waiting for {what}"
            raise AssertionError(f"{message}:\n{detail()}" if detail is not None else message)
        time.sleep(interval)
