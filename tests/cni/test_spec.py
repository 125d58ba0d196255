"""Unit tests of the CNI spec rules the plugin applies: CNI_ARGS, names, versions, result shapes."""

from __future__ import annotations

from typing import Any

import pytest

from cni.errors import CniError, ErrorCode
from cni.spec import (
    container_id_problem,
    current_prev_result,
    gc_attachments,
    ifname_problem,
    network_name_problem,
    parse_cni_args,
    shape_result,
)
from cni.versions import version_at_least, version_tuple
from tests.cni.conftest import AGENT_RESULT

# ---- CNI_ARGS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"ignoreUnknown": False}),
        (
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
            "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IP=100.64.0.7",
            {
                "ignoreUnknown": True,
                "podNamespace": "default",
                "podName": "web-0",
                "podInfraContainerId": "abc",
                "podUid": "u-1",
                "ip": "100.64.0.7",
            },
        ),
        ("K8S_POD_NAME=a;K8S_POD_NAME=b", {"ignoreUnknown": False, "podName": "b"}),
        ("K8S_POD_NAME=a;", {"ignoreUnknown": False, "podName": "a"}),
        ("K8S_POD_NAME=", {"ignoreUnknown": False, "podName": None}),
        ("IP=100.64.0.7=x", {"ignoreUnknown": False, "ip": "100.64.0.7=x"}),
        ("FOO=1;IgnoreUnknown=true", {"ignoreUnknown": True, "extra": [["FOO", "1"]]}),
        ("IgnoreUnknown=TRUE;B=2;A=1", {"ignoreUnknown": True, "extra": [["A", "1"], ["B", "2"]]}),
        ("IgnoreUnknown=0", {"ignoreUnknown": False}),
    ],
)
def test_parse_cni_args(text: str, expected: dict[str, Any]) -> None:
    assert parse_cni_args(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("FOO=1", "unknown keys: FOO"),
        ("B=1;A=2", "unknown keys: A, B"),
        ("IgnoreUnknown=false;FOO=1", "FOO"),
        ("IgnoreUnknown=yes", "IgnoreUnknown"),
        ("K8S_POD_NAME", "not a KEY=VALUE pair"),
        ("=x", "not a KEY=VALUE pair"),
        ("a=b;;c", "not a KEY=VALUE pair"),
    ],
)
def test_parse_cni_args_refuses(text: str, needle: str) -> None:
    if text == "a=b;;c":
        text = "IgnoreUnknown=1;a=b;;c"
    with pytest.raises(CniError) as caught:
        parse_cni_args(text)
    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES
    assert needle in caught.value.msg
    assert "CNI_ARGS" in caught.value.msg


# ---- names and versions --------------------------------------------------------------------------


def test_name_rules() -> None:
    assert container_id_problem("abc-1_2.3") is None
    assert container_id_problem("") == "CNI_CONTAINERID is empty"
    assert network_name_problem("sluice") is None
    assert network_name_problem(None) is not None
    assert network_name_problem(".x") is not None
    assert ifname_problem("eth0") is None
    assert ifname_problem("\u00e9" * 8) is not None  # 16 bytes in UTF-8
    assert ifname_problem("a" * 15) is None


def test_versions() -> None:
    assert version_tuple("1.10.0") == (1, 10, 0)
    assert version_tuple("1.0") is None
    assert version_tuple("v1.0.0") is None
    assert version_at_least("1.10.0", "1.9.0")
    assert not version_at_least("0.3.1", "0.4.0")
    assert not version_at_least("banana", "0.4.0")


# ---- results -------------------------------------------------------------------------------------


def test_shape_result_drops_unknown_and_empty_fields() -> None:
    result = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "", "vendor": "x"}],
        "ips": [{"address": "100.64.0.5/24", "gateway": None}],
        "extra": True,
        "dns": {"nameservers": [], "domain": "cluster.local"},
    }
    assert shape_result(result, "1.1.0") == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"address": "100.64.0.5/24"}],
        "dns": {"domain": "cluster.local"},
    }


def test_shape_result_for_0x_derives_ip_versions() -> None:
    shaped = shape_result(AGENT_RESULT, "0.4.0")
    assert [ip["version"] for ip in shaped["ips"]] == ["4", "6"]
    assert "mtu" not in shaped["interfaces"][1] and "mtu" not in shaped["routes"][0]
    assert AGENT_RESULT["interfaces"][1]["mtu"] == 1442  # the input is not modified


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        ([], "object"),
        ({"ips": {}}, "ips"),
        ({"ips": [{"gateway": "100.64.0.1"}]}, "CIDR"),
        ({"ips": [{"address": 5}]}, "string"),
        ({"interfaces": [{"mac": "x"}]}, "no name"),
        ({"interfaces": [{"name": "eth0", "mtu": "1500"}]}, "mtu"),
        ({"interfaces": [{"name": "eth0", "mtu": -1}]}, "mtu"),
        ({"ips": [{"address": "100.64.0.5/24", "interface": 0}]}, "index"),
        ({"routes": [{"gw": "100.64.0.1"}]}, "dst"),
        ({"dns": []}, "dns"),
    ],
)
def test_shape_result_refuses_invalid_results(result: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        shape_result(result, "1.1.0")


def test_current_prev_result_drops_only_ip_versions() -> None:
    prev: dict[str, Any] = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "custom": 1}],
        "ips": [{"version": "4", "address": "100.64.0.5/24", "interface": 0}],
        "added-by-a-later-plugin": {"x": 1},
    }
    assert current_prev_result(prev) == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "custom": 1}],
        "ips": [{"address": "100.64.0.5/24", "interface": 0}],
        "added-by-a-later-plugin": {"x": 1},
    }
    assert prev["ips"][0]["version"] == "4"


def test_gc_attachments() -> None:
    assert gc_attachments({}) is None
    assert gc_attachments({"cni.dev/valid-attachments": None}) == []
    both = {
        "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}],
    }
    assert gc_attachments(both) == [("a", "eth0")]
    with pytest.raises(ValueError, match=r"\[1\]"):
        gc_attachments({"cni.dev/attachments": [{"containerID": "a", "ifname": "e"}, {"ifname": "e"}]})
