"""An idle cluster does not wake up for nothing: real supervisor, SC and SPU processes.

Every wake-up of a sleeping process costs a core tens of microseconds on the machines rillet
runs on (README, Benchmarks), taken from the data path. Counted with psutil's voluntary
context switches (every thread of the process; a sleep that ends is one, a preemption under
load is not) over IDLE_S, with a producer connected, its produce
ring attached and idle. Before: the supervisor ~50/s (a 20 ms poll), the SPU ~22/s (a 0.1 s
expiry pass and a 0.1 s look at the ring besides its 4 heartbeats a second). Now: the
supervisor 0, the SPU ~4-6.
"""

from __future__ import annotations

import time

import psutil

from rillet.broker import launcher
from rillet.testing import LocalCluster

IDLE_S = 2.0
SUPERVISOR_MAX_PER_S = 5.0      # it sleeps until a child exits or a signal comes: ~0
SPU_MAX_PER_S = 10.0            # its heartbeats (4/s) and the ring's backed-off look (<= 1/s)


def wake_ups_per_s(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    def count():
        return {name: p.num_ctx_switches().voluntary for name, p in procs.items()}
    before, started = count(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = count(), time.monotonic() - started
    return {name: (after[name] - before[name]) / elapsed for name in procs}


def test_an_idle_cluster_sleeps(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("idle")
        with cluster.fluvio().topic_producer("idle") as producer:
            producer.send(None, b"one").wait(timeout=10)        # its link and ring are up, then idle
            deadline = time.monotonic() + 10
            # the supervisor's last timer: the standby SC, 1 s after the SC is ready
            while len(launcher.cluster_processes(cluster.paths, modules=(launcher.SC,))) < 2:
                assert time.monotonic() < deadline, "the supervisor started no standby SC"
                time.sleep(0.05)
            (spu,) = launcher.live_spus(cluster.paths).values()
            procs = {"supervisor": psutil.Process(launcher.supervisor_pid(cluster.paths)), "spu": spu}
            rates = wake_ups_per_s(procs, IDLE_S)
            print(f"idle wake-ups per second: {rates}")
            assert rates["supervisor"] < SUPERVISOR_MAX_PER_S, rates
            assert rates["spu"] < SPU_MAX_PER_S, rates
            producer.send(None, b"two").wait(timeout=10)         # still served after the quiet spell
    assert not cluster.leftovers()
