"""CRUD through the official `kubernetes` client for every resource the stand-in serves, plus the
semantics controllers rely on: conflicts, preconditions, status subresources, patches, namespaces."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from lab.apiserver import ApiServer
from tests.apiserver.conftest import message, pod_body, present, version
from tests.support import body, meta


@dataclass(frozen=True)
class Kind:
    """How to drive one resource through the typed client."""

    api: type
    suffix: str  # "pod" -> create_namespaced_pod / create_pod
    namespaced: bool
    body: Callable[[str], dict[str, Any]]
    mutate: Callable[[Any], None]  # change the typed object before a replace
    check: Callable[[Any], bool]  # did the replace land?
    status_patch: dict[str, Any] | None = None  # a /status patch, for kinds with a status subresource
    status_check: Callable[[Any], bool] = lambda o: True


def _set_spec_field(path: list[str], value: Any) -> Callable[[Any], None]:
    def mutate(obj: Any) -> None:
        target = obj
        for part in path[:-1]:
            target = getattr(target, part)
        setattr(target, path[-1], value)

    return mutate


KINDS = [
    Kind(
        client.CoreV1Api,
        "namespace",
        False,
        lambda n: {"metadata": {"name": n}},
        lambda o: (
            o.metadata.annotations.update({"x": "1"})
            if o.metadata.annotations
            else setattr(o.metadata, "annotations", {"x": "1"})
        ),
        lambda o: o.metadata.annotations == {"x": "1"},
        status_patch={"status": {"conditions": [{"type": "Sluice", "status": "True"}]}},
        status_check=lambda o: (
            o.status is not None and [c.type for c in o.status.conditions or []] == ["Sluice"]
        ),
    ),
    Kind(
        client.CoreV1Api,
        "node",
        False,
        lambda n: {
            "metadata": {"name": n},
            "spec": {"podCIDR": "100.64.1.0/24", "podCIDRs": ["100.64.1.0/24"]},
        },
        _set_spec_field(["spec", "unschedulable"], True),
        lambda o: o.spec.unschedulable is True,
        status_patch={"status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]}},
        status_check=lambda o: (
            o.status is not None and [a.address for a in o.status.addresses or []] == ["198.18.0.11"]
        ),
    ),
    Kind(
        client.CoreV1Api,
        "pod",
        True,
        lambda n: pod_body(n, {"app": "web"}),
        lambda o: setattr(o.spec.containers[0], "image", "busybox:1.37"),
        lambda o: o.spec.containers[0].image == "busybox:1.37",
        status_patch={"status": {"podIP": "100.64.1.9", "conditions": [{"type": "Ready", "status": "True"}]}},
        status_check=lambda o: o.status is not None and o.status.pod_ip == "100.64.1.9",
    ),
    Kind(
        client.CoreV1Api,
        "service",
        True,
        lambda n: {"metadata": {"name": n}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
        _set_spec_field(["spec", "selector"], {"app": "db"}),
        lambda o: o.spec.selector == {"app": "db"},
        status_patch={"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.50"}]}}},
        status_check=lambda o: (
            bool(o.status and o.status.load_balancer.ingress)
            and o.status.load_balancer.ingress[0].ip == "198.18.0.50"
        ),
    ),
    Kind(
        client.CoreV1Api,
        "endpoints",
        True,
        lambda n: {
            "metadata": {"name": n},
            "subsets": [{"addresses": [{"ip": "100.64.1.5"}], "ports": [{"port": 8080}]}],
        },
        lambda o: setattr(o.subsets[0].addresses[0], "ip", "100.64.1.6"),
        lambda o: o.subsets[0].addresses[0].ip == "100.64.1.6",
    ),
    Kind(
        client.DiscoveryV1Api,
        "endpoint_slice",
        True,
        lambda n: {
            "metadata": {"name": n, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["100.64.1.5"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
        lambda o: setattr(o.endpoints[0], "addresses", ["100.64.1.7"]),
        lambda o: o.endpoints[0].addresses == ["100.64.1.7"],
    ),
    Kind(
        client.NetworkingV1Api,
        "network_policy",
        True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}],
            },
        },
        lambda o: setattr(o.spec.ingress[0].ports[0], "port", 8080),
        lambda o: o.spec.ingress[0].ports[0].port == 8080,
    ),
    Kind(
        client.CoordinationV1Api,
        "lease",
        True,
        lambda n: {"metadata": {"name": n}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
        _set_spec_field(["spec", "holder_identity"], "b"),
        lambda o: o.spec.holder_identity == "b",
    ),
]


def _call(api: Any, verb: str, kind: Kind, namespace: str, *args: Any, **kwargs: Any) -> Any:
    if kind.namespaced:
        method = getattr(api, f"{verb}_namespaced_{kind.suffix}")
        if verb in ("create", "list"):
            return method(namespace, *args, **kwargs)
        name, *rest = args
        return method(name, namespace, *rest, **kwargs)
    return getattr(api, f"{verb}_{kind.suffix}")(*args, **kwargs)


@pytest.mark.parametrize("kind", KINDS, ids=[k.suffix for k in KINDS])
def test_crud_through_the_official_client(api: client.ApiClient, namespace: str, kind: Kind) -> None:
    typed = kind.api(api)
    name = f"x-{secrets.token_hex(3)}"
    created = _call(typed, "create", kind, namespace, kind.body(name))
    assert created.metadata.name == name
    assert created.metadata.uid
    rv = int(created.metadata.resource_version)
    assert created.metadata.creation_timestamp is not None

    with pytest.raises(client.ApiException) as exc:
        _call(typed, "create", kind, namespace, kind.body(name))
    assert exc.value.status == 409

    got = _call(typed, "read", kind, namespace, name)
    assert got.metadata.uid == created.metadata.uid

    listed = _call(typed, "list", kind, namespace)
    assert name in [o.metadata.name for o in listed.items]
    assert int(listed.metadata.resource_version) >= rv

    kind.mutate(got)
    replaced = _call(typed, "replace", kind, namespace, name, got)
    assert kind.check(replaced)
    assert int(replaced.metadata.resource_version) > rv

    # The stale object (older resourceVersion) is refused: optimistic concurrency.
    with pytest.raises(client.ApiException) as exc:
        _call(typed, "replace", kind, namespace, name, got)
    assert exc.value.status == 409

    patched = _call(typed, "patch", kind, namespace, name, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels["patched"] == "yes"
    assert kind.check(patched)

    if kind.status_patch is not None:
        # The main resource ignores status changes ...
        ignored = _call(typed, "patch", kind, namespace, name, kind.status_patch)
        assert not kind.status_check(ignored)
        method = getattr(
            typed,
            f"patch_namespaced_{kind.suffix}_status" if kind.namespaced else f"patch_{kind.suffix}_status",
        )
        args = (name, namespace) if kind.namespaced else (name,)
        after = method(*args, {**kind.status_patch, "metadata": {"labels": {"ignored": "yes"}}})
        # ... and the status subresource changes only status.
        assert kind.status_check(after)
        assert after.metadata.labels == patched.metadata.labels

    deleted = _call(typed, "delete", kind, namespace, name)
    assert deleted is not None
    with pytest.raises(client.ApiException) as exc:
        _call(typed, "read", kind, namespace, name)
    assert exc.value.status == 404


def test_namespace_label_and_cascading_delete(core: client.CoreV1Api) -> None:
    name = f"cascade-{secrets.token_hex(3)}"
    ns = core.create_namespace(body({"metadata": {"name": name, "labels": {"team": "a"}}}))
    assert meta(ns).labels == {"team": "a", "kubernetes.io/metadata.name": name}
    assert present(ns.status).phase == "Active"
    # The label cannot be removed or changed.
    ns = core.patch_namespace(name, {"metadata": {"labels": {"kubernetes.io/metadata.name": "other"}}})
    assert present(meta(ns).labels)["kubernetes.io/metadata.name"] == name
    core.create_namespaced_pod(name, body(pod_body("p1")))
    core.create_namespaced_service(
        name, body({"metadata": {"name": "s1"}, "spec": {"ports": [{"port": 80}]}})
    )
    core.delete_namespace(name)
    assert core.list_namespaced_pod(name).items == []
    assert core.list_namespaced_service(name).items == []
    with pytest.raises(client.ApiException) as exc:
        core.read_namespace(name)
    assert exc.value.status == 404
    # Objects cannot be created in a namespace that does not exist.
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod(name, body(pod_body("p2")))
    assert exc.value.status == 404
    assert f'namespaces "{name}" not found' in message(exc.value)


def test_default_namespaces_exist_and_default_cannot_be_deleted(core: client.CoreV1Api) -> None:
    names = {meta(n).name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    with pytest.raises(client.ApiException) as exc:
        core.delete_namespace("default")
    assert exc.value.status == 403


def test_pod_create_rules_and_status_subresource(core: client.CoreV1Api, namespace: str) -> None:
    manifest = pod_body("p", node="node-1")
    manifest["status"] = {"phase": "Running"}
    pod = core.create_namespaced_pod(namespace, body(manifest))
    assert present(pod.status).phase == "Pending"  # status sent on create is dropped, as by the real server
    assert meta(pod).generation == 1
    assert present(pod.spec).restart_policy == "Always"
    status = {"status": {"phase": "Running", "podIP": "100.64.3.4", "podIPs": [{"ip": "100.64.3.4"}]}}
    pod = core.patch_namespaced_pod_status("p", namespace, status)
    assert (present(pod.status).phase, present(pod.status).pod_ip) == ("Running", "100.64.3.4")
    # replace_namespaced_pod_status with the full object works too and keeps the spec.
    present(pod.status).phase = "Succeeded"
    present(pod.spec).node_name = "elsewhere"  # ignored by /status
    pod = core.replace_namespaced_pod_status("p", namespace, pod)
    assert present(pod.status).phase == "Succeeded"
    assert present(pod.spec).node_name == "node-1"
    # Pod specs are immutable apart from images.
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod("p", namespace, {"spec": {"nodeName": "node-2"}})
    assert exc.value.status == 422
    assert "pod updates may not change fields" in message(exc.value)


def test_generate_name_and_binding(core: client.CoreV1Api, namespace: str) -> None:
    pod = core.create_namespaced_pod(
        namespace,
        body({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    name = present(meta(pod).name)
    assert name.startswith("web-") and len(name) == 9
    core.create_namespaced_pod_binding(
        name,
        namespace,
        body({"metadata": {"name": name}, "target": {"kind": "Node", "name": "node-7"}}),
        _preload_content=False,
    )
    assert present(core.read_namespaced_pod(name, namespace).spec).node_name == "node-7"
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod_binding(
            name,
            namespace,
            body({"metadata": {"name": name}, "target": {"kind": "Node", "name": "node-8"}}),
            _preload_content=False,
        )
    assert exc.value.status == 409


def test_delete_preconditions(core: client.CoreV1Api, namespace: str) -> None:
    pod = core.create_namespaced_pod(namespace, body(pod_body("p")))
    with pytest.raises(client.ApiException) as exc:
        core.delete_namespaced_pod("p", namespace, body=body({"preconditions": {"uid": "not-the-uid"}}))
    assert exc.value.status == 409
    assert "Precondition failed: UID in precondition" in message(exc.value)
    with pytest.raises(client.ApiException) as exc:
        core.delete_namespaced_pod("p", namespace, body=body({"preconditions": {"resourceVersion": "1"}}))
    assert exc.value.status == 409
    core.delete_namespaced_pod("p", namespace, body=body({"preconditions": {"uid": meta(pod).uid}}))
    assert core.list_namespaced_pod(namespace).items == []


def test_replace_and_delete_missing_objects(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(client.ApiException) as exc:
        core.replace_namespaced_pod("nope", namespace, body(pod_body("nope")))
    assert exc.value.status == 404
    with pytest.raises(client.ApiException) as exc:
        core.delete_namespaced_pod("nope", namespace)
    assert exc.value.status == 404
    # Leases and Endpoints may be created by PUT (AllowCreateOnUpdate), as leader election does.
    coord = client.CoordinationV1Api(core.api_client)
    lease = coord.replace_namespaced_lease(
        "leader", namespace, body({"metadata": {"name": "leader"}, "spec": {}})
    )
    assert meta(lease).uid


def test_patch_types(core: client.CoreV1Api, namespace: str) -> None:
    manifest = pod_body("p", {"a": "1", "b": "2"})
    manifest["spec"]["containers"].append(
        {"name": "side", "image": "side:1", "ports": [{"containerPort": 9}]}
    )
    core.create_namespaced_pod(namespace, body(manifest))
    # Strategic merge: containers merge by name (the other container stays), labels merge.
    pod = core.patch_namespaced_pod(
        "p",
        namespace,
        {
            "metadata": {"labels": {"b": None, "c": "3"}},
            "spec": {"containers": [{"name": "side", "image": "side:2"}]},
        },
    )
    assert meta(pod).labels == {"a": "1", "c": "3"}
    containers = present(pod.spec).containers
    assert [(c.name, c.image) for c in containers] == [("main", "busybox:1.36"), ("side", "side:2")]
    assert present(containers[1].ports)[0].container_port == 9
    # JSON merge patch: lists are replaced wholesale (here: the annotations map merges).
    pod = core.patch_namespaced_pod(
        "p",
        namespace,
        {"metadata": {"annotations": {"k": "v"}}},
        _content_type="application/merge-patch+json",
    )
    assert meta(pod).annotations == {"k": "v"}
    # JSON patch (RFC 6902): test + replace + add + remove.
    ops = [
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "side:3"},
        {"op": "add", "path": "/metadata/labels/d", "value": "4"},
        {"op": "remove", "path": "/metadata/annotations/k"},
    ]
    pod = core.patch_namespaced_pod("p", namespace, ops)
    assert present(pod.spec).containers[1].image == "side:3"
    assert meta(pod).labels == {"a": "1", "c": "3", "d": "4"}
    assert not meta(pod).annotations
    # A failed test op is a 422 and changes nothing.
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod(
            "p", namespace, [{"op": "test", "path": "/metadata/labels/a", "value": "9"}]
        )
    assert exc.value.status == 422
    # A resourceVersion inside a patch is a precondition.
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod(
            "p", namespace, {"metadata": {"resourceVersion": "1", "labels": {"e": "5"}}}
        )
    assert exc.value.status == 409
    # $patch: delete removes one element of a list merged by key (Service ports merge by port);
    # $setElementOrder orders the result.
    core.create_namespaced_service(
        namespace,
        body(
            {
                "metadata": {"name": "s"},
                "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]},
            }
        ),
    )
    svc = core.patch_namespaced_service(
        "s",
        namespace,
        {
            "spec": {
                "$setElementOrder/ports": [{"port": 82}, {"port": 80}],
                "ports": [{"port": 81, "$patch": "delete"}, {"name": "c", "port": 82}],
            }
        },
    )
    assert [(p.name, p.port) for p in present(present(svc.spec).ports)] == [("c", 82), ("a", 80)]


def test_service_cluster_ip_allocation(core: client.CoreV1Api, namespace: str) -> None:
    a = core.create_namespaced_service(
        namespace, body({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}})
    )
    b = core.create_namespaced_service(
        namespace, body({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    )
    a_spec, b_spec = present(a.spec), present(b.spec)
    assert a_spec.cluster_ip != b_spec.cluster_ip
    assert present(a_spec.cluster_ip).startswith("100.127.")
    a_port, b_port = present(a_spec.ports)[0], present(b_spec.ports)[0]
    assert a_port.target_port == 80 and a_port.protocol == "TCP"
    assert 30000 <= present(b_port.node_port) <= 32767
    # A replace that omits the cluster IP keeps it; changing it is refused.
    a_spec.cluster_ip = None
    a_spec.cluster_ips = None
    kept = core.replace_namespaced_service("a", namespace, a)
    assert (
        present(kept.spec).cluster_ip == present(core.read_namespaced_service("a", namespace).spec).cluster_ip
    )
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_service("a", namespace, {"spec": {"clusterIP": "100.127.9.9"}})
    assert exc.value.status == 422
    headless = core.create_namespaced_service(
        namespace, body({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}})
    )
    assert present(headless.spec).cluster_ip == "None"


def test_networkpolicy_defaults(api: client.ApiClient, namespace: str) -> None:
    net = client.NetworkingV1Api(api)
    np = net.create_namespaced_network_policy(
        namespace,
        body(
            {"metadata": {"name": "np"}, "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}
        ),
    )
    np_spec = present(np.spec)
    assert np_spec.policy_types == ["Ingress", "Egress"]
    assert present(present(np_spec.egress)[0].ports)[0].protocol == "TCP"


def test_dry_run_does_not_store(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, body(pod_body("dry")), dry_run="All")
    assert core.list_namespaced_pod(namespace).items == []


def test_no_op_update_keeps_resource_version(
    core: client.CoreV1Api, namespace: str, server: ApiServer
) -> None:
    pod = core.create_namespaced_pod(namespace, body(pod_body("p", {"a": "1"})))
    again = core.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"a": "1"}}})
    assert meta(again).resource_version == meta(pod).resource_version
    assert server.store.resource_version >= version(pod)
