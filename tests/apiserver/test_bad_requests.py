"""Bad requests get proper Kubernetes Status errors (400, 401, 404, 405, 413, 415, 422) and the
server keeps serving; validation rejects nonsense NetworkPolicies, Pods and selectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from lab.apiserver import ApiServer
from tests.apiserver.conftest import message, pod_body, present, raw
from tests.support import body

JSON_HEADERS = {"Content-Type": "application/json"}


def _still_serving(server: ApiServer) -> None:
    status, body = raw(server, "GET", "/api/v1/namespaces/default")
    assert status == 200 and isinstance(body, dict) and body["metadata"]["name"] == "default"


def _assert_status(status: int, body: Any, code: int, reason: str) -> dict[str, Any]:
    assert status == code, body
    assert isinstance(body, dict)
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["code"], body["reason"]) == (code, reason)
    assert body["message"]
    return body


def test_malformed_json_is_a_400_status(server: ApiServer, namespace: str) -> None:
    for payload in (b"{not json", b"", b"[1, 2]", b'"a string"'):
        status, body = raw(server, "POST", f"/api/v1/namespaces/{namespace}/pods", payload, JSON_HEADERS)
        _assert_status(status, body, 400, "BadRequest")
        _still_serving(server)


def test_unknown_resources_and_paths_are_404_statuses(server: ApiServer) -> None:
    for path in (
        "/api/v1/widgets",
        "/api/v2/pods",
        "/apis/example.com/v1/widgets",
        "/apis/networking.k8s.io/v1/namespaces/default/widgets",
        "/api/v1/namespaces/default/nodes",  # cluster-scoped kind under a namespace
        "/api/v1/pods/x",  # namespaced kind without a namespace
        "/api/v1/namespaces/default/pods/x/exec",
        "/nothing/here",
        "/openapi/v2",
    ):
        status, body = raw(server, "GET", path)
        _assert_status(status, body, 404, "NotFound")
    _still_serving(server)


def test_invalid_selectors_are_400_statuses(server: ApiServer, core: client.CoreV1Api) -> None:
    for query in (
        "labelSelector=a%20in%20(",
        "labelSelector=a%20in%20()",
        "labelSelector=a=b=c",
        "labelSelector=bad%20key=1",
        "labelSelector=a=-bad-",
        "fieldSelector=spec.foo=bar",
        "fieldSelector=novalue",
        "labelSelector=x%3E1a",
    ):
        for watch in ("", "&watch=true"):
            status, body = raw(server, "GET", f"/api/v1/pods?{query}{watch}")
            _assert_status(status, body, 400, "BadRequest")
    with pytest.raises(client.ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.unknownField=x")
    assert exc.value.status == 400
    assert "field label not supported: spec.unknownField" in message(exc.value)
    _still_serving(server)


def test_other_request_errors(server: ApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    body = json.dumps(pod_body("p")).encode()
    status, _ = raw(server, "POST", base, body, JSON_HEADERS)
    assert status == 201
    # Wrong kind or apiVersion in the body.
    wrong = json.dumps({**pod_body("q"), "kind": "Service"}).encode()
    _assert_status(*raw(server, "POST", base, wrong, JSON_HEADERS), 400, "BadRequest")
    # Name in the body different from the URL.
    _assert_status(
        *raw(server, "PUT", f"{base}/p", json.dumps(pod_body("other")).encode(), JSON_HEADERS),
        400,
        "BadRequest",
    )
    # Unsupported patch types, server-side apply included.
    for content_type in ("application/json", "application/apply-patch+yaml", "text/plain"):
        status, reply = raw(server, "PATCH", f"{base}/p", b"{}", {"Content-Type": content_type})
        _assert_status(status, reply, 415, "UnsupportedMediaType")
    # A JSON patch that is not a list, a strategic patch that is not an object.
    _assert_status(
        *raw(server, "PATCH", f"{base}/p", b"{}", {"Content-Type": "application/json-patch+json"}),
        400,
        "BadRequest",
    )
    _assert_status(
        *raw(server, "PATCH", f"{base}/p", b"[]", {"Content-Type": "application/strategic-merge-patch+json"}),
        400,
        "BadRequest",
    )
    # Methods that make no sense on the path.
    _assert_status(*raw(server, "POST", f"{base}/p", body, JSON_HEADERS), 405, "MethodNotAllowed")
    _assert_status(*raw(server, "PUT", base, body, JSON_HEADERS), 405, "MethodNotAllowed")
    # Too large.
    _assert_status(
        *raw(server, "POST", base, b"{" + b" " * (4 * 1024 * 1024) + b"}", JSON_HEADERS),
        413,
        "RequestEntityTooLarge",
    )
    # Strict field validation.
    strict = json.dumps({**pod_body("r"), "bogus": 1}).encode()
    status, reply = raw(server, "POST", f"{base}?fieldValidation=Strict", strict, JSON_HEADERS)
    assert 'unknown field "bogus"' in _assert_status(status, reply, 400, "BadRequest")["message"]
    duplicate = (
        b'{"metadata": {"name": "s", "name": "s"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}'
    )
    status, reply = raw(server, "POST", f"{base}?fieldValidation=Strict", duplicate, JSON_HEADERS)
    assert 'duplicate field "name"' in _assert_status(status, reply, 400, "BadRequest")["message"]
    _still_serving(server)


@pytest.fixture(scope="module")
def token_server() -> Iterator[ApiServer]:
    """A plain-HTTP server that requires a bearer token."""
    srv = ApiServer(token="s3cret").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_bearer_token_is_required_when_configured(token_server: ApiServer) -> None:
    _assert_status(*raw(token_server, "GET", "/api/v1/pods"), 401, "Unauthorized")
    _assert_status(
        *raw(token_server, "GET", "/api/v1/pods", headers={"Authorization": "Bearer nope"}),
        401,
        "Unauthorized",
    )
    status, _ = raw(token_server, "GET", "/api/v1/pods", headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    status, body = raw(token_server, "GET", "/healthz")
    assert (status, body) == (200, "ok")
    with token_server.api_client() as api:
        assert client.CoreV1Api(api).list_namespace().items


def _policy(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "np"}, "spec": {"podSelector": {}, **spec}}


def _ingress_ports(*ports: dict[str, Any]) -> dict[str, Any]:
    return _policy(ingress=[{"ports": list(ports)}])


def _ingress_peers(*peers: dict[str, Any]) -> dict[str, Any]:
    return _policy(ingress=[{"from": list(peers)}])


INVALID_POLICIES = [
    (
        "port 0",
        _ingress_ports({"port": 0}),
        "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535",
    ),
    ("port 70000", _ingress_ports({"port": 70000}), "Invalid value: 70000: must be between 1 and 65535"),
    ("icmp", _ingress_ports({"protocol": "ICMP", "port": 1}), 'Unsupported value: "ICMP"'),
    ("numeric string", _ingress_ports({"port": "80"}), "must contain at least one letter"),
    ("long name", _ingress_ports({"port": "a-very-long-port-name"}), "must be no more than 15 characters"),
    (
        "named + endPort",
        _ingress_ports({"port": "http", "endPort": 90}),
        "endPort: Forbidden: may not be specified when `port` is non-numeric",
    ),
    (
        "endPort alone",
        _ingress_ports({"endPort": 90}),
        "port: Required value: must be specified when endPort is specified",
    ),
    (
        "endPort < port",
        _ingress_ports({"port": 90, "endPort": 80}),
        "endPort: Invalid value: 80: must be greater than or equal to `port`",
    ),
    ("bad cidr", _ingress_peers({"ipBlock": {"cidr": "100.64.0.0/33"}}), "ipBlock.cidr: Invalid value"),
    ("missing cidr", _ingress_peers({"ipBlock": {}}), "ipBlock.cidr: Required value"),
    (
        "except outside",
        _ingress_peers({"ipBlock": {"cidr": "100.64.0.0/16", "except": ["100.65.0.0/24"]}}),
        "must be a strict subset of `cidr`",
    ),
    (
        "except equal",
        _ingress_peers({"ipBlock": {"cidr": "100.64.0.0/16", "except": ["100.64.0.0/16"]}}),
        "strict subset",
    ),
    (
        "except family",
        _ingress_peers({"ipBlock": {"cidr": "100.64.0.0/16", "except": ["fd00::/64"]}}),
        "strict subset",
    ),
    (
        "ipBlock + selector",
        _ingress_peers({"ipBlock": {"cidr": "100.64.0.0/16"}, "podSelector": {}}),
        "may not specify both ipBlock and another peer",
    ),
    ("empty peer", _ingress_peers({}), "must specify a peer"),
    (
        "bad label key",
        _policy(podSelector={"matchLabels": {"-bad": "x"}}),
        "spec.podSelector.matchLabels: Invalid value",
    ),
    (
        "bad label value",
        _policy(podSelector={"matchLabels": {"a": "bad value"}}),
        "spec.podSelector.matchLabels[a]: Invalid value",
    ),
    (
        "In without values",
        _policy(podSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
        "values: Required value",
    ),
    (
        "Exists with values",
        _policy(podSelector={"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        "values: Forbidden",
    ),
    (
        "bad operator",
        _policy(podSelector={"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        'operator: Unsupported value: "Gt"',
    ),
    (
        "bad ns selector",
        _ingress_peers({"namespaceSelector": {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}}),
        "namespaceSelector.matchExpressions[0].key: Invalid value",
    ),
    ("bad policy type", _policy(policyTypes=["Sideways"]), 'Unsupported value: "Sideways"'),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in INVALID_POLICIES], ids=[i for i, _, _ in INVALID_POLICIES]
)
def test_invalid_network_policies_are_422(
    server: ApiServer, namespace: str, body: dict[str, Any], expected: str
) -> None:
    # Raw HTTP: the typed client would refuse some of these bodies before sending them.
    path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    status, reply = raw(server, "POST", path, json.dumps(body).encode(), JSON_HEADERS)
    result = _assert_status(status, reply, 422, "Invalid")
    assert result["message"].startswith('NetworkPolicy.networking.k8s.io "np" is invalid: ')
    assert expected in result["message"]
    assert result["details"]["causes"]
    assert result["details"]["group"] == "networking.k8s.io"
    _still_serving(server)


def test_valid_network_policies_are_accepted(api: client.ApiClient, namespace: str) -> None:
    net = client.NetworkingV1Api(api)
    policy = _policy(
        podSelector={
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "db"]},
                {"key": "x", "operator": "DoesNotExist"},
            ]
        },
        ingress=[
            {
                "from": [
                    {"ipBlock": {"cidr": "100.64.0.0/10", "except": ["100.64.1.0/24"]}},
                    {"ipBlock": {"cidr": "fd00::/48", "except": ["fd00::/64"]}},
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "a"}},
                        "podSelector": {},
                    },
                ],
                "ports": [
                    {"port": "http"},
                    {"port": 8000, "endPort": 8080, "protocol": "UDP"},
                    {"protocol": "SCTP"},
                ],
            }
        ],
        egress=[{}],
    )
    created = net.create_namespaced_network_policy(namespace, body(policy))
    assert present(created.spec).policy_types == ["Ingress", "Egress"]


def test_invalid_pods_and_names_are_422(core: client.CoreV1Api, namespace: str) -> None:
    cases = [
        ({"metadata": {"name": "p"}, "spec": {"containers": []}}, "spec.containers: Required value"),
        (
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
            "spec.containers[0].image: Required value",
        ),
        (
            {"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "metadata.name: Invalid value",
        ),
        (
            {
                "metadata": {"name": "p", "labels": {"a": "b c"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
            "metadata.labels[a]",
        ),
        (
            {
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]},
            },
            "containerPort: Invalid value: 0",
        ),
    ]
    for pod, expected in cases:
        with pytest.raises(client.ApiException) as exc:
            core.create_namespaced_pod(namespace, body(pod))
        assert exc.value.status == 422, pod
        assert expected in message(exc.value)
    with pytest.raises(client.ApiException) as exc:
        core.create_namespace(body({"metadata": {"name": "has.dots"}}))
    assert exc.value.status == 422
