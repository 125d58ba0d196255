"""Unit tests of the plugin-agent protocol: typed values, encode/decode, validation, socket helpers."""

from __future__ import annotations

import io
import json
import socket
import threading
from typing import Any, BinaryIO, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni import wire
from cni.protocol import (
    MAX_MESSAGE_BYTES,
    AgentHungUp,
    AgentTimeout,
    AgentUnreachable,
    Attachment,
    CniArgs,
    CniError,
    Command,
    ErrorCode,
    Failure,
    ProtocolError,
    Request,
    Response,
    call,
    decode_request,
    decode_response,
    encode,
    read_request,
    write_response,
)
from tests.cni.conftest import AGENT_RESULT, StubAgent


def make_request(**changes: Any) -> Request:
    fields: dict[str, Any] = {
        "command": Command.ADD,
        "container_id": "0123abcd",
        "netns": "/var/run/netns/pod1",
        "ifname": "eth0",
        "args": CniArgs(
            ignore_unknown=True, pod_namespace="default", pod_name="web-0", extra=(("MAC", "x"),)
        ),
        "path": ("/opt/cni/bin",),
        "cni_version": "1.0.0",
        "config": {
            "cniVersion": "1.0.0",
            "name": "sluice",
            "type": "sluice-cni",
            "runtimeConfig": {"ips": []},
        },
        "prev_result": None,
        "timeout_seconds": 12.5,
    }
    fields.update(changes)
    return Request(**fields)


def wire_request(**changes: Any) -> dict[str, Any]:
    message = make_request().to_wire()
    message.update(changes)
    return message


def frame(message: object) -> bytes:
    return json.dumps(message).encode() + b"\n"


# ---- round trips ---------------------------------------------------------------------------------


def test_request_round_trips() -> None:
    request = make_request(prev_result={"cniVersion": "1.1.0", "ips": []})
    data = encode(request)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert decode_request(data) == request


def test_request_frame_is_the_documented_json() -> None:
    message = json.loads(encode(make_request()))
    assert message == {
        "v": 1,
        "command": "ADD",
        "containerId": "0123abcd",
        "netns": "/var/run/netns/pod1",
        "ifname": "eth0",
        "cniArgs": {
            "ignoreUnknown": True,
            "podNamespace": "default",
            "podName": "web-0",
            "podInfraContainerId": None,
            "podUid": None,
            "ip": None,
            "extra": [["MAC", "x"]],
        },
        "path": ["/opt/cni/bin"],
        "cniVersion": "1.0.0",
        "config": {
            "cniVersion": "1.0.0",
            "name": "sluice",
            "type": "sluice-cni",
            "runtimeConfig": {"ips": []},
        },
        "prevResult": None,
        "timeoutSeconds": 12.5,
    }


@pytest.mark.parametrize(
    "response",
    [
        Response.success(AGENT_RESULT),
        Response.success(),
        Response.failure(ErrorCode.TRY_AGAIN_LATER, "flows not installed yet", "waited 20s"),
        Response.failure(107, "plugin-specific"),
        Response.from_error(CniError(ErrorCode.LIMITED_CONNECTIVITY, "br-int is gone")),
    ],
)
def test_response_round_trips(response: Response) -> None:
    assert decode_response(encode(response)) == response


def test_response_shapes() -> None:
    assert json.loads(encode(Response.success())) == {"v": 1, "result": None}
    assert json.loads(encode(Response.failure(ErrorCode.PLUGIN_NOT_AVAILABLE, "no OVS"))) == {
        "v": 1,
        "error": {"code": 50, "msg": "no OVS", "details": ""},
    }
    failed = Response.failure(ErrorCode.UNKNOWN_CONTAINER, "gone")
    assert not failed.ok and failed.error == Failure(3, "gone", "")
    assert Response.success().ok


def test_response_cannot_hold_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        Response(result={}, error=Failure(11, "x"))


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=20).filter(
    lambda s: s[0].isalnum()
)
texts = st.text(max_size=30)


