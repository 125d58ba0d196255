"""List + watch of Nodes, Pods, Namespaces and NetworkPolicies with the official `kubernetes` client.

Each resource has one `Informer` thread: it lists (feeding the sink the complete set), then
watches from the list's resourceVersion with bookmarks, keeping the resourceVersion of every
event and bookmark, so a watch that ends (server timeout, dropped connection) resumes exactly
where it stopped. `410 Gone` (as an HTTP status or a watch ERROR event) means the version was
compacted away: the informer relists. Connection errors back off exponentially (0.5s to 30s).
Every `resync_seconds` the informer relists anyway (the periodic full resync).

Objects travel as plain dicts (the response bodies are read with `_preload_content=False` and
parsed with `json`): the model parses what it needs once, and the client's model classes are
never built. Sinks turn events into model updates: Nodes and Pods go to the ClusterModel and
mark the affected nodes dirty; Namespaces and NetworkPolicies are kept in a store for the policy
compiler (no flows depend on them yet).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from controller.dirty import DirtySet
from controller.metrics import ControllerMetrics
from controller.model import ClusterModel, Kind

log = logging.getLogger(__name__)

KubeObject = Mapping[str, Any]
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
WATCH_MAX_SECONDS = 300
CONNECT_TIMEOUT = 10.0


class Resource(enum.Enum):
    """The resources the controller watches."""

    NODES = "nodes"
    PODS = "pods"
    NAMESPACES = "namespaces"
    NETWORK_POLICIES = "networkpolicies"


class Sink(Protocol):
    """Where an informer's objects go."""

    def replace(self, objs: list[KubeObject]) -> None:
        """The complete current set (after a list)."""
        ...

    def upsert(self, obj: KubeObject) -> None:
        """An object added or modified."""
        ...

    def delete(self, obj: KubeObject) -> None:
        """An object deleted."""
        ...


class ModelSink:
    """Feeds Node or Pod objects to the ClusterModel and marks the affected nodes dirty."""

    def __init__(self, kind: Kind, model: ClusterModel, dirty: DirtySet) -> None:
        self._kind = kind
        self._model = model
        self._dirty = dirty

    def replace(self, objs: list[KubeObject]) -> None:
        """Replace every object of the kind."""
        self._dirty.mark(self._model.replace(self._kind, objs))

    def upsert(self, obj: KubeObject) -> None:
        """Add or update one object."""
        self._dirty.mark(self._model.upsert(self._kind, obj))

    def delete(self, obj: KubeObject) -> None:
        """Remove one object."""
        self._dirty.mark(self._model.delete(self._kind, obj))


def _object_key(obj: KubeObject) -> str | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if isinstance(namespace, str) and namespace else str(meta["name"])


class StoreSink:
    """Keeps the current objects of a resource by `namespace/name` (or name)."""

    def __init__(self, resource: Resource) -> None:
        self._resource = resource
        self._lock = threading.Lock()
        self._objects: dict[str, KubeObject] = {}

    def replace(self, objs: list[KubeObject]) -> None:
        """Replace every object."""
        fresh = {key: obj for obj in objs if (key := _object_key(obj)) is not None}
        with self._lock:
            self._objects = fresh

    def upsert(self, obj: KubeObject) -> None:
        """Add or update one object (an object without a name is skipped with one log line)."""
        key = _object_key(obj)
        if key is None:
            log.warning("skipping a %s object without metadata.name", self._resource.value)
            return
        with self._lock:
            self._objects[key] = obj

    def delete(self, obj: KubeObject) -> None:
        """Remove one object."""
        key = _object_key(obj)
        if key is not None:
            with self._lock:
                self._objects.pop(key, None)

    def object_keys(self) -> set[str]:
        """Return the keys of the objects held."""
        with self._lock:
            return set(self._objects)


ListFunc = Callable[..., Any]


def api_client(kubeconfig: str | None) -> Any:
    """Return a kubernetes ApiClient for `kubeconfig`, or the in-cluster service account if None.

    Raises kubernetes.config.ConfigException (or OSError) when neither works.
    """
    configuration = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s_client.ApiClient(configuration)


