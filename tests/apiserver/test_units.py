"""Pure parts of the stand-in: selector grammar and matching, the three patch formats (with the
RFC 6902 and RFC 7386 examples), age formatting, and the resource table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.apiserver import patch, resources
from lab.apiserver.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from lab.apiserver.tables import human_duration

LABELS = {"app": "web", "tier": "front", "n": "5"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("missing in (db)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=web,tier=back", False),
        ("  app = web ,  tier in ( front , back ) ", True),
        ("n>4", True),
        ("n<5", False),
        ("example.com/role=x", False),
        ("missing=", False),
    ],
)
def test_label_selector_matching(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


def test_empty_value_selector_matches_an_empty_label() -> None:
    assert parse_label_selector("a=").matches({"a": ""})
    assert parse_label_selector("a in (x,)").matches({"a": ""})


@pytest.mark.parametrize(
    "selector",
    [
        "a in (",
        "a in ()",
        "a=b=c",
        "=b",
        "a b",
        "a,",
        "a in (b c)",
        "!",
        "a notin b",
        "x>y",
        "bad key=1",
        "a=-x-",
        "a/b/c=1",
    ],
)
def test_malformed_label_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selectors() -> None:
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Running")
    assert sel.matches({"spec.nodeName": "n1", "status.phase": "Pending"})
    assert not sel.matches({"spec.nodeName": "n1", "status.phase": "Running"})
    assert parse_field_selector("spec.nodeName=").matches({})  # an absent field is ""
    escaped = parse_field_selector(r"metadata.name=a\,b\=c")
    assert escaped.matches({"metadata.name": "a,b=c"})
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.x"):
        parse_field_selector("spec.x=1", frozenset({"metadata.name"}))
    for bad in ("novalue", r"a=b\q", "a=b=c"):
        with pytest.raises(SelectorError):
            parse_field_selector(bad)


# RFC 7386, appendix A (all of them).
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "doc", "result"), RFC7386)
def test_merge_patch_rfc7386_examples(target: Any, doc: Any, result: Any) -> None:
    assert patch.merge_patch(target, doc) == result


def test_json_patch_rfc6902_examples() -> None:
    doc = {"foo": "bar"}
    assert patch.json_patch(doc, [{"op": "add", "path": "/baz", "value": "qux"}]) == {
        "foo": "bar",
        "baz": "qux",
    }
    assert doc == {"foo": "bar"}  # the input is not modified
    assert patch.json_patch({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}]) == {
        "foo": ["bar", "qux", "baz"]
    }
    assert patch.json_patch({"foo": [1]}, [{"op": "add", "path": "/foo/-", "value": 2}]) == {"foo": [1, 2]}
    assert patch.json_patch({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}]) == {
        "foo": "bar"
    }
    assert patch.json_patch({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}]) == {
        "foo": ["bar", "baz"]
    }
    assert patch.json_patch({"baz": "qux"}, [{"op": "replace", "path": "/baz", "value": "boo"}]) == {
        "baz": "boo"
    }
    moved = patch.json_patch(
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
    )
    assert moved == {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}
    assert patch.json_patch(
        {"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}]
    ) == {"foo": ["all", "cows", "eat", "grass"]}
    assert patch.json_patch({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}]) == {
        "a": {"b": 1},
        "c": {"b": 1},
    }
    assert (
        patch.json_patch({"/": 1, "~": 2}, [{"op": "remove", "path": "/~1"}, {"op": "remove", "path": "/~0"}])
        == {}
    )
    ok = [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]
    assert patch.json_patch({"baz": "qux", "foo": ["a", 2, "c"]}, ok)
    for bad_test in (
        {"op": "test", "path": "/baz", "value": "bar"},
        {"op": "test", "path": "/n", "value": True},
    ):
        with pytest.raises(patch.PatchApplyError):
            patch.json_patch({"baz": "qux", "n": 1}, [bad_test])
    with pytest.raises(patch.PatchApplyError):
        patch.json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}])
    with pytest.raises(patch.PatchApplyError):
        patch.json_patch({"a": [1]}, [{"op": "remove", "path": "/a/01"}])
    for malformed in (
        {"op": "frobnicate", "path": "/a"},
        {"path": "/a"},
        {"op": "add", "path": "a", "value": 1},
        {"op": "add", "path": "/a"},
    ):
        with pytest.raises(patch.PatchFormatError):
            patch.json_patch({}, [malformed])


POD = resources.by_kind("Pod")


def test_strategic_merge_patch_merges_lists_by_key_and_honours_directives() -> None:
    original: dict[str, Any] = {
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "m:1",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}],
                },
                {"name": "side", "image": "s:1"},
            ],
            "tolerations": [{"key": "t1"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Init", "status": "True"}]},
    }
    result = patch.strategic_merge_patch(
        original,
        {
            "metadata": {"labels": {"b": None, "c": "3"}, "finalizers": ["y"]},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "ports": [{"containerPort": 81}],
                        "env": [{"name": "A", "$patch": "delete"}],
                    }
                ],
                "tolerations": [{"key": "t2"}],  # no merge key in Kubernetes: replaced
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        POD.merge_key,
    )
    assert result["metadata"] == {"labels": {"a": "1", "c": "3"}, "finalizers": ["x", "y"]}
    main, side = result["spec"]["containers"]
    assert main == {
        "name": "main",
        "image": "m:1",
        "ports": [{"containerPort": 80}, {"containerPort": 81}],
        "env": [],
    }
    assert side == {"name": "side", "image": "s:1"}
    assert result["spec"]["tolerations"] == [{"key": "t2"}]
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Init", "status": "True"},
    ]
    assert original["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]  # input untouched

    replaced = patch.strategic_merge_patch(
        original, {"spec": {"$patch": "replace", "containers": []}}, POD.merge_key
    )
    assert replaced["spec"] == {"containers": []}
    whole_list = patch.strategic_merge_patch(
        original,
        {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}},
        POD.merge_key,
    )
    assert whole_list["spec"]["containers"] == [{"name": "only", "image": "o"}]
    ordered = patch.strategic_merge_patch(
        original,
        {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "main"}]}},
        POD.merge_key,
    )
    assert [c["name"] for c in ordered["spec"]["containers"]] == ["side", "main"]
    pruned = patch.strategic_merge_patch(
        original, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, POD.merge_key
    )
    assert pruned["metadata"]["finalizers"] == []
    retained = patch.strategic_merge_patch(
        original, {"metadata": {"$retainKeys": ["labels"], "labels": {"z": "9"}}}, POD.merge_key
    )
    assert retained["metadata"] == {"labels": {"a": "1", "b": "2", "z": "9"}}
    with pytest.raises(patch.PatchFormatError):
        patch.strategic_merge_patch(original, {"spec": {"containers": [{"image": "no-name"}]}}, POD.merge_key)
    with pytest.raises(patch.PatchFormatError):
        patch.strategic_merge_patch(original, {"$patch": "explode"}, POD.merge_key)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=3), json_values, max_size=4),
    st.dictionaries(st.text(max_size=3), json_values, max_size=4),
)
def test_merge_patch_properties(target: dict[str, Any], doc: dict[str, Any]) -> None:
    once = patch.merge_patch(target, doc)
    assert patch.merge_patch(once, doc) == once  # idempotent
    for key, value in doc.items():
        if value is None:
            assert key not in once
        elif not isinstance(value, dict):
            assert once[key] == value


def test_human_duration_matches_kubectl() -> None:
    cases = {
        0: "0s",
        59: "59s",
        119: "119s",
        120: "2m",
        125: "2m5s",
        600: "10m",
        3 * 3600: "3h",
        3 * 3600 + 60: "3h1m",
        50 * 3600: "2d2h",
        400 * 86400: "400d",
    }
    for seconds, text in cases.items():
        assert human_duration(seconds) == text


def test_resource_table_is_consistent() -> None:
    assert {r.kind for r in resources.RESOURCES} == {
        "Namespace",
        "Node",
        "Pod",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "NetworkPolicy",
        "Lease",
    }
    assert len({(r.group, r.version, r.plural) for r in resources.RESOURCES}) == len(resources.RESOURCES)
    assert resources.lookup("networking.k8s.io", "v1", "networkpolicies").kind == "NetworkPolicy"
    assert POD.merge_key("spec.containers.ports") == "containerPort"
    assert POD.merge_key("spec.tolerations") is None
    assert resources.by_kind("Service").merge_key("spec.ports") == "port"
