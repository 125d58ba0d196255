"""Traffic and inspection helpers for the end-to-end tests (real processes in the lab's namespaces)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lab.netns import Netns
from lab.ovs import OvsNode
from lab.state import NodeRecord, PodRecord

# Sends one message to each (proto, ip, port) and prints what came back (or the error), as JSON.
_PROBE = r"""
import json, socket, sys
out = []
for proto, ip, port in json.loads(sys.argv[1]):
    msg = b"probe-" + ip.encode()
    try:
        if proto == "TCP":
            s = socket.create_connection((ip, port), timeout=3)
            s.sendall(msg); s.shutdown(socket.SHUT_WR); data = b""
            while chunk := s.recv(4096):
                data += chunk
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
            for _ in range(3):
                s.sendto(msg, (ip, port))
                try:
                    data = s.recvfrom(4096)[0]; break
                except socket.timeout:
                    data = b"<timeout>"
        s.close(); out.append(data.decode(errors="replace"))
    except OSError as exc:
        out.append(f"<{exc}>")
print(json.dumps(out))
"""


def probe(netns: str, targets: Sequence[tuple[str, str, int]]) -> list[str]:
    """From inside `netns`, send one message to every (proto, ip, port); return the answers."""
    res = Netns(netns).exec(sys.executable, "-c", _PROBE, json.dumps(list(targets)), timeout=60)
    answers: list[str] = json.loads(res.stdout)
    return answers


_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_SEQ = re.compile(r"bytes from .*icmp_seq=(\d+)")


@dataclass
class PingRun:
    """A continuous ping (every `interval` s) from a namespace until `stop()`."""

    netns: str
    dst: str
    interval: float = 0.05

    def __post_init__(self) -> None:
        self.proc = Netns(self.netns).popen("ping", "-n", "-i", str(self.interval), self.dst)

    def stop(self) -> tuple[int, list[int], str]:
        """SIGINT the ping; return (transmitted, the sequence numbers lost, the output's end).

        The last request may still be in flight when the SIGINT arrives; it is not counted as lost.
        """
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        match = _SUMMARY.search(out)
        assert match, f"no ping summary:\n{out}\n{err}"
        sent = int(match.group(1))
        got = {int(seq) for seq in _SEQ.findall(out)}
        lost = [seq for seq in range(1, sent) if seq not in got]
        return sent, lost, out[-400:]


def ovs(node: NodeRecord) -> OvsNode:
    """The node's OVS (for ovs-vsctl/ovs-ofctl through its run directory)."""
    return OvsNode(node.netns, node.ovs_rundir, name=node.name)


def flows(node: NodeRecord) -> str:
    """br-int's flow table as `ovs-ofctl -O OpenFlow15 dump-flows` prints it."""
    return ovs(node).ofctl("dump-flows", "br-int")


def ofports(node: NodeRecord) -> dict[str, int]:
    """br-int's interfaces: {name: ofport}."""
    out = ovs(node).vsctl("--format=json", "--columns=name,ofport", "list", "Interface")
    return {str(name): int(port) for name, port in json.loads(out)["data"] if isinstance(port, int)}


def tcpdump(netns: str, interface: str, bpf: str, count: int, timeout: float) -> subprocess.Popen[str]:
    """Start tcpdump in `netns` on `interface` with filter `bpf`, returning once it listens."""
    proc = Netns(netns).popen(
        "timeout", str(timeout), "tcpdump", "-l", "-n", "-i", interface, "-c", str(count), bpf
    )
    assert proc.stderr is not None
    seen = ""
    while "listening on" not in seen:
        line = proc.stderr.readline()
        assert line, f"tcpdump did not start: {seen}"
        seen += line
    return proc


_REACH = r"""
import json, subprocess, sys
procs = {ip: subprocess.Popen(["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "5", ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
         for ip in json.loads(sys.argv[1])}
print(json.dumps(sorted(ip for ip, p in procs.items() if p.wait() != 0)))
"""


def unreachable(netns: str, ips: Sequence[str]) -> list[str]:
    """Ping every address in `ips` from inside `netns` at once; return those that never answered."""
    res = Netns(netns).exec(sys.executable, "-c", _REACH, json.dumps(list(ips)), timeout=60)
    lost: list[str] = json.loads(res.stdout)
    return lost


def warm_up(a: PodRecord, b: PodRecord) -> None:
    """Ping both ways until a reply: the first packet towards a tunnel endpoint a node has not
    talked to yet is dropped while OVS resolves the endpoint's MAC (not what a test measures)."""
    for src, dst in ((a, b), (b, a)):
        Netns(src.netns).exec("ping", "-n", "-c", "1", "-i", "0.2", "-w", "5", dst.ip, timeout=10)