def list_function(resource: Resource, api: Any) -> ListFunc:
    """Return the client method that lists (and, with watch=True, watches) `resource` cluster-wide."""
    if resource is Resource.NODES:
        return k8s_client.CoreV1Api(api).list_node
    if resource is Resource.PODS:
        return k8s_client.CoreV1Api(api).list_pod_for_all_namespaces
    if resource is Resource.NAMESPACES:
        return k8s_client.CoreV1Api(api).list_namespace
    return k8s_client.NetworkingV1Api(api).list_network_policy_for_all_namespaces


class Gone(Exception):
    """The resourceVersion is too old (410): relist."""


def _resource_version(obj: object) -> str | None:
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str) and rv:
                return rv
    return None


def _shut_down(response: Any) -> None:
    """End the stream `response` another thread is reading, without waiting for that thread.

    Closing the response here would not do: http.client's close takes the buffered reader's
    lock, which the reading thread holds while it waits in a (TLS) read for the next chunk, a
    minute away on a quiet watch. Shutting the socket down makes that read return at once; the
    reading thread then closes the response itself.
    """
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is None:
        return
    # socket.socket's own shutdown: ssl.SSLSocket.shutdown would also drop the TLS state that
    # the reading thread is using. OSError: already closed, or never connected.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Informer:
    """List + watch of one resource on its own daemon thread, feeding `sink`."""

    def __init__(
        self,
        resource: Resource,
        list_func: ListFunc,
        sink: Sink,
        *,
        resync_seconds: float,
        metrics: ControllerMetrics | None = None,
        on_relist: Callable[[], None] | None = None,
    ) -> None:
        self.resource = resource
        self._list = list_func
        self._sink = sink
        self._resync = resync_seconds
        self._metrics = metrics
        self._on_relist = on_relist or (lambda: None)
        self._stopped = threading.Event()
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self._listed_at = 0.0
        self._started_at = time.monotonic()
        self._fresh_at: float | None = None  # monotonic time the informer last knew it was current
        self._response: Any = None
        if metrics is not None:
            metrics.informer_staleness.labels(resource.value).set_function(self.staleness)
        self._thread = threading.Thread(target=self._run, name=f"informer-{resource.value}", daemon=True)

    def staleness(self) -> float:
        """Return seconds since the informer last knew it was up to date with the API server.

        Up to date: a list, any watch event or bookmark, or a watch the server ended normally
        (its timeout ran out with nothing to tell). Before the first list: seconds since creation.
        """
        fresh = self._fresh_at
        return time.monotonic() - (fresh if fresh is not None else self._started_at)

    def start(self) -> None:
        """Start listing and watching."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; an open watch is ended at once (the thread then closes it)."""
        self._stopped.set()
        response = self._response
        if response is not None:
            _shut_down(response)

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the thread to end."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopped.is_set():
            try:
                if self.resource_version is None or time.monotonic() - self._listed_at >= self._resync:
                    self.relist()
                self.watch_once()
                backoff = BACKOFF_MIN
            except Gone:
                log.info(
                    "%s: resourceVersion %s is gone: relisting", self.resource.value, self.resource_version
                )
                self.resource_version = None
            except Exception as exc:
                if self._stopped.is_set():
                    break
                log.warning(
                    "%s: list/watch failed (%s); retrying in %.1fs", self.resource.value, _short(exc), backoff
                )
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def relist(self) -> None:
        """List every object, hand the set to the sink, remember the list's resourceVersion."""
        response = self._list(_preload_content=False, _request_timeout=(CONNECT_TIMEOUT, 60))
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = body.get("items") or []
        objs = [obj for obj in items if isinstance(obj, Mapping)]
        self._sink.replace(objs)
        self.resource_version = _resource_version(body) or ""
        self._listed_at = self._fresh_at = time.monotonic()
        if self._metrics is not None:
            self._metrics.informer_relists.labels(self.resource.value).inc()
            self._metrics.informer_fresh.labels(self.resource.value).set_to_current_time()
        log.info("%s: listed %d at resourceVersion %s", self.resource.value, len(objs), self.resource_version)
        self.synced.set()
        self._on_relist()

    def watch_once(self) -> None:
        """Watch from the current resourceVersion until the server ends the watch or a resync is due.

        Raises Gone on 410, other exceptions on connection trouble.
        """
        remaining = self._resync - (time.monotonic() - self._listed_at)
        timeout = int(max(1, min(WATCH_MAX_SECONDS, remaining)))
        try:
            response = self._list(
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, timeout + 30),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from None
            raise
        self._response = response
        try:
            for event in _events(iter_resp_lines(response)):  # type: ignore[no-untyped-call]
                if self._stopped.is_set():
                    return
                self.handle_event(event)
            # The server ended the watch normally: nothing happened that we did not see.
            self._fresh_at = time.monotonic()
        finally:
            self._response = None
            # Never reuse a watch's connection: a server may close it once the stream ends
            # without saying so, and the next request on it would fail and be retried.
            response.close()
            response.release_conn()

    def handle_event(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR). Raises Gone."""
        arrived = time.monotonic()
        kind, obj = event.get("type"), event.get("object")
        if self._metrics is not None:
            self._metrics.informer_events.labels(self.resource.value, str(kind)).inc()
            self._metrics.informer_fresh.labels(self.resource.value).set_to_current_time()
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, Mapping) else None
            if code == 410:
                raise Gone()
            message = obj.get("message") if isinstance(obj, Mapping) else obj
            raise RuntimeError(f"watch error {code}: {message}")
        if not isinstance(obj, Mapping):
            log.warning("%s: watch event %s without an object", self.resource.value, kind)
            return
        if kind == "ADDED" or kind == "MODIFIED":
            self._sink.upsert(obj)
        elif kind == "DELETED":
            self._sink.delete(obj)
        elif kind != "BOOKMARK":
            log.warning("%s: unknown watch event type %r", self.resource.value, kind)
            return
        rv = _resource_version(obj)
        if rv is not None:
            self.resource_version = rv
        self._fresh_at = time.monotonic()
        if self._metrics is not None and kind != "BOOKMARK":
            self._metrics.informer_event_seconds.labels(self.resource.value).observe(self._fresh_at - arrived)


def _events(lines: Iterable[str]) -> Iterator[Mapping[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("ignoring a watch line that is not JSON: %.80s", line)
            continue
        if isinstance(event, Mapping):
            yield event


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


class Informers:
    """The controller's informers: Nodes and Pods into the model, Namespaces and policies kept."""

    def __init__(
        self,
        api_factory: Callable[[], Any],
        model: ClusterModel,
        dirty: DirtySet,
        *,
        resync_seconds: float,
        metrics: ControllerMetrics | None = None,
        on_relist: Callable[[], None] | None = None,
    ) -> None:
        self.namespaces = StoreSink(Resource.NAMESPACES)
        self.network_policies = StoreSink(Resource.NETWORK_POLICIES)
        sinks: dict[Resource, Sink] = {
            Resource.NODES: ModelSink(Kind.NODE, model, dirty),
            Resource.PODS: ModelSink(Kind.POD, model, dirty),
            Resource.NAMESPACES: self.namespaces,
            Resource.NETWORK_POLICIES: self.network_policies,
        }
        self._apis: list[Any] = []
        self.informers: list[Informer] = []
        for resource, sink in sinks.items():
            api = api_factory()  # one client (connection pool) per informer: watches hold connections
            self._apis.append(api)
            self.informers.append(
                Informer(
                    resource,
                    list_function(resource, api),
                    sink,
                    resync_seconds=resync_seconds,
                    metrics=metrics,
                    on_relist=on_relist if resource is Resource.NODES else None,
                )
            )

    def start(self) -> None:
        """Start every informer."""
        for informer in self.informers:
            informer.start()

    def synced(self) -> bool:
        """Return True once every informer has listed at least once."""
        return all(i.synced.is_set() for i in self.informers)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every informer (waiting up to `timeout` seconds in all) and close the clients."""
        for informer in self.informers:
            informer.stop()
        deadline = time.monotonic() + timeout
        for informer in self.informers:
            informer.join(max(0.0, deadline - time.monotonic()))
        for api in self._apis:
            try:
                api.close()
            except Exception:
                log.debug("closing an API client failed")
