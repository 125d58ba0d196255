"""The object store: every object of every kind, one resourceVersion counter, the event history
that watches replay from, and the watchers that live events are fanned out to.

Stored objects are never mutated after they are committed: every write builds a new dict, so
lists, events and the persister can share them without copying. One lock guards everything;
writers never wait for a watcher, because each watcher has its own bounded queue and a watcher
whose queue is full is closed (its client re-watches from the last resourceVersion it saw).
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from lab.apiserver import patch as patches
from lab.apiserver.errors import (
    ApiError,
    JsonObj,
    Reason,
    bad_request,
    expired,
    too_large_resource_version,
)
from lab.apiserver.resources import NAMESPACES, RESOURCES, SERVICES, ResourceType, by_kind
from lab.apiserver.selectors import FieldSelector, LabelSelector, field_value
from lab.apiserver.strategy import allocate_service, invalid, prepare_create, prepare_update
from lab.apiserver.validation import validate

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONTINUE_VERSION = "meta.k8s.io/v1"


class EventType(enum.Enum):
    """Watch event types."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


class PatchType(enum.Enum):
    """The patch content types the server accepts."""

    JSON = "application/json-patch+json"
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one object: the new state (`obj`) and, for MODIFIED and DELETED, the previous one."""

    type: EventType
    rtype: ResourceType
    rv: int
    obj: JsonObj
    prev: JsonObj | None
    # The serialized `{"type","object"}` line, made once at commit time when someone is watching.
    line: bytes | None = None


def event_line(type_: str, obj: JsonObj) -> bytes:
    """Serialize one watch event as a JSON line."""
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def now_rfc3339() -> str:
    """Return the current UTC time in the metav1.Time wire format (seconds precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: JsonObj) -> Key:
    """Return the storage key of a stored object."""
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def object_fields(rt: ResourceType, obj: JsonObj) -> dict[str, str]:
    """Return the values field selectors see for this object."""
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    for label in rt.field_labels:
        fields[label] = field_value(obj, label)
    return fields


def supported_field_labels(rt: ResourceType) -> frozenset[str]:
    """Return the field selector labels this kind accepts."""
    return frozenset(("metadata.name", "metadata.namespace", *rt.field_labels))


@dataclass(frozen=True, slots=True)
class Filter:
    """What one list or watch wants: a namespace (None = all) and label/field selectors."""

    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    @property
    def trivial(self) -> bool:
        """Return True when the filter selects every object in its namespace scope."""
        return self.labels.empty and self.fields.empty

    def in_scope(self, obj: JsonObj) -> bool:
        """Return True if the object is in the filter's namespace."""
        return self.namespace is None or obj["metadata"].get("namespace", "") == self.namespace

    def matches(self, rt: ResourceType, obj: JsonObj) -> bool:
        """Return True if the object is in scope and satisfies both selectors."""
        if not self.in_scope(obj):
            return False
        if not self.labels.matches(obj["metadata"].get("labels")):
            return False
        return self.fields.empty or self.fields.matches(object_fields(rt, obj))


@dataclass(frozen=True, slots=True)
class ListResult:
    """One page of a list: items, the list's resourceVersion, and the paging fields."""

    items: list[JsonObj]
    resource_version: int
    continue_token: str = ""
    remaining: int | None = None


class Persister(Protocol):
    """Where the store's state goes (the file-backed persister, or nothing)."""

    def mark_dirty(self) -> None:
        """Note that the state changed; the persister saves it soon after."""


