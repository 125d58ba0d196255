"""The REST layer: turns one HTTP request (method, path, query, headers, body) into a store call
and its answer: a JSON response, or a watch stream the transport feeds to the client.

It knows the Kubernetes URL layout (`/api/v1/namespaces/NS/pods/NAME/status`, `/apis/GROUP/VERSION/...`),
the query parameters of list and watch, content negotiation (plain JSON, Table,
PartialObjectMetadata) and the patch content types. It knows nothing about sockets.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lab.apiserver import discovery, openapi
from lab.apiserver.errors import ApiError, JsonObj, Reason, bad_request, method_not_allowed, status_object
from lab.apiserver.resources import ResourceType, lookup
from lab.apiserver.selectors import (
    ALL_FIELDS,
    EVERYTHING,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from lab.apiserver.store import (
    Event,
    EventType,
    Filter,
    PatchType,
    Store,
    Watcher,
    event_line,
    supported_field_labels,
)
from lab.apiserver.tables import partial_metadata, to_table

log = logging.getLogger(__name__)

JSON = "application/json"
MAX_BODY_BYTES = 3 * 1024 * 1024
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class Output(enum.Enum):
    """How objects are rendered in a response."""

    JSON = "json"
    TABLE = "table"
    METADATA = "metadata"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the API layer sees it."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    content_type: str = ""
    accept: str = ""
    body: bytes = b""

    def param(self, name: str, default: str = "") -> str:
        """Return the first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Response:
    """A complete (non-streaming) response."""

    code: int
    body: bytes
    content_type: str = JSON
    warnings: tuple[str, ...] = ()


def json_response(code: int, obj: Any, warnings: tuple[str, ...] = ()) -> Response:
    """Return a JSON response."""
    return Response(code, json.dumps(obj, separators=(",", ":")).encode(), warnings=warnings)


META_FIELDS = frozenset(
    (
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    )
)


def unknown_fields(rt: ResourceType, obj: Any) -> list[str]:
    """Return the top-level and metadata fields of `obj` this kind does not have (patch directives aside).

    This is all fieldValidation checks: the stand-in has no schemas for deeper fields.
    """
    if not isinstance(obj, dict):
        return []
    out = [k for k in obj if k not in rt.top_level_fields and not k.startswith("$")]
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out += [f"metadata.{k}" for k in meta if k not in META_FIELDS and not k.startswith("$")]
    return out


