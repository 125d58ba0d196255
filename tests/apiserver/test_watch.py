"""List and watch through the official client: resourceVersion continuity across reconnects,
bookmarks, 410 Gone then relist, selectors (with objects entering and leaving them), paging,
fan-out to many watchers, and a slow watcher that must not hold writers back."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from lab.apiserver import ApiServer, ServerOptions
from tests.apiserver.conftest import Watcher, pod_body, present, raw, version
from tests.support import body, meta

Seen = tuple[str, str, int]  # (event type, object name, resourceVersion)


@pytest.fixture
def small_server() -> Iterator[ApiServer]:
    """A server keeping only 5 events of history and sending bookmarks every 0.3 s."""
    srv = ApiServer(options=ServerOptions(history_size=5, bookmark_interval=0.3)).start()
    try:
        yield srv
    finally:
        srv.stop()


def _seen(event: dict[str, Any]) -> Seen:
    obj = event["raw_object"] if "raw_object" in event else event["object"]
    return (event["type"], obj["metadata"]["name"], int(obj["metadata"]["resourceVersion"]))


def _collect(w: Watcher, stream: Iterator[dict[str, Any]], count: int) -> list[Seen]:
    out: list[Seen] = []
    for event in stream:
        if event["type"] == "BOOKMARK":
            continue
        out.append(_seen(event))
        if len(out) == count:
            w.stop()
            break
    return out


def test_list_then_watch_loses_and_duplicates_nothing_across_a_reconnect(
    core: client.CoreV1Api, namespace: str
) -> None:
    for i in range(3):
        core.create_namespaced_pod(namespace, body(pod_body(f"pre-{i}")))
    listed = core.list_namespaced_pod(namespace)
    assert sorted(present(meta(p).name) for p in listed.items) == ["pre-0", "pre-1", "pre-2"]
    expected: list[Seen] = []

    def write(round_: int) -> None:
        p = core.create_namespaced_pod(namespace, body(pod_body(f"new-{round_}")))
        expected.append(("ADDED", f"new-{round_}", version(p)))
        p = core.patch_namespaced_pod(
            f"pre-{round_}", namespace, {"metadata": {"labels": {"r": str(round_)}}}
        )
        expected.append(("MODIFIED", f"pre-{round_}", version(p)))
        p = core.delete_namespaced_pod(f"new-{round_}", namespace)
        expected.append(("DELETED", f"new-{round_}", version(p)))

    write(0)
    w1 = Watcher()
    first = _collect(
        w1,
        w1.stream(
            core.list_namespaced_pod,
            namespace,
            resource_version=present(listed.metadata).resource_version,
            timeout_seconds=10,
        ),
        2,
    )
    # Disconnected: these happen while nobody watches.
    write(1)
    write(2)
    w2 = Watcher()
    rest = _collect(
        w2,
        w2.stream(
            core.list_namespaced_pod, namespace, resource_version=str(first[-1][2]), timeout_seconds=10
        ),
        7,
    )
    assert first + rest == expected
    # The DELETED event carries the object at the deletion's resourceVersion.
    assert rest[-1][0] == "DELETED"


def test_watch_from_unset_resource_version_starts_with_synthetic_adds(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, body(pod_body("a")))
    core.create_namespaced_pod(namespace, body(pod_body("b")))
    w = Watcher()
    events = _collect(w, w.stream(core.list_namespaced_pod, namespace, timeout_seconds=5), 2)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_bookmarks_carry_the_current_resource_version(small_server: ApiServer) -> None:
    with small_server.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(body({"metadata": {"name": "quiet"}}))
        core.create_namespace(body({"metadata": {"name": "busy"}}))
        rv = present(core.list_namespaced_pod("quiet").metadata).resource_version
        # Activity the watcher does not see (another namespace) still moves its bookmarks forward.
        busy = core.create_namespaced_pod("busy", body(pod_body("x")))
        w = Watcher()
        bookmarks = []
        started = time.monotonic()
        for event in w.stream(
            core.list_namespaced_pod,
            "quiet",
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=3,
        ):
            assert event["type"] == "BOOKMARK", event
            bookmarks.append(event["raw_object"])
            if len(bookmarks) == 2:
                w.stop()
                break
        assert time.monotonic() - started < 2.5
        for bookmark in bookmarks:
            assert bookmark["kind"] == "Pod" and bookmark["apiVersion"] == "v1"
            assert int(bookmark["metadata"]["resourceVersion"]) >= version(busy)
        # The client resumes from the bookmark's version.
        assert w.resource_version == bookmarks[-1]["metadata"]["resourceVersion"]


def test_send_initial_events_ends_with_an_annotated_bookmark(
    server: ApiServer, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, body(pod_body("a")))
    status, reply = raw(
        server,
        "GET",
        f"/api/v1/namespaces/{namespace}/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&resourceVersion=&timeoutSeconds=1",
        parse=False,
    )
    assert status == 200
    assert isinstance(reply, str)
    events = [json.loads(line) for line in reply.splitlines() if line]
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_too_old_resource_version_is_410_gone_then_relist_works(small_server: ApiServer) -> None:
    with small_server.api_client() as api:
        core = client.CoreV1Api(api)
        old_rv = present(core.list_namespaced_pod("default").metadata).resource_version
        for i in range(8):
            core.create_namespaced_pod("default", body(pod_body(f"p{i}")))
        # The raw stream: HTTP 200 with one ERROR event carrying a 410 Expired Status.
        status, reply = raw(
            small_server,
            "GET",
            f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={old_rv}",
            parse=False,
        )
        assert status == 200 and isinstance(reply, str)
        event = json.loads(reply.splitlines()[0])
        assert event["type"] == "ERROR"
        assert event["object"]["kind"] == "Status"
        assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
        # The official client turns it into ApiException(410).
        w = Watcher()
        with pytest.raises(client.ApiException) as exc:
            for _ in w.stream(
                core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=2
            ):
                pass
        assert exc.value.status == 410
        # An exact list at an expired version is 410 too (limit makes it exact) ...
        with pytest.raises(client.ApiException) as exc:
            core.list_namespaced_pod("default", resource_version=old_rv, limit=2)
        assert exc.value.status == 410
        # ... and a "not older than" list of it is simply served from the latest state.
        assert len(core.list_namespaced_pod("default", resource_version=old_rv).items) == 8
        # Relist, then watch from the fresh version: it works and sees the next change.
        relisted = core.list_namespaced_pod("default")
        assert len(relisted.items) == 8
        core.delete_namespaced_pod("p0", "default")
        w = Watcher()
        events = _collect(
            w,
            w.stream(
                core.list_namespaced_pod,
                "default",
                resource_version=present(relisted.metadata).resource_version,
                timeout_seconds=5,
            ),
            1,
        )
        assert [(t, n) for t, n, _ in events] == [("DELETED", "p0")]
        # A version from the future is refused with the real server's 504 "Too large resource version".
        future = str(small_server.store.resource_version + 100)
        with pytest.raises(client.ApiException) as exc:
            core.list_namespaced_pod("default", resource_version=future)
        assert exc.value.status == 504


def test_label_and_field_selectors_on_list(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, body(pod_body("a", {"app": "web", "tier": "front"}, node="n1")))
    core.create_namespaced_pod(namespace, body(pod_body("b", {"app": "web", "tier": "back"}, node="n2")))
    core.create_namespaced_pod(namespace, body(pod_body("c", {"app": "db"}, node="n1")))
    core.patch_namespaced_pod_status("c", namespace, {"status": {"phase": "Running"}})

    def names(**kwargs: Any) -> list[str]:
        return [present(meta(p).name) for p in core.list_namespaced_pod(namespace, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,tier!=front") == ["b"]
    assert names(label_selector="tier in (front, back)") == ["a", "b"]
    assert names(label_selector="tier notin (front)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(field_selector="spec.nodeName=n1") == ["a", "c"]
    assert names(field_selector="spec.nodeName=n1,status.phase!=Running") == ["a"]
    assert names(field_selector="status.phase=Running") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector=f"metadata.namespace=={namespace}", label_selector="app=db") == ["c"]
    everywhere = core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={namespace}")
    assert len(everywhere.items) == 3


def test_selectors_on_watch_turn_entering_and_leaving_into_added_and_deleted(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, body(pod_body("a", {"app": "web"})))
    rv = present(core.list_namespaced_pod(namespace).metadata).resource_version
    core.create_namespaced_pod(namespace, body(pod_body("b", {"app": "db"})))  # never matches
    core.patch_namespaced_pod("a", namespace, {"metadata": {"labels": {"app": "db"}}})  # leaves
    core.patch_namespaced_pod("b", namespace, {"metadata": {"labels": {"app": "web"}}})  # enters
    core.patch_namespaced_pod("b", namespace, {"metadata": {"labels": {"x": "1"}}})  # stays
    core.delete_namespaced_pod("b", namespace)  # deleted while matching
    w = Watcher()
    events = []
    for event in w.stream(
        core.list_namespaced_pod, namespace, resource_version=rv, label_selector="app=web", timeout_seconds=5
    ):
        events.append(
            (event["type"], event["object"].metadata.name, event["object"].metadata.labels.get("app"))
        )
        if len(events) == 4:
            w.stop()
            break
    # Leaving: DELETED with the last matching content; entering: ADDED.
    assert events == [
        ("DELETED", "a", "web"),
        ("ADDED", "b", "web"),
        ("MODIFIED", "b", "web"),
        ("DELETED", "b", "web"),
    ]
    # Field selectors on a watch: only pods bound to node n1.
    rv = present(core.list_namespaced_pod(namespace).metadata).resource_version
    core.create_namespaced_pod(namespace, body(pod_body("c", node="n2")))
    core.create_namespaced_pod(namespace, body(pod_body("d", node="n1")))
    w = Watcher()
    got = _collect(
        w,
        w.stream(
            core.list_namespaced_pod,
            namespace,
            resource_version=rv,
            field_selector="spec.nodeName=n1",
            timeout_seconds=5,
        ),
        1,
    )
    assert [(t, n) for t, n, _ in got] == [("ADDED", "d")]


def test_paging_serves_a_consistent_snapshot(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(5):
        core.create_namespaced_pod(namespace, body(pod_body(f"p{i}")))
    page = core.list_namespaced_pod(namespace, limit=2)
    assert [meta(p).name for p in page.items] == ["p0", "p1"]
    assert present(page.metadata).remaining_item_count == 3
    assert present(page.metadata)._continue
    snapshot_rv = present(page.metadata).resource_version
    # Changes after the first page do not show up in the following pages.
    core.delete_namespaced_pod("p3", namespace)
    core.create_namespaced_pod(namespace, body(pod_body("p2a")))
    names = [meta(p).name for p in page.items]
    while present(page.metadata)._continue:
        page = core.list_namespaced_pod(namespace, limit=2, _continue=present(page.metadata)._continue)
        assert present(page.metadata).resource_version == snapshot_rv
        names += [meta(p).name for p in page.items]
    assert names == ["p0", "p1", "p2", "p3", "p4"]
    with pytest.raises(client.ApiException) as exc:
        core.list_namespaced_pod(namespace, limit=2, _continue="garbage")
    assert exc.value.status == 400


def test_timeout_seconds_is_honoured(core: client.CoreV1Api, namespace: str) -> None:
    started = time.monotonic()
    w = Watcher()
    events = list(w.stream(core.list_namespaced_pod, namespace, resource_version="1", timeout_seconds=1))
    assert events == [] or all(e["type"] != "ERROR" for e in events)
    assert 0.9 <= time.monotonic() - started < 3


def test_twenty_watchers_each_see_every_event_of_1000_writes_in_order() -> None:
    writes = 1000
    with ApiServer() as srv, srv.api_client() as api:
        coord = client.CoordinationV1Api(api)
        rv0 = present(coord.list_namespaced_lease("default").metadata).resource_version
        results: list[list[Seen]] = [[] for _ in range(20)]
        errors: list[BaseException] = []
        ready = threading.Barrier(21)

        def watcher(index: int) -> None:
            try:
                with srv.api_client() as own:
                    own_coord = client.CoordinationV1Api(own)
                    w = Watcher()
                    stream = w.stream(
                        own_coord.list_namespaced_lease,
                        "default",
                        resource_version=rv0,
                        timeout_seconds=60,
                        deserialize=False,
                    )
                    ready.wait()
                    for event in stream:
                        obj = event["object"]
                        results[index].append(
                            (event["type"], obj["metadata"]["name"], int(obj["metadata"]["resourceVersion"]))
                        )
                        if len(results[index]) == writes:
                            w.stop()
                            break
            except BaseException as err:  # reported by the main thread
                errors.append(err)
                ready.abort()

        threads = [threading.Thread(target=watcher, args=(i,), daemon=True) for i in range(20)]
        for t in threads:
            t.start()
        ready.wait(timeout=30)
        started = time.monotonic()
        expected: list[Seen] = []
        for i in range(writes):
            name = f"l{i % 50}"
            if i < 50:
                lease = coord.create_namespaced_lease(
                    "default", body({"metadata": {"name": name}, "spec": {"holderIdentity": "w0"}})
                )
                expected.append(("ADDED", name, version(lease)))
            else:
                lease = coord.patch_namespaced_lease(name, "default", {"spec": {"holderIdentity": f"w{i}"}})
                expected.append(("MODIFIED", name, version(lease)))
        write_time = time.monotonic() - started
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert all(not t.is_alive() for t in threads)
        for seen in results:
            assert seen == expected
        assert write_time < 30, write_time


def test_a_slow_watcher_never_blocks_writers_and_is_cut_off() -> None:
    options = ServerOptions(watch_queue_size=20)
    with ApiServer(options=options) as srv, srv.api_client() as api:
        core = client.CoreV1Api(api)
        rv = present(core.list_namespaced_pod("default").metadata).resource_version
        # A client that asks for a watch and then never reads: tiny receive buffer, big objects.
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(
            f"GET /api/v1/namespaces/default/pods?watch=1&resourceVersion={rv} HTTP/1.1\r\n"
            "Host: x\r\n\r\n".encode()
        )
        # A fast watcher alongside it must get everything.
        w = Watcher()
        fast: list[Seen] = []
        fast_thread = threading.Thread(
            target=lambda: fast.extend(
                _collect(
                    w,
                    w.stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=60),
                    300,
                )
            ),
            daemon=True,
        )
        fast_thread.start()
        padding = "x" * 60_000
        started = time.monotonic()
        for i in range(150):
            big = pod_body(f"big{i}")
            big["metadata"]["annotations"] = {"pad": padding}
            core.create_namespaced_pod("default", body(big))
            core.patch_namespaced_pod(f"big{i}", "default", {"metadata": {"labels": {"n": str(i)}}})
        elapsed = time.monotonic() - started
        fast_thread.join(timeout=60)
        assert len(fast) == 300
        assert elapsed < 30
        # The slow watcher fell more than 20 events behind: its stream was ended (with fewer events).
        received = b""
        slow.settimeout(10)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        slow.close()
        assert received.endswith(b"\r\n0\r\n\r\n")
        assert 0 < received.count(b'"type":"ADDED"') < 150