@given(
    command=st.sampled_from(list(Command)),
    container_id=names,
    ifname=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=15),
    args=st.builds(
        CniArgs,
        ignore_unknown=st.booleans(),
        pod_namespace=st.none() | texts,
        pod_name=st.none() | texts,
        ip=st.none() | texts,
        extra=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
    ),
    version=st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
    extra_config=st.dictionaries(texts, st.none() | st.integers() | texts, max_size=4),
    timeout=st.floats(min_value=0.001, max_value=3600),
)
def test_any_valid_request_round_trips(
    command: Command,
    container_id: str,
    ifname: str,
    args: CniArgs,
    version: str,
    extra_config: dict[str, Any],
    timeout: float,
) -> None:
    config = {**extra_config, "cniVersion": version, "name": "net-1"}
    config.pop("cni.dev/valid-attachments", None)
    config.pop("cni.dev/attachments", None)
    request = make_request(
        command=command,
        container_id=container_id,
        ifname=ifname,
        args=args,
        cni_version=version,
        config=config,
        timeout_seconds=timeout,
    )
    assert decode_request(encode(request)) == request


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"{not json}\n", "not valid JSON"),
        (b"\xff\n", "not UTF-8"),
        (b"[1]\n", "JSON object"),
        (b'{"v":1}\n{"v":1}\n', "newline inside"),
        (frame({**wire_request(), "v": 2}), "protocol version"),
        (frame({k: v for k, v in wire_request().items() if k != "v"}), "protocol version"),
        (frame(wire_request(command="VERSION")), "command"),
        (frame(wire_request(command="add")), "command"),
        (frame(wire_request(containerId="-bad")), "CNI_CONTAINERID"),
        (frame(wire_request(containerId="")), "CNI_CONTAINERID"),
        (frame(wire_request(ifname="a" * 16)), "CNI_IFNAME"),
        (frame(wire_request(netns="")), "netns"),
        (frame(wire_request(netns=None)), "netns"),
        (frame(wire_request(cniArgs={"ignoreUnknown": "yes"})), "ignoreUnknown"),
        (frame(wire_request(cniArgs={"podName": 5})), "podName"),
        (frame(wire_request(cniArgs={"extra": [["a"]]})), "extra"),
        (frame(wire_request(cniArgs=None)), "cniArgs"),
        (frame(wire_request(path="/opt/cni/bin")), "path"),
        (frame(wire_request(cniVersion="0.2.0")), "cniVersion"),
        (frame(wire_request(config=[])), "config"),
        (frame(wire_request(config={"cniVersion": "1.0.0"})), "name"),
        (frame(wire_request(prevResult=[])), "prevResult"),
        (frame(wire_request(timeoutSeconds=0)), "timeoutSeconds"),
        (frame(wire_request(timeoutSeconds=True)), "timeoutSeconds"),
        (frame(wire_request(timeoutSeconds="5")), "timeoutSeconds"),
        (
            frame(wire_request(command="GC", config={"name": "n", "cni.dev/valid-attachments": {}})),
            "valid-attachments",
        ),
    ],
)
def test_invalid_requests_are_refused_with_a_reason(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        decode_request(data)


def test_status_and_gc_need_no_attachment_fields() -> None:
    for command in (Command.STATUS, Command.GC):
        request = make_request(command=command, container_id="", netns="", ifname="")
        assert decode_request(encode(request)) == request


def test_del_may_have_an_empty_netns() -> None:
    request = make_request(command=Command.DEL, netns="")
    assert decode_request(encode(request)).netns == ""


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"v": 1}, "exactly one"),
        ({"v": 1, "result": None, "error": None}, "exactly one"),
        ({"v": 1, "result": []}, "result"),
        ({"v": 1, "error": "bad"}, "error"),
        ({"v": 1, "error": {"code": 0, "msg": "x"}}, "code"),
        ({"v": 1, "error": {"code": True, "msg": "x"}}, "code"),
        ({"v": 1, "error": {"code": 11}}, "msg"),
        ({"v": 1, "error": {"code": 11, "msg": ""}}, "msg"),
        ({"v": 1, "error": {"code": 11, "msg": "x", "details": 5}}, "details"),
    ],
)
def test_invalid_responses_are_refused_with_a_reason(message: dict[str, Any], needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        decode_response(frame(message))


def test_messages_over_the_limit_are_refused() -> None:
    big = make_request(config={"name": "sluice", "blob": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(ProtocolError, match="limit"):
        encode(big)
    with pytest.raises(ProtocolError, match="limit"):
        decode_request(b"x" * (MAX_MESSAGE_BYTES + 1))


def test_unencodable_values_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        encode(make_request(config={"name": "sluice", "bad": float("nan")}))
    with pytest.raises(ProtocolError, match="JSON"):
        encode(Response.success({"when": object()}))


def test_unknown_top_level_keys_are_tolerated() -> None:
    assert decode_request(frame(wire_request(newField={"added": "later"}))) == make_request()
    assert decode_response(frame({"v": 1, "result": None, "trace": "x"})) == Response.success()


# ---- the typed helpers ---------------------------------------------------------------------------


def test_cni_args_parse_matches_the_plugins_rules() -> None:
    args = CniArgs.parse(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u;IP=100.64.0.9;X=y"
    )
    assert args == CniArgs(True, "ns", "p", None, "u", "100.64.0.9", (("X", "y"),))
    with pytest.raises(CniError) as caught:
        CniArgs.parse("X=y")
    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES


def test_request_properties() -> None:
    request = make_request(
        command=Command.GC,
        config={"name": "sluice", "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]},
    )
    assert request.valid_attachments == (Attachment("c1", "eth0"),)
    assert request.runtime_config == {}
    assert make_request().runtime_config == {"ips": []}
    assert make_request(config={"name": "n"}).valid_attachments is None
    assert make_request(config={"name": "n", "cni.dev/valid-attachments": None}).valid_attachments == ()


def test_error_codes_use_the_spec_numbers() -> None:
    assert ErrorCode.names() == {
        "INCOMPATIBLE_CNI_VERSION": 1,
        "UNSUPPORTED_FIELD": 2,
        "UNKNOWN_CONTAINER": 3,
        "INVALID_ENVIRONMENT_VARIABLES": 4,
        "IO_FAILURE": 5,
        "DECODING_FAILURE": 6,
        "INVALID_NETWORK_CONFIG": 7,
        "INVALID_NETNS": 8,
        "TRY_AGAIN_LATER": 11,
        "PLUGIN_NOT_AVAILABLE": 50,
        "LIMITED_CONNECTIVITY": 51,
        "INTERNAL": 999,
    }


# ---- server and client helpers over real sockets ---------------------------------------------------


def test_read_request_and_write_response_over_a_socket() -> None:
    plugin_side, agent_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with plugin_side, agent_side, cast(BinaryIO, agent_side.makefile("rwb")) as stream:
        plugin_side.sendall(encode(make_request()))
        assert read_request(stream) == make_request()
        write_response(stream, Response.failure(ErrorCode.TRY_AGAIN_LATER, "later"))
        assert decode_response(plugin_side.recv(65536)) == Response.failure(11, "later")


@pytest.mark.parametrize(("data", "needle"), [(b"", "before a message"), (b'{"v":1', "middle of a message")])
def test_read_request_reports_a_peer_that_goes_away(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        read_request(io.BytesIO(data))


def test_call_talks_to_a_real_agent(agent: StubAgent) -> None:
    response = call(agent.socket_path, make_request(), timeout=5)
    assert response == Response.success(AGENT_RESULT)
    assert agent.only_request() == make_request()


def test_call_reports_an_absent_agent(sockdir: str) -> None:
    with pytest.raises(AgentUnreachable) as caught:
        call(f"{sockdir}/absent.sock", make_request(), timeout=5)
    assert caught.value.socket_path == f"{sockdir}/absent.sock"


def test_call_reports_a_silent_agent(agent: StubAgent) -> None:
    agent.mode = "hang"
    with pytest.raises(AgentTimeout):
        call(agent.socket_path, make_request(), timeout=0.3)


def test_call_reports_an_agent_that_hangs_up(agent: StubAgent) -> None:
    agent.mode = "close"
    with pytest.raises(AgentHungUp, match="without answering"):
        call(agent.socket_path, make_request(), timeout=5)


def test_agent_side_reports_a_bad_request_and_the_client_reads_it(agent: StubAgent) -> None:
    response = wire.exchange(agent.socket_path, {"v": 1, "command": "ADD"}, timeout=5)
    assert response["error"]["code"] == ErrorCode.DECODING_FAILURE
    assert agent.decode_errors and agent.requests == []


def test_exchange_with_an_agent_that_never_accepts_times_out(sockdir: str) -> None:
    path = f"{sockdir}/backlog.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        done = threading.Event()
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                wire.exchange(path, make_request().to_wire(), timeout=0.3)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert done.wait(5)
        assert len(errors) == 1 and isinstance(errors[0], AgentTimeout | AgentUnreachable)
    finally:
        listener.close()
