"""Informers against the lab API server with the official client: list, watch, bookmarks, 410, reconnect."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from controller.dirty import DirtySet
from controller.informers import Informer, Informers, ModelSink, Resource, StoreSink, list_function
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel, Kind
from lab.apiserver import ApiServer, ServerOptions
from lab.apiserver.kubeconfig import api_client
from tests.controller.harness import free_port
from tests.controller.kube import node_obj, pod_obj
from tests.support import body, wait_until


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(check, timeout, "the informer to catch up", interval=0.05)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    srv = ApiServer("127.0.0.1", 0, options=ServerOptions(history_size=5, bookmark_interval=0.2)).start()
    try:
        yield srv
    finally:
        srv.stop()


def make_namespace(core: client.CoreV1Api) -> str:
    name = f"t-{secrets.token_hex(3)}"
    core.create_namespace(body({"metadata": {"name": name}}))
    return name


def namespaces_informer(server: ApiServer, **kwargs: Any) -> tuple[Informer, StoreSink]:
    sink = StoreSink(Resource.NAMESPACES)
    informer = Informer(
        Resource.NAMESPACES, list_function(Resource.NAMESPACES, server.api_client()), sink, **kwargs
    )
    return informer, sink


def test_the_store_follows_creates_and_deletes(server: ApiServer) -> None:
    core = client.CoreV1Api(server.api_client())
    informer, sink = namespaces_informer(server, resync_seconds=60)
    informer.start()
    try:
        eventually(informer.synced.is_set)
        name = make_namespace(core)
        eventually(lambda: name in sink.object_keys())
        core.delete_namespace(name)
        eventually(lambda: name not in sink.object_keys())
    finally:
        informer.stop()


def test_bookmarks_advance_the_resource_version_without_events(server: ApiServer) -> None:
    core = client.CoreV1Api(server.api_client())
    informer, _ = namespaces_informer(server, resync_seconds=3)
    informer.relist()
    listed = int(informer.resource_version or 0)
    core.create_node(body(node_obj("n1", "100.64.1.0/24", "198.18.0.11")))  # another resource moves on
    informer.watch_once()  # ~3s: only bookmarks arrive (the stand-in sends none to watches under 2s)
    assert int(informer.resource_version or 0) > listed


def test_a_compacted_resource_version_relists(server: ApiServer) -> None:
    core = client.CoreV1Api(server.api_client())
    metrics = ControllerMetrics()
    informer, sink = namespaces_informer(server, resync_seconds=60, metrics=metrics)
    informer.relist()
    stale = informer.resource_version
    created = [make_namespace(core) for _ in range(8)]  # more than the 5 events of history
    assert informer.resource_version == stale
    informer.start()  # its first watch from the stale version gets 410 Gone
    try:
        eventually(lambda: set(created) <= sink.object_keys())
        assert metrics.informer_relists.labels("namespaces")._value.get() == 2
        assert abs(metrics.informer_fresh.labels("namespaces")._value.get() - time.time()) < 10
        assert int(informer.resource_version or 0) > int(stale or 0)
    finally:
        informer.stop()


def test_an_unreachable_server_is_retried_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    informer = Informer(
        Resource.NODES,
        list_function(Resource.NODES, api_client(f"http://127.0.0.1:{port}")),
        StoreSink(Resource.NODES),
        resync_seconds=60,
    )
    with caplog.at_level(logging.WARNING, logger="controller.informers"):
        informer.start()
        try:
            eventually(lambda: any("retrying in" in r.getMessage() for r in caplog.records))
            assert not informer.synced.is_set()
            late = ApiServer("127.0.0.1", port).start()
            try:
                eventually(informer.synced.is_set, timeout=15)
            finally:
                late.stop()
        finally:
            informer.stop()


def test_nodes_and_pods_reach_the_model_and_mark_their_nodes_dirty(server: ApiServer) -> None:
    core = client.CoreV1Api(server.api_client())
    model, dirty = ClusterModel(), DirtySet()
    informers = Informers(server.api_client, model, dirty, resync_seconds=60)
    informers.start()
    try:
        eventually(informers.synced)
        core.create_node(body(node_obj("n1", "100.64.1.0/24", "198.18.0.11")))
        core.create_node(body(node_obj("n2", "100.64.2.0/24", "198.18.0.12")))
        eventually(lambda: model.node_names() == {"n1", "n2"})
        eventually(lambda: dirty.pending() == {"n1", "n2"})
        while (taken := dirty.take(timeout=0)) is not None:
            dirty.done(taken)
        ns = make_namespace(core)
        eventually(lambda: ns in informers.namespaces.object_keys())
        pod = pod_obj(ns, "web", "n2", "100.64.2.10")
        core.create_namespaced_pod(ns, body({k: pod[k] for k in ("metadata", "spec")}))
        eventually(lambda: len(model.snapshot().pods_on("n2")) == 1)
        assert dirty.pending() == {"n2"}  # only the pod's own node
    finally:
        informers.stop()


def test_a_malformed_node_is_skipped_and_the_rest_kept(
    server: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    core = client.CoreV1Api(server.api_client())
    model, dirty = ClusterModel(), DirtySet()
    sink = ModelSink(Kind.NODE, model, dirty)
    informer = Informer(
        Resource.NODES, list_function(Resource.NODES, server.api_client()), sink, resync_seconds=1
    )
    core.create_node(body(node_obj("bad", None, "198.18.0.13")))
    core.create_node(body(node_obj("good", "100.64.1.0/24", "198.18.0.11")))
    with caplog.at_level(logging.WARNING, logger="controller.model"):
        informer.start()
        try:
            eventually(lambda: model.node_names() == {"good"})
            time.sleep(2.5)  # two periodic relists see the bad node again
        finally:
            informer.stop()
    lines = [r.getMessage() for r in caplog.records if "skipping Node bad" in r.getMessage()]
    assert len(lines) == 1 and "podCIDR" in lines[0]


def test_a_new_watch_resumes_from_the_last_version_without_a_relist(server: ApiServer) -> None:
    core = client.CoreV1Api(server.api_client())
    metrics = ControllerMetrics()
    # Watches last until the resync is due (3s after the list), then at least 1s.
    informer, sink = namespaces_informer(server, resync_seconds=3, metrics=metrics)
    informer.relist()
    first = make_namespace(core)
    informer.watch_once()
    assert first in sink.object_keys()
    seen = informer.resource_version
    second = make_namespace(core)  # happens while nobody watches
    informer.watch_once()  # replayed from `seen`, not relisted
    assert second in sink.object_keys()
    assert int(informer.resource_version or 0) > int(seen or 0)
    assert metrics.informer_relists.labels("namespaces")._value.get() == 1


def test_staleness_grows_while_the_server_is_away_and_resets_once_it_answers() -> None:
    port = free_port()
    metrics = ControllerMetrics()
    sink = StoreSink(Resource.NAMESPACES)
    informer = Informer(
        Resource.NAMESPACES,
        list_function(Resource.NAMESPACES, api_client(f"http://127.0.0.1:{port}")),
        sink,
        resync_seconds=60,
        metrics=metrics,
    )

    def exported(name: str) -> float:
        value = metrics.registry.get_sample_value(name, {"resource": "namespaces"})
        assert value is not None
        return value

    informer.start()
    try:
        eventually(lambda: informer.staleness() > 1.5)
        assert exported("sluice_controller_informer_staleness_seconds") > 1.5
        late = ApiServer("127.0.0.1", port, options=ServerOptions(bookmark_interval=0.2)).start()
        try:
            eventually(informer.synced.is_set, timeout=20)
            name = make_namespace(client.CoreV1Api(late.api_client()))
            eventually(lambda: name in sink.object_keys())
            # The list and the event just made it current again (the bound only absorbs a
            # loaded machine; while the server was away it kept growing past 1.5s).
            assert exported("sluice_controller_informer_staleness_seconds") < 5
            assert exported("sluice_controller_informer_event_seconds_count") >= 1
        finally:
            late.stop()
    finally:
        informer.stop()