def error_response(err: ApiError) -> Response:
    """Return the Status response for an error."""
    return json_response(err.code, err.status())


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Server-wide watch tuning."""

    bookmark_interval: float = 60.0
    default_timeout: float = 1800.0
    poll_interval: float = 1.0


class WatchStream:
    """One watch response: the initial events, then live ones, bookmarks, and the end of the stream."""

    def __init__(
        self,
        *,
        rt: ResourceType,
        flt: Filter,
        output: Output,
        include_object: str,
        settings: WatchSettings,
        timeout: float,
        bookmarks: bool,
        watcher: Watcher | None = None,
        initial: list[Event] | None = None,
        start_rv: int = 0,
        initial_end_bookmark: bool = False,
        error: ApiError | None = None,
    ) -> None:
        self._rt = rt
        self._flt = flt
        self._output = output
        self._include_object = include_object
        self._settings = settings
        self._timeout = timeout
        self._bookmarks = bookmarks
        self._watcher = watcher
        self._initial = initial or []
        self._start_rv = start_rv
        self._initial_end_bookmark = initial_end_bookmark
        self._error = error

    def run(self, write: Callable[[bytes], None], client_gone: Callable[[], bool]) -> None:
        """Write the stream through `write` until the timeout, a closed watcher or a gone client."""
        try:
            if self._error is not None:
                write(event_line(EventType.ERROR.value, self._error.status()))
                return
            watcher = self._watcher
            assert watcher is not None
            start = time.monotonic()
            deadline = start + self._timeout
            batch = [line for line in map(self._render, self._initial) if line]
            if self._initial_end_bookmark:
                batch.append(self._bookmark(self._start_rv, initial_end=True))
            for i in range(0, len(batch), 500):
                write(b"".join(batch[i : i + 500]))
            next_bookmark = self._next_bookmark(start, deadline)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                wake = min(deadline, now + self._settings.poll_interval)
                if next_bookmark is not None:
                    wake = min(wake, next_bookmark)
                events, rv, closed = watcher.take(max(0.0, wake - now))
                out = [line for line in map(self._render, events) if line]
                now = time.monotonic()
                if next_bookmark is not None and now >= next_bookmark and not closed:
                    out.append(self._bookmark(rv))
                    next_bookmark = self._next_bookmark(now, deadline)
                if out:
                    write(b"".join(out))
                if closed or client_gone():
                    return
        finally:
            if self._watcher is not None:
                self._watcher.close()

    def _next_bookmark(self, now: float, deadline: float) -> float | None:
        # Like the real cacher: periodically, and once more shortly before the watch times out.
        if not self._bookmarks:
            return None
        at = now + self._settings.bookmark_interval
        pretimeout = deadline - 2.0
        if pretimeout < at:
            at = pretimeout
        return at if at >= now else None

    def _bookmark(self, rv: int, *, initial_end: bool = False) -> bytes:
        meta: JsonObj = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return event_line(
            EventType.BOOKMARK.value,
            {"kind": self._rt.kind, "apiVersion": self._rt.api_version, "metadata": meta},
        )

    def _render(self, event: Event) -> bytes | None:
        rt, flt = self._rt, self._flt
        if not flt.in_scope(event.obj):
            return None
        type_, obj = event.type, event.obj
        if not flt.trivial:
            now_matches = flt.matches(rt, event.obj)
            if event.type is EventType.MODIFIED:
                was_matching = event.prev is not None and flt.matches(rt, event.prev)
                if now_matches and not was_matching:
                    type_ = EventType.ADDED
                elif was_matching and not now_matches and event.prev is not None:
                    # Leaving the selector: a DELETED with the previous content at the new version,
                    # as the real watch cache sends it.
                    type_ = EventType.DELETED
                    obj = {
                        **event.prev,
                        "metadata": {**event.prev["metadata"], "resourceVersion": str(event.rv)},
                    }
                elif not now_matches:
                    return None
            elif not now_matches:
                return None
        if self._output is Output.TABLE:
            rv = obj["metadata"].get("resourceVersion", "")
            return event_line(
                type_.value, to_table(rt, [obj], resource_version=rv, include_object=self._include_object)
            )
        if self._output is Output.METADATA:
            return event_line(type_.value, partial_metadata(obj))
        if event.line is not None and type_ is event.type and obj is event.obj:
            return event.line
        return event_line(type_.value, obj)


@dataclass(frozen=True, slots=True)
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool


class Api:
    """Serves requests against one store."""

    def __init__(self, store: Store, settings: WatchSettings, server_address: Callable[[], str]) -> None:
        self._store = store
        self._settings = settings
        self._server_address = server_address

    def handle(self, req: Request) -> Response | WatchStream:
        """Answer one request; errors become Status responses, never exceptions."""
        try:
            return self._route(req)
        except ApiError as err:
            return error_response(err)

    # -- routing --------------------------------------------------------------------------------

    def _route(self, req: Request) -> Response | WatchStream:
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return json_response(200, discovery.SERVER_VERSION)
        if path == "/openapi/v3":
            return json_response(200, openapi.root_document())
        if path.startswith("/openapi/v3/"):
            rest = path[len("/openapi/v3/") :].split("/")
            doc = None
            if len(rest) == 2 and rest[0] == "api":
                doc = openapi.gv_document("", rest[1])
            elif len(rest) == 3 and rest[0] == "apis":
                doc = openapi.gv_document(rest[1], rest[2])
            return self._discovery(req, doc, path)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            raise _no_route(path)
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery(req, discovery.api_versions(self._server_address()))
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return self._discovery(req, discovery.api_group_list())
            if len(parts) == 2:
                return self._discovery(req, discovery.api_group(parts[1]), path)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return self._discovery(req, discovery.api_resource_list(group, version), path)
        target = _parse_target(group, version, rest, path)
        return self._dispatch(req, target)

    def _discovery(self, req: Request, doc: JsonObj | None, path: str = "") -> Response:
        if doc is None:
            raise _no_route(path)
        if req.method != "GET":
            raise method_not_allowed(
                f"the server does not allow this method on the requested resource ({req.method})"
            )
        return json_response(200, doc)

    def _dispatch(self, req: Request, t: _Target) -> Response | WatchStream:
        method = req.method
        if t.name is None:
            if method == "GET":
                if t.legacy_watch or req.param("watch").lower() in ("true", "1"):
                    return self._watch(req, t)
                return self._list(req, t)
            if method == "POST":
                return self._create(req, t)
            if method == "DELETE":
                return self._delete_collection(req, t)
            raise method_not_allowed(f"{method} is not supported on a collection of {t.rt.plural}")
        if t.legacy_watch:
            raise _no_route(req.path)
        if t.subresource == "binding":
            if method != "POST":
                raise method_not_allowed("pods/binding only supports create (POST)")
            return self._bind(req, t)
        if method == "GET":
            obj = self._store.get(t.rt, t.namespace, t.name)
            return self._render_object(req, t.rt, obj)
        if method == "PUT":
            body, warnings = self._checked_body(req, t.rt)
            obj, created = self._store.update(
                t.rt, t.namespace, t.name, body, subresource=t.subresource, dry_run=_dry_run(req)
            )
            return json_response(201 if created else 200, obj, warnings)
        if method == "PATCH":
            return self._patch(req, t)
        if method == "DELETE":
            if t.subresource is not None:
                raise method_not_allowed(f"DELETE is not supported on {t.rt.plural}/{t.subresource}")
            options = self._delete_options(req)
            obj = self._store.delete(
                t.rt,
                t.namespace,
                t.name,
                preconditions=options.get("preconditions")
                if isinstance(options.get("preconditions"), dict)
                else None,
                dry_run=_dry_run(req) or options.get("dryRun") == ["All"],
            )
            return json_response(200, obj)
        if method == "POST":
            raise method_not_allowed(
                f"POST is not supported on a single {t.rt.singular}; POST to the collection"
            )
        raise method_not_allowed(f"method {method} is not supported")

    # -- verbs ----------------------------------------------------------------------------------

    def _filter(self, req: Request, t: _Target) -> Filter:
        try:
            labels = (
                parse_label_selector(req.param("labelSelector")) if req.param("labelSelector") else EVERYTHING
            )
        except SelectorError as err:
            raise bad_request(
                f"unable to parse labelSelector {req.param('labelSelector')!r}: {err}"
            ) from None
        try:
            fields = (
                parse_field_selector(req.param("fieldSelector"), supported_field_labels(t.rt))
                if req.param("fieldSelector")
                else ALL_FIELDS
            )
        except SelectorError as err:
            raise bad_request(
                f"unable to parse fieldSelector {req.param('fieldSelector')!r}: {err}"
            ) from None
        return Filter(t.namespace, labels, fields)

    def _list(self, req: Request, t: _Target) -> Response:
        output = _negotiate(req.accept, collection=True)
        flt = self._filter(req, t)
        limit_text = req.param("limit", "0") or "0"
        try:
            limit = int(limit_text)
        except ValueError:
            raise bad_request(f"limit: Invalid value: {limit_text!r}: must be an integer") from None
        result = self._store.list_objects(
            t.rt,
            flt,
            resource_version=req.param("resourceVersion"),
            resource_version_match=req.param("resourceVersionMatch"),
            limit=max(0, limit),
            continue_token=req.param("continue"),
        )
        rv = str(result.resource_version)
        if output is Output.TABLE:
            return json_response(
                200,
                to_table(
                    t.rt,
                    result.items,
                    resource_version=rv,
                    include_object=req.param("includeObject", "Metadata"),
                    continue_token=result.continue_token,
                    remaining=result.remaining,
                ),
            )
        meta: JsonObj = {"resourceVersion": rv}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        if output is Output.METADATA:
            items = [partial_metadata(obj) for obj in result.items]
            kind, api_version = "PartialObjectMetadataList", "meta.k8s.io/v1"
        else:
            # Items of a built-in list carry no kind/apiVersion on the wire, as from the real server.
            items = [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in result.items
            ]
            kind, api_version = t.rt.list_kind, t.rt.api_version
        return json_response(200, {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items})

    def _watch(self, req: Request, t: _Target) -> WatchStream:
        output = _negotiate(req.accept, collection=False)
        flt = self._filter(req, t)
        timeout_text = req.param("timeoutSeconds")
        try:
            timeout = float(int(timeout_text)) if timeout_text else 0.0
        except ValueError:
            raise bad_request(
                f"timeoutSeconds: Invalid value: {timeout_text!r}: must be an integer"
            ) from None
        if timeout <= 0:
            timeout = self._settings.default_timeout  # 0 or unset: the server's default, as in the real one
        bookmarks = req.param("allowWatchBookmarks").lower() in ("true", "1")
        send_initial_text = req.param("sendInitialEvents").lower()
        send_initial = None if not send_initial_text else send_initial_text in ("true", "1")
        if send_initial and not bookmarks:
            raise bad_request(
                "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks=true"
            )
        common: dict[str, Any] = {
            "rt": t.rt,
            "flt": flt,
            "output": output,
            "include_object": req.param("includeObject", "Metadata"),
            "settings": self._settings,
            "timeout": timeout,
            "bookmarks": bookmarks,
        }
        try:
            watcher, initial, start_rv = self._store.watch(
                t.rt, flt, resource_version=req.param("resourceVersion"), send_initial_events=send_initial
            )
        except ApiError as err:
            if err.code in (410, 504):
                return WatchStream(**common, error=err)
            raise
        return WatchStream(
            **common,
            watcher=watcher,
            initial=initial,
            start_rv=start_rv,
            initial_end_bookmark=bool(send_initial),
        )

    def _create(self, req: Request, t: _Target) -> Response:
        if t.subresource is not None:
            raise method_not_allowed(f"POST is not supported on {t.rt.plural}/{t.subresource}")
        body, warnings = self._checked_body(req, t.rt)
        obj = self._store.create(t.rt, t.namespace, body, dry_run=_dry_run(req))
        return json_response(201, obj, warnings)

    def _bind(self, req: Request, t: _Target) -> Response:
        body = self._body(req)
        target = body.get("target") if isinstance(body, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise ApiError(422, Reason.INVALID, 'Binding "" is invalid: target.name: Required value')
        assert t.name is not None and t.namespace is not None
        self._store.bind(t.namespace, t.name, node)
        return json_response(201, status_object(201, None, ""))

    def _patch(self, req: Request, t: _Target) -> Response:
        assert t.name is not None
        content_type = req.content_type.split(";")[0].strip().lower()
        try:
            patch_type = PatchType(content_type)
        except ValueError:
            if content_type == "application/apply-patch+yaml":
                message = (
                    "server-side apply is not supported by the lab API server; "
                    "use client-side apply (kubectl apply without --server-side)"
                )
            else:
                message = (
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{', '.join(p.value for p in PatchType)}"
                )
            raise ApiError(415, Reason.UNSUPPORTED_MEDIA_TYPE, message) from None
        document, warnings = self._checked_body(req, t.rt, json_patch=patch_type is PatchType.JSON)
        obj = self._store.patch(
            t.rt, t.namespace, t.name, patch_type, document, subresource=t.subresource, dry_run=_dry_run(req)
        )
        return json_response(200, obj, warnings)

    def _delete_collection(self, req: Request, t: _Target) -> Response:
        if t.subresource is not None:
            raise method_not_allowed("deletecollection is not supported on a subresource")
        flt = self._filter(req, t)
        deleted = self._store.delete_collection(t.rt, flt, dry_run=_dry_run(req))
        items = [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in deleted]
        return json_response(
            200,
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(self._store.resource_version)},
                "items": items,
            },
        )

    def _render_object(self, req: Request, rt: ResourceType, obj: JsonObj) -> Response:
        output = _negotiate(req.accept, collection=False)
        if output is Output.TABLE:
            rv = obj["metadata"].get("resourceVersion", "")
            return json_response(
                200,
                to_table(
                    rt, [obj], resource_version=rv, include_object=req.param("includeObject", "Metadata")
                ),
            )
        if output is Output.METADATA:
            return json_response(200, partial_metadata(obj))
        return json_response(200, obj)

    # -- bodies ---------------------------------------------------------------------------------

    def _checked_body(
        self, req: Request, rt: ResourceType, *, json_patch: bool = False
    ) -> tuple[Any, tuple[str, ...]]:
        """Decode a write's body and apply `fieldValidation` (Strict: 400, Warn: warnings, else nothing)."""
        mode = req.param("fieldValidation")
        if mode not in ("", "Ignore", "Warn", "Strict"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Warn", "Strict"'
            )
        content_type = req.content_type.split(";")[0].strip().lower()
        is_json = content_type in ("", JSON, "*/*") or content_type.endswith("+json")
        if mode in ("", "Ignore") or not is_json:
            return (_decode_json(req.body) if req.method == "PATCH" else self._body(req)), ()
        duplicates: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in items:
                if key in out:
                    duplicates.append(key)
                out[key] = value
            return out

        if req.method != "PATCH":
            self._body(req)  # content-type and syntax checks, with the usual errors
        document = _decode_json(req.body, pairs)
        problems = [f'json: duplicate field "{d}"' for d in duplicates]
        if not json_patch:
            problems += [f'unknown field "{f}"' for f in unknown_fields(rt, document)]
        if problems and mode == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {', '.join(problems)}"
            )
        return document, tuple(problems)

    def _body(self, req: Request) -> Any:
        content_type = req.content_type.split(";")[0].strip().lower()
        if content_type in ("application/yaml", "application/x-yaml"):
            try:
                return yaml.safe_load(req.body.decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise bad_request(f"the request body is not valid YAML: {err}") from None
        if content_type not in ("", JSON, "*/*") and not content_type.endswith("+json"):
            hint = ""
            if content_type == "application/vnd.kubernetes.protobuf":
                hint = (
                    "; the lab API server speaks JSON only (kubectl's generator commands such as "
                    "`create namespace` send protobuf: use `kubectl create -f` or `apply -f` with a manifest)"
                )
            raise ApiError(
                415,
                Reason.UNSUPPORTED_MEDIA_TYPE,
                f"the body of the request was in an unknown format ({content_type}) - accepted media types "
                f"include: application/json, application/yaml{hint}",
            )
        return _decode_json(req.body)

    def _delete_options(self, req: Request) -> JsonObj:
        if not req.body.strip():
            return {}
        options = _decode_json(req.body)
        if not isinstance(options, dict):
            raise bad_request("the request body must be a DeleteOptions object")
        return options


def _decode_json(body: bytes, pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    if not body.strip():
        raise bad_request("the request body is empty; a JSON document is required")
    try:
        return json.loads(body, object_pairs_hook=pairs_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON: {err}") from None


def _dry_run(req: Request) -> bool:
    values = req.query.get("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _no_route(path: str) -> ApiError:
    return ApiError(404, Reason.NOT_FOUND, f"the server could not find the requested resource ({path})")


def _parse_target(group: str, version: str, rest: list[str], path: str) -> _Target:
    legacy_watch = False
    if rest and rest[0] == "watch":
        legacy_watch, rest = True, rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and not group and rest[2] in ("status", "finalize"):
        pass  # /api/v1/namespaces/NAME/status is the Namespace's own subresource
    elif len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise _no_route(path)
    rt = lookup(group, version, rest[0])
    if namespace is not None and not rt.namespaced:
        raise _no_route(path)
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else None
    if name is not None and rt.namespaced and namespace is None:
        raise _no_route(path)
    if subresource is not None:
        allowed = {"status"} if rt.has_status else set()
        if rt.kind == "Pod":
            allowed.add("binding")
        if subresource not in allowed:
            raise _no_route(path)
    return _Target(rt, namespace, name, subresource, legacy_watch)


def _negotiate(accept: str, *, collection: bool) -> Output:
    """Pick the response form from an Accept header (the first acceptable entry wins)."""
    if not accept.strip():
        return Output.JSON
    only_unacceptable = True
    for entry in accept.split(","):
        parts = [p.strip() for p in entry.split(";")]
        media = parts[0].lower()
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if media not in (JSON, "application/*", "*/*", "application/yaml"):
            continue
        as_kind = params.get("as", "")
        if as_kind == "Table" and params.get("g", "meta.k8s.io") == "meta.k8s.io":
            return Output.TABLE
        if as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return Output.METADATA
        if as_kind:
            continue
        only_unacceptable = False
        break
    if only_unacceptable:
        raise ApiError(
            406,
            Reason.NOT_ACCEPTABLE,
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;"
            "g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        )
    return Output.JSON