class Watcher:
    """The queue between the store and one watch stream.

    `offer` is called by writers with the store lock held and never blocks; when the queue is full
    the watcher is closed instead (overflowed). `take` is called by the stream's thread.
    """

    def __init__(self, store: Store, rtype: ResourceType, max_pending: int) -> None:
        self.rtype = rtype
        self._store = store
        self._cond = threading.Condition(store.lock)
        self._pending: deque[Event] = deque()
        self._max_pending = max_pending
        self.closed = False
        self.overflowed = False

    def offer(self, event: Event) -> bool:
        """Queue a live event (store lock held); return False, closing the watcher, when it overflows."""
        if self.closed:
            return False
        if len(self._pending) >= self._max_pending:
            self.overflowed = True
            self.closed = True
            self._cond.notify()
            return False
        self._pending.append(event)
        self._cond.notify()
        return True

    def take(self, timeout: float) -> tuple[list[Event], int, bool]:
        """Wait up to `timeout` for events; return (events, store resourceVersion, closed).

        The resourceVersion is read under the same lock that orders commits, so when no events are
        returned every event up to it has already been delivered: a safe bookmark.
        """
        with self._cond:
            if not self._pending and not self.closed:
                self._cond.wait(timeout)
            events = list(self._pending)
            self._pending.clear()
            return events, self._store.current_rv_locked(), self.closed

    def close(self) -> None:
        """Stop receiving events and wake the stream (idempotent)."""
        with self._cond:
            self.closed = True
            self._store.unregister_locked(self)
            self._cond.notify()


@dataclass(slots=True)
class _State:
    rv: int = 0
    objects: dict[ResourceType, dict[Key, JsonObj]] = field(default_factory=dict)


