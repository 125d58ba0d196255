"""The agent's Kubernetes access: its own Node, the Pods bound to it, and the annotations it publishes.

`KubeApi` is the typed seam (a `typing.Protocol`); `Kube` implements it with the official client,
configured from a kubeconfig file or the in-cluster service account. Annotations are written with
JSON merge patches (RFC 7386): a key set to None is removed, other annotations are left alone.

The annotation names are owned by the controller (`controller/annotations.py`), which the agent may
not import; they are repeated here and a unit test checks both agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Node annotations the agent publishes (see controller/annotations.py).
NODE_TUNNEL_IP = "sluice.io/tunnel-ip"
NODE_GATEWAY_OFPORT = "sluice.io/gateway-ofport"
NODE_TUNNEL_OFPORT = "sluice.io/tunnel-ofport"
NODE_DATAPATH_ID = "sluice.io/datapath-id"
# Pod annotations the agent publishes on ADD and removes on DEL, always together.
POD_PORT_NAME = "sluice.io/port-name"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed; the message names the object and the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """The object does not exist (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the agent reads from its Node."""

    name: str
    pod_cidr: str | None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A Pod bound to this node, as restart reconciliation needs it."""

    namespace: str
    name: str
    uid: str
    annotations: Mapping[str, str] = field(default_factory=dict)


class KubeApi(Protocol):
    """The Kubernetes operations the agent uses (implemented by `Kube`; tests may pass a fake)."""

    def get_node(self, name: str) -> NodeInfo:
        """Return the Node; raise NotFound or KubeError."""
        ...

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch the Node's annotations (None removes a key); raise NotFound or KubeError."""
        ...

    def list_pods_on_node(self, node: str) -> list[PodInfo]:
        """Return every Pod with spec.nodeName == `node`; raise KubeError."""
        ...

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        """Return the Pod; raise NotFound or KubeError."""
        ...

    def patch_pod_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch the Pod's annotations (None removes a key); raise NotFound or KubeError."""
        ...


class Kube:
    """`KubeApi` over the official `kubernetes` client."""

    def __init__(self, kubeconfig: Path | None, *, request_timeout: float = 10.0) -> None:
        """Configure the client from `kubeconfig`, or in-cluster credentials when it is None.

        Raises KubeError when the configuration cannot be loaded.
        """
        from kubernetes import client, config  # heavy: only the agent process needs it

        self._timeout = request_timeout
        configuration = client.Configuration()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig), client_configuration=configuration
                )
        except Exception as exc:  # the loaders raise ConfigException, OSError, yaml errors, ...
            where = "in-cluster service account" if kubeconfig is None else f"kubeconfig {kubeconfig}"
            raise KubeError(f"cannot load the {where}: {exc}") from None
        self._api_client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._api_client)
        self._exception: type[Exception] = client.ApiException

    def close(self) -> None:
        """Release the client's connection pool."""
        self._api_client.close()  # type: ignore[no-untyped-call]

    def get_node(self, name: str) -> NodeInfo:
        """See KubeApi.get_node."""
        node = self._call(f"get Node {name}", self._core.read_node, name)
        spec = node.spec
        return NodeInfo(
            name=name,
            pod_cidr=(spec.pod_cidr if spec is not None else None) or None,
            annotations=dict(node.metadata.annotations or {}),
        )

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """See KubeApi.patch_node_annotations."""
        body = {"metadata": {"annotations": dict(annotations)}}
        self._call(f"patch Node {name}", self._core.patch_node, name, body, _content_type=MERGE_PATCH)

    def list_pods_on_node(self, node: str) -> list[PodInfo]:
        """See KubeApi.list_pods_on_node."""
        pods = self._call(
            f"list Pods on node {node}",
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
        )
        return [_pod_info(p) for p in pods.items]

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        """See KubeApi.get_pod."""
        return _pod_info(
            self._call(f"get Pod {namespace}/{name}", self._core.read_namespaced_pod, name, namespace)
        )

    def patch_pod_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """See KubeApi.patch_pod_annotations."""
        body = {"metadata": {"annotations": dict(annotations)}}
        # The answer (the whole Pod) is not needed: reading it raw spares the client building a
        # V1Pod from it on every ADD and DEL.
        response = self._call(
            f"patch Pod {namespace}/{name}",
            self._core.patch_namespaced_pod,
            name,
            namespace,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        try:
            response.read()
        except Exception as exc:  # urllib3 read errors and timeouts: the patch may not have landed
            raise KubeError(f"patch Pod {namespace}/{name}: reading the answer failed: {exc}") from None
        finally:
            response.release_conn()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except self._exception as exc:
            status = getattr(exc, "status", None)
            reason = getattr(exc, "reason", None) or str(exc)
            if status == 404:
                raise NotFound(f"{what}: not found", 404) from None
            raise KubeError(f"{what}: {status} {reason}", status) from None
        except Exception as exc:  # urllib3 connection errors, timeouts
            raise KubeError(f"{what}: API server unreachable: {exc}") from None


def _pod_info(pod: Any) -> PodInfo:
    meta = pod.metadata
    return PodInfo(meta.namespace, meta.name, meta.uid or "", dict(meta.annotations or {}))
