"""Benchmark: the agent's resident memory over many ADD/DEL cycles, as shipped and with glibc's arenas.

Run (root, OVS installed): `.venv/bin/python -m bench.agent_memory` (`--cycles 300 --pods 10` are
the defaults).

One cycle is what a node with `--pods` pods restarting at once sees: every pod gets a new sandbox
(a new container id), `--pods` concurrent ADDs through the real `sluice-cni` and agent, until
ready (flows from the same controller stand-in as `bench/cni.py`), then their concurrent DELs.
The agent's RSS, open descriptors and threads are read from /proc after a warm-up of
`--warm-up` cycles and then every tenth of the run.

Two agents, one after the other on fresh nodes: the agent as shipped, which caps glibc's malloc
arenas (`ovsagent.main.limit_malloc_arenas`), and the baseline, the same agent started with
`MALLOC_ARENA_MAX` set to glibc's own default (8 per core), which the agent leaves alone. Prints
each sample and the growth per 1000 CNI calls over the run and over its second half (a leak
keeps growing in the second half; a cache or a warm allocator levels off). Not a test: the
numbers depend on the machine and its C library.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.cni import SluiceSide, WatchingStandIn
from tests.agent.harness import agent_bed, standalone_factories


@dataclass(frozen=True)
class Sample:
    cycle: int
    rss_kib: int
    fds: int
    threads: int


def sample(pid: int, cycle: int) -> Sample:
    """The process's resident set (KiB), open descriptors and threads now."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return Sample(
        cycle,
        int(fields["VmRSS"].split()[0]),
        len(os.listdir(f"/proc/{pid}/fd")),
        int(fields["Threads"]),
    )


def soak(env: dict[str, str], cycles: int, pods: int, warm_up: int) -> list[Sample]:
    """Samples of one agent started with `env` over `warm_up` + `cycles` ADD/DEL cycles."""
    with (
        standalone_factories() as (make_node, make_netns),
        agent_bed(make_node, make_netns, "veth") as bed,
    ):
        agent = bed.start_agent(flow_wait_seconds=30.0, resync_seconds=0, log_level="warning", env=env)
        with WatchingStandIn(bed) as stand_in:
            side = SluiceSide(bed, stand_in, pods)
            names = [f"m-{i}" for i in range(pods)]
            for name in names:
                side.create(name)
            samples: list[Sample] = []
            step = max(1, cycles // 10)
            try:
                for cycle in range(warm_up + cycles):
                    done = cycle - warm_up  # cycles run since the warm-up
                    if done >= 0 and done % step == 0:
                        samples.append(sample(agent.proc.pid, done))
                    side.generation = cycle + 1
                    side.call_many("ADD", names)
                    side.call_many("DEL", names)
                samples.append(sample(agent.proc.pid, cycles))
            finally:
                side.close()
            if stand_in.errors:
                raise RuntimeError(f"controller stand-in failed: {stand_in.errors[0]}")
    return samples


def growth_per_1000_calls(first: Sample, last: Sample, pods: int) -> float:
    """KiB of RSS per 1000 CNI calls (an ADD or a DEL each) between two samples."""
    calls = (last.cycle - first.cycle) * pods * 2
    return (last.rss_kib - first.rss_kib) * 1000 / calls if calls else 0.0


def report(runs: dict[str, list[Sample]], pods: int) -> str:
    lines = [f"{'agent':<22} {'cycle':>6} {'RSS KiB':>9} {'fds':>4} {'threads':>7}"]
    for label, samples in runs.items():
        lines += [f"{label:<22} {s.cycle:>6} {s.rss_kib:>9} {s.fds:>4} {s.threads:>7}" for s in samples]
    lines.append("")
    lines.append(f"{'agent':<22} {'KiB/1000 calls, run':>20} {'second half':>12}")
    for label, samples in runs.items():
        middle = samples[len(samples) // 2]
        whole = growth_per_1000_calls(samples[0], samples[-1], pods)
        late = growth_per_1000_calls(middle, samples[-1], pods)
        lines.append(f"{label:<22} {whole:>20.1f} {late:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both soaks and print their samples; return 0, or 1 when it cannot run here."""
    parser = argparse.ArgumentParser(
        prog="bench.agent_memory", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--warm-up", type=int, default=20)
    args = parser.parse_args(argv)
    if min(args.cycles, args.pods) < 1 or args.warm_up < 0:
        parser.error("--cycles and --pods must be at least 1, --warm-up at least 0")
    if os.geteuid() != 0 or shutil.which("ovs-vswitchd") is None:
        print("bench.agent_memory needs root and Open vSwitch: `make deps`", file=sys.stderr)
        return 1
    glibc_default = str(8 * (os.cpu_count() or 1))
    os.environ.pop("MALLOC_ARENA_MAX", None)  # the agents inherit this process's environment
    runs = {
        "as shipped": soak({}, args.cycles, args.pods, args.warm_up),
        f"MALLOC_ARENA_MAX={glibc_default}": soak(
            {"MALLOC_ARENA_MAX": glibc_default}, args.cycles, args.pods, args.warm_up
        ),
    }
    print(report(runs, args.pods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