class Store:
    """All objects, their history and their watchers; every method is thread-safe."""

    def __init__(
        self,
        *,
        history_size: int = 10_000,
        watch_queue_size: int = 1_000,
        service_cidr: str = "100.127.0.0/16",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.Lock()
        self._history_size = history_size
        self._watch_queue_size = watch_queue_size
        self._service_cidr = ipaddress.IPv4Network(service_cidr)
        self._clock = clock
        self._state = _State(objects={rt: {} for rt in RESOURCES})
        self._history: deque[Event] = deque()
        self._history_start = 0
        self._watchers: dict[ResourceType, set[Watcher]] = {rt: set() for rt in RESOURCES}
        self._persister: Persister | None = None

    # -- lifecycle and persistence -------------------------------------------------------------

    def set_persister(self, persister: Persister | None) -> None:
        """Attach the persister told about every commit."""
        self._persister = persister

    def bootstrap(self) -> None:
        """Create the namespaces every cluster has (default, kube-system, ...) when they are missing."""
        for name in INITIAL_NAMESPACES:
            with self.lock:
                if ("", name) in self._state.objects[NAMESPACES]:
                    continue
            self.create(NAMESPACES, None, {"metadata": {"name": name}})

    def export_state(self) -> JsonObj:
        """Return the persistent state (counter and objects) as a JSON-ready dict sharing stored objects."""
        with self.lock:
            return {
                "apiVersion": "sluice.io/lab-apiserver-state/v1",
                "resourceVersion": self._state.rv,
                "objects": {rt.storage_name: list(objs.values()) for rt, objs in self._state.objects.items()},
            }

    def import_state(self, state: JsonObj) -> None:
        """Replace the contents with a state from `export_state`; history restarts at its counter.

        Raises ValueError when the document is not a state this server wrote.
        """
        if not isinstance(state, dict) or state.get("apiVersion") != "sluice.io/lab-apiserver-state/v1":
            raise ValueError(
                "not a lab API server state file (missing apiVersion sluice.io/lab-apiserver-state/v1)"
            )
        rv = state.get("resourceVersion")
        objects = state.get("objects")
        if not isinstance(rv, int) or not isinstance(objects, dict):
            raise ValueError("state file has no integer resourceVersion or no objects map")
        by_storage = {rt.storage_name: rt for rt in RESOURCES}
        loaded: dict[ResourceType, dict[Key, JsonObj]] = {rt: {} for rt in RESOURCES}
        for name, items in objects.items():
            rt = by_storage.get(name)
            if rt is None:
                log.warning("state file: ignoring unknown resource %s", name)
                continue
            if not isinstance(items, list):
                raise ValueError(f"state file: {name} is not a list of objects")
            for obj in items:
                try:
                    loaded[rt][key_of(obj)] = obj
                    int(obj["metadata"]["resourceVersion"])
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ValueError(f"state file: a {rt.kind} without a name or resourceVersion") from None
        with self.lock:
            self._state = _State(rv=rv, objects=loaded)
            self._history.clear()
            self._history_start = rv

    def close_watchers(self) -> None:
        """Close every watch (server shutdown)."""
        with self.lock:
            watchers = [w for ws in self._watchers.values() for w in ws]
        for watcher in watchers:
            watcher.close()

    # -- reads ----------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """Return the current value of the resourceVersion counter."""
        with self.lock:
            return self._state.rv

    def current_rv_locked(self) -> int:
        """Return the counter; the caller holds `lock`."""
        return self._state.rv

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj:
        """Return the stored object; raise ApiError 404 when there is none."""
        with self.lock:
            return self._get_locked(rt, namespace, name)

    def _get_locked(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj:
        obj = self._state.objects[rt].get((namespace or "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list_objects(
        self,
        rt: ResourceType,
        flt: Filter,
        *,
        resource_version: str = "",
        resource_version_match: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        """List objects with the real server's resourceVersion semantics and paging.

        Unset or "0" reads the latest state; with `limit` (or match=Exact) a specific version is
        served exactly, reconstructed from the history, else the latest state not older than it.
        A continue token pages through the snapshot its first page was read at. Raises ApiError
        410 when the version is older than the history, 504 when it is newer than the counter.
        """
        if resource_version_match not in ("", "Exact", "NotOlderThan"):
            raise bad_request(
                f'resourceVersionMatch: Unsupported value: "{resource_version_match}": '
                'supported values: "Exact", "NotOlderThan"'
            )
        if resource_version_match and not resource_version:
            raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if continue_token and resource_version not in ("", "0"):
            raise bad_request("specifying resource version is not allowed when using continue")
        if resource_version_match == "Exact" and resource_version == "0":
            raise bad_request('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
        start_after: Key | None = None
        with self.lock:
            current = self._state.rv
            if continue_token:
                snap_rv, start_after = _decode_continue(continue_token)
                if snap_rv < 0:
                    snap_rv = current
                try:
                    snapshot = self._snapshot_locked(rt, snap_rv)
                except ApiError as err:
                    if err.code != 410:
                        raise
                    raise ApiError(
                        410,
                        Reason.EXPIRED,
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter, or use the continue token "
                        "in this response to retrieve the remainder of the results. Continuing with the "
                        "provided token results in an inconsistent list - objects that were created, "
                        "modified, or deleted between the time the first chunk was returned and now may "
                        "show up in the list.",
                        metadata={"continue": _encode_continue(-1, start_after)},
                    ) from None
            elif resource_version in ("", "0"):
                snap_rv, snapshot = current, dict(self._state.objects[rt])
            else:
                requested = _parse_rv(resource_version)
                exact = resource_version_match == "Exact" or (not resource_version_match and limit > 0)
                if requested > current:
                    raise too_large_resource_version(requested, current)
                if exact:
                    snap_rv, snapshot = requested, self._snapshot_locked(rt, requested)
                else:
                    snap_rv, snapshot = current, dict(self._state.objects[rt])
        keys = sorted(k for k in snapshot if flt.namespace is None or k[0] == flt.namespace)
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        items: list[JsonObj] = []
        token = ""
        remaining: int | None = None
        for index, key in enumerate(keys):
            obj = snapshot[key]
            if not flt.matches(rt, obj):
                continue
            if limit and len(items) == limit:
                token = _encode_continue(snap_rv, key_of(items[-1]))
                if flt.trivial:
                    remaining = len(keys) - index
                break
            items.append(obj)
        return ListResult(items, snap_rv, token, remaining)

    def _snapshot_locked(self, rt: ResourceType, rv: int) -> dict[Key, JsonObj]:
        current = self._state.rv
        if rv > current:
            raise too_large_resource_version(rv, current)
        snapshot = dict(self._state.objects[rt])
        if rv == current:
            return snapshot
        if rv < self._history_start:
            raise expired("The resourceVersion for the provided list is too old.")
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.rtype is not rt:
                continue
            key = key_of(event.obj)
            if event.type is EventType.ADDED:
                snapshot.pop(key, None)
            elif event.prev is not None:
                snapshot[key] = event.prev
        return snapshot

    # -- watches --------------------------------------------------------------------------------

    def watch(
        self, rt: ResourceType, flt: Filter, *, resource_version: str, send_initial_events: bool | None
    ) -> tuple[Watcher, list[Event], int]:
        """Register a watcher; return it, the events to send first, and the counter it starts after.

        Unset or "0" (or sendInitialEvents=true) starts with a synthetic ADDED per existing object;
        a specific resourceVersion replays the history after it. Raises ApiError 410 (too old) or
        504 (newer than the counter); the caller sends those as an ERROR event.
        """
        with self.lock:
            current = self._state.rv
            initial: list[Event] = []
            if send_initial_events or (send_initial_events is None and resource_version in ("", "0")):
                for key in sorted(self._state.objects[rt]):
                    obj = self._state.objects[rt][key]
                    if flt.in_scope(obj):
                        initial.append(
                            Event(EventType.ADDED, rt, int(obj["metadata"]["resourceVersion"]), obj, None)
                        )
            elif resource_version not in ("", "0"):
                requested = _parse_rv(resource_version)
                if requested > current:
                    raise too_large_resource_version(requested, current)
                if requested < self._history_start:
                    raise expired(f"too old resource version: {requested} ({self._history_start})")
                initial = [e for e in self._history if e.rv > requested and e.rtype is rt]
            watcher = Watcher(self, rt, self._watch_queue_size)
            self._watchers[rt].add(watcher)
            return watcher, initial, current

    def unregister_locked(self, watcher: Watcher) -> None:
        """Forget a watcher; the caller holds `lock`."""
        self._watchers[watcher.rtype].discard(watcher)

    def watcher_count(self) -> int:
        """Return how many watches are open."""
        with self.lock:
            return sum(len(ws) for ws in self._watchers.values())

    # -- writes ---------------------------------------------------------------------------------

    def _commit_locked(
        self, rt: ResourceType, type_: EventType, obj: JsonObj, prev: JsonObj | None
    ) -> JsonObj:
        """Store (or, for DELETED, remove) `obj` at the next resourceVersion and publish the event."""
        self._state.rv += 1
        rv = self._state.rv
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        key = key_of(stored)
        if type_ is EventType.DELETED:
            self._state.objects[rt].pop(key, None)
        else:
            self._state.objects[rt][key] = stored
        watchers = self._watchers[rt]
        line = event_line(type_.value, stored) if watchers else None
        event = Event(type_, rt, rv, stored, prev, line)
        self._history.append(event)
        while len(self._history) > self._history_size:
            self._history_start = self._history.popleft().rv
        if watchers:
            for watcher in list(watchers):
                if not watcher.offer(event):
                    log.info(
                        "closing a %s watch that fell %d events behind", rt.plural, self._watch_queue_size
                    )
                    watchers.discard(watcher)
        if self._persister is not None:
            self._persister.mark_dirty()
        return stored

    def _check_namespace_locked(self, rt: ResourceType, namespace: str | None) -> None:
        if rt.namespaced and ("", namespace or "") not in self._state.objects[NAMESPACES]:
            raise not_found(NAMESPACES, namespace or "")

    def create(self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False) -> JsonObj:
        """Create an object from a request body; return it as stored.

        Raises ApiError: 400 (not an object, wrong kind, namespace mismatch), 404 (namespace
        missing), 409 (exists), 422 (invalid).
        """
        obj = _check_body(rt, body, namespace)
        meta = obj["metadata"]
        with self.lock:
            self._check_namespace_locked(rt, namespace)
            if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
                for _ in range(8):
                    candidate = meta["generateName"] + "".join(
                        secrets.choice(_GENERATE_ALPHABET) for _ in range(5)
                    )
                    if (namespace or "", candidate) not in self._state.objects[rt]:
                        meta["name"] = candidate
                        break
            errors = validate(rt, obj)
            name = meta.get("name") if isinstance(meta.get("name"), str) else ""
            if errors:
                raise invalid(rt, name, errors)
            if (namespace or "", name) in self._state.objects[rt]:
                raise ApiError(
                    409,
                    Reason.ALREADY_EXISTS,
                    f'{rt.group_resource} "{name}" already exists',
                    details=_details(rt, name),
                )
            for key in ("resourceVersion", "deletionTimestamp", "managedFields", "selfLink"):
                meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            prepare_create(rt, obj)
            if rt is SERVICES:
                allocate_service(rt, obj, self._state.objects[SERVICES].values(), self._service_cidr)
            errors = validate(rt, obj)
            if errors:
                raise invalid(rt, name, errors)
            if dry_run:
                return obj
            return self._commit_locked(rt, EventType.ADDED, obj, None)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> tuple[JsonObj, bool]:
        """Replace an object (or its status); return (stored object, created).

        A resourceVersion in the body is a precondition (409 when stale). PUT on a missing object
        creates it only for kinds that allow it (Endpoints, EndpointSlices, Leases); else 404.
        """
        obj = _check_body(rt, body, namespace)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise _name_mismatch(meta.get("name"), name)
        with self.lock:
            current = self._state.objects[rt].get((namespace or "", name))
            if current is not None:
                return self._update_locked(rt, current, obj, subresource, dry_run), False
            if not rt.create_on_update or subresource is not None:
                raise not_found(rt, name)
        return self.create(rt, namespace, obj, dry_run=dry_run), True

    def _update_locked(
        self, rt: ResourceType, current: JsonObj, obj: JsonObj, subresource: str | None, dry_run: bool
    ) -> JsonObj:
        name = current["metadata"]["name"]
        meta = obj["metadata"]
        cur_meta = current["metadata"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != cur_meta["resourceVersion"]:
            raise conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if meta.get("uid") not in (None, "") and meta["uid"] != cur_meta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {cur_meta['uid']}",
            )
        result = prepare_update(rt, obj, current, subresource)
        errors = validate(rt, result)
        if errors:
            raise invalid(rt, name, errors)
        result["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
        if result == current:
            return current  # a no-op update does not bump the resourceVersion (as in the real server)
        if dry_run:
            return result
        return self._commit_locked(rt, EventType.MODIFIED, result, current)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: PatchType,
        document: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JsonObj:
        """Apply a patch to the stored object; return the result.

        A resourceVersion in the patched object acts as a precondition (409). Raises ApiError 404
        (missing), 400 (malformed patch), 422 (patch not applicable, or result invalid).
        """
        with self.lock:
            current = self._get_locked(rt, namespace, name)
            try:
                if patch_type is PatchType.JSON:
                    patched = patches.json_patch(current, document)
                elif patch_type is PatchType.MERGE:
                    patched = patches.merge_patch(current, document)
                else:
                    patched = patches.strategic_merge_patch(current, document, rt.merge_key)
            except patches.PatchFormatError as err:
                raise bad_request(str(err)) from None
            except patches.PatchApplyError as err:
                raise ApiError(422, Reason.INVALID, str(err)) from None
            if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
                raise ApiError(422, Reason.INVALID, "the patched object has no metadata")
            patched = copy.deepcopy(patched)
            pmeta = patched["metadata"]
            if pmeta.get("name") != name:
                raise _name_mismatch(pmeta.get("name"), name)
            if rt.namespaced and pmeta.get("namespace", namespace) != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            for key, want in (("kind", rt.kind), ("apiVersion", rt.api_version)):
                if patched.get(key, want) != want:
                    raise bad_request(
                        f"the patch changes {key} to {patched.get(key)!r}; it must stay {want!r}"
                    )
            patched["kind"], patched["apiVersion"] = rt.kind, rt.api_version
            return self._update_locked(rt, current, patched, subresource, dry_run)

    def bind(self, namespace: str, name: str, node: str) -> JsonObj:
        """Set spec.nodeName of an unscheduled Pod (the pods/binding subresource); return the Pod.

        Raises ApiError 404 (no such pod) or 409 (already assigned).
        """
        pods = by_kind("Pod")
        with self.lock:
            current = self._get_locked(pods, namespace, name)
            assigned = (current.get("spec") or {}).get("nodeName")
            if assigned:
                raise conflict(pods, name, f"pod {name} is already assigned to node {assigned!r}")
            updated = copy.deepcopy(current)
            updated.setdefault("spec", {})["nodeName"] = node
            errors = validate(pods, updated)
            if errors:
                raise invalid(pods, name, errors)
            return self._commit_locked(pods, EventType.MODIFIED, updated, current)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        preconditions: JsonObj | None = None,
        dry_run: bool = False,
    ) -> JsonObj:
        """Delete an object at once (no finalizers, no grace period); return its last state.

        Deleting a Namespace first deletes every object in it. Raises ApiError 404, 409 (a uid or
        resourceVersion precondition failed) or 403 (a namespace that may not be deleted).
        """
        with self.lock:
            current = self._get_locked(rt, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != current["metadata"].get("uid"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {current['metadata'].get('uid')}",
                )
            if (
                pre.get("resourceVersion")
                and str(pre["resourceVersion"]) != current["metadata"]["resourceVersion"]
            ):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{current['metadata']['resourceVersion']}",
                )
            if rt is NAMESPACES and name in PROTECTED_NAMESPACES:
                raise ApiError(
                    403,
                    Reason.FORBIDDEN,
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    details=_details(rt, name),
                )
            if dry_run:
                return current
            if rt is NAMESPACES:
                for other in RESOURCES:
                    if not other.namespaced:
                        continue
                    for key in sorted(k for k in self._state.objects[other] if k[0] == name):
                        victim = self._state.objects[other][key]
                        self._commit_locked(other, EventType.DELETED, victim, victim)
            return self._commit_locked(rt, EventType.DELETED, current, current)

    def delete_collection(self, rt: ResourceType, flt: Filter, *, dry_run: bool = False) -> list[JsonObj]:
        """Delete every object the filter matches; return their last states."""
        with self.lock:
            keys = sorted(k for k, obj in self._state.objects[rt].items() if flt.matches(rt, obj))
        deleted: list[JsonObj] = []
        for namespace, name in keys:
            try:
                deleted.append(self.delete(rt, namespace or None, name, dry_run=dry_run))
            except ApiError as err:
                if err.code != 404:
                    raise
        return deleted


def not_found(rt: ResourceType, name: str) -> ApiError:
    """Return the 404 NotFound error for one object."""
    return ApiError(
        404, Reason.NOT_FOUND, f'{rt.group_resource} "{name}" not found', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    """Return the 409 Conflict error for one object."""
    return ApiError(
        409,
        Reason.CONFLICT,
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        details=_details(rt, name),
    )


def _details(rt: ResourceType, name: str) -> JsonObj:
    details: JsonObj = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def _name_mismatch(given: Any, name: str) -> ApiError:
    return bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")


def _check_body(rt: ResourceType, body: Any, namespace: str | None) -> JsonObj:
    """Return a private copy of a request body after the checks every write does (kind, namespace)."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object describing a {rt.kind}")
    obj = copy.deepcopy(body)
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if kind not in (None, "", rt.kind):
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
    if api_version not in (None, "", rt.api_version):
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.api_version})"
        )
    obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be a JSON object")
    if rt.namespaced:
        given = meta.get("namespace")
        if given not in (None, "") and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    return obj


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise bad_request(f'invalid resource version "{value}"') from None
    if rv < 0:
        raise bad_request(f'invalid resource version "{value}"')
    return rv


def _encode_continue(rv: int, last: Key) -> str:
    start = f"{last[0]}/{last[1]}\x00" if last[0] else f"{last[1]}\x00"
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, Key]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != _CONTINUE_VERSION or not isinstance(data.get("rv"), int):
            raise ValueError("wrong version")
        start = data["start"]
        if not isinstance(start, str) or not start.endswith("\x00"):
            raise ValueError("bad start key")
        ns, _, name = start[:-1].rpartition("/")
        return int(data["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad_request("continue key is not valid: the continue token is malformed") from None
