"""What an idle cluster costs: ``python -m rillet.tools.bench_idle [--seconds S] [--producer] [--spus N]``.

Starts a cluster (1 SPU; ``--spus N``: N SPUs and the topic replicated N times) with one topic
in a temporary directory (with ``--producer``, also a
producer that sends one record and then idles, its produce ring attached), waits for the
supervisor's standby SC and one more second, then prints each process's context switches
a second (voluntary and involuntary: every one is a wake-up or a preemption) and CPU in ms a
second over ``--seconds``. CPU comes from /proc/PID/task/*/schedstat (nanoseconds; psutil's
cpu_times counts 10 ms ticks, too coarse for a process that does almost nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import psutil

from rillet.broker import launcher
from rillet.testing import LocalCluster


def cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):          # a thread that ended meanwhile
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def processes(cluster: LocalCluster) -> dict[str, psutil.Process]:
    sc = launcher.sc_pid(cluster.paths)
    procs = {"supervisor": psutil.Process(launcher.supervisor_pid(cluster.paths)), "SC": psutil.Process(sc)}
    for proc in launcher.cluster_processes(cluster.paths, modules=(launcher.SC,)):
        if proc.pid != sc:
            procs["standby SC"] = proc
    for spu_id, proc in launcher.live_spus(cluster.paths).items():
        procs[f"SPU {spu_id}"] = proc
    return procs


def measure(procs: dict[str, psutil.Process], seconds: float) -> dict[str, tuple[float, float]]:
    """name -> (context switches a second, CPU ms a second)."""
    def snap():
        return {name: (sum(p.num_ctx_switches()), cpu_ns(p.pid)) for name, p in procs.items()}
    before, started = snap(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = snap(), time.monotonic() - started
    return {name: ((after[name][0] - before[name][0]) / elapsed, (after[name][1] - before[name][1]) / elapsed / 1e6)
            for name in procs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_idle", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--producer", action="store_true", help="an idle producer with its ring attached too")
    parser.add_argument("--spus", type=int, default=1, help="SPUs, and the topic's replication factor")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as home, LocalCluster(spus=args.spus, home=home) as cluster:
        cluster.create_topic("idle", replication=args.spus)
        with contextlib.ExitStack() as stack:
            if args.producer:
                producer = stack.enter_context(cluster.fluvio().topic_producer("idle"))
                producer.send(None, b"one").wait(timeout=10)
            deadline = time.monotonic() + 30
            while len(launcher.cluster_processes(cluster.paths, modules=(launcher.SC,))) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("bench_idle: the supervisor started no standby SC within 30 s")
                time.sleep(0.05)
            time.sleep(1.0)
            rates = measure(processes(cluster), args.seconds)
    print("  ".join(f"{name}: {switches:.1f}/s {cpu:.2f} ms/s" for name, (switches, cpu) in rates.items()))


if __name__ == "__main__":
    main()
