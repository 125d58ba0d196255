"""A minimal OpenAPI v3 description: paths and operations only, no schemas.

kubectl (1.27+) will not send `apply`/`create` without validating, and it skips its own
(schema-based) validation when the server's OpenAPI v3 says the PATCH operation of the kind takes
the `fieldValidation` query parameter: the server then validates (see `api.unknown_fields`). With
no request-body content declared, kubectl computes strategic merge patches from its built-in Go
types instead of from schemas. `/openapi/v2` is not served (404), which kubectl tolerates.
"""

from __future__ import annotations

import hashlib
import json

from lab.apiserver.errors import JsonObj
from lab.apiserver.resources import ResourceType, group_versions, resources_in

_PARAM_NAMES = ("dryRun", "fieldManager", "fieldValidation", "force")


def gv_path(group: str, version: str) -> str:
    """Return the OpenAPI v3 path key of a group/version ("api/v1", "apis/networking.k8s.io/v1")."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operation(rt: ResourceType, action: str, params: tuple[str, ...] = ()) -> JsonObj:
    return {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "parameters": [
            {"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for p in params
        ],
        "responses": {"200": {"description": "OK"}},
    }


def gv_document(group: str, version: str) -> JsonObj | None:
    """Return the OpenAPI v3 document of one group/version, or None when it is not served."""
    served = resources_in(group, version)
    if not served:
        return None
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths: JsonObj = {}
    for rt in served:
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        paths[base] = {
            "get": _operation(rt, "list"),
            "post": _operation(rt, "post", ("dryRun", "fieldManager", "fieldValidation")),
        }
        item = {
            "get": _operation(rt, "get"),
            "put": _operation(rt, "put", ("dryRun", "fieldManager", "fieldValidation")),
            "patch": _operation(rt, "patch", _PARAM_NAMES),
            "delete": _operation(rt, "delete", ("dryRun",)),
        }
        paths[f"{base}/{{name}}"] = item
        if rt.has_status:
            paths[f"{base}/{{name}}/status"] = {
                "get": _operation(rt, "get"),
                "put": _operation(rt, "put", ("dryRun", "fieldManager", "fieldValidation")),
                "patch": _operation(rt, "patch", _PARAM_NAMES),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (sluice lab stand-in)", "version": "v1.32.0-sluice-lab"},
        "paths": paths,
    }


def root_document() -> JsonObj:
    """Return the `/openapi/v3` discovery document pointing at each group/version's description."""
    paths: JsonObj = {}
    for group, versions in group_versions().items():
        for version in versions:
            doc = gv_document(group, version)
            digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
            key = gv_path(group, version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}
