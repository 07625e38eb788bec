"""Wake-up latency of direct readers: from an SPU-style publish to the reader running.

    .venv/bin/python -m rillet.tools.bench_wake [--readers 1,10] [--publishes 2000]

A writer publishes a positions row (ipc/positions.py) every ~1 ms, with its
CLOCK_MONOTONIC time in the hw field, through the same PositionsWriter.publish an
SPU uses (row write, wake word bump, FUTEX_WAKE of a few sleepers). Each reader
process sleeps in futex.wait on the row's word and, once running again, relays the
wake as consumers do and notes now - hw. One JSON line
per reader count: latency percentiles over every reader, the writer's CPU per
publish (which should not grow with the number of readers), and each reader's CPU
per wake. Both CPU figures include the kernel's side of the wake-up, which depends on
the host more than on rillet: on a VM whose idle vCPUs halt at once (cpuidle-haltpoll
with ``guest_halt_poll_ns`` 0), waking a sleeper on the other vCPU costs the waker and
the woken ~10 us each; the line names the idle driver and that setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from rillet.ipc.positions import Positions, Role
from rillet.ipc.positions_shm import PositionsWriter

READER = """
import json, sys, time
from rillet.ipc import futex
from rillet.ipc.positions_shm import PositionsReader
reader = PositionsReader.open(sys.argv[1])
count, lat = int(sys.argv[2]), []
address, value = reader.wake_word(0)
cpu = time.thread_time()
print("ready", flush=True)
deadline = time.monotonic() + 60
while len(lat) < count and time.monotonic() < deadline:
    futex.wait(address, value, 1.0)
    now = time.monotonic_ns()
    row = reader.row(0)
    address, new = reader.wake_word(0)
    if new != value:
        futex.wake(address, futex.RELAY_FANOUT)     # relay, as client/_direct.py does
        if row.hw > 0:
            lat.append(now - row.hw)
    value = new
cpu = time.thread_time() - cpu
reader.close()
print(json.dumps({"lat": lat, "cpu_s": cpu}), flush=True)
"""


def _pct(values: list[int], q: float) -> float:
    if not values:
        return -1.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def run(readers: int, publishes: int) -> dict:
    name = f"/rillet-bench-wake-{uuid.uuid4().hex[:10]}"
    writer = PositionsWriter.create(name, 1, os.getpid(), max_rows=4)
    procs = []
    try:
        writer.publish(0, Positions("bench", 0, 1, Role.LEADER, 0, 0, 0, 0, 0))
        for _ in range(readers):
            procs.append(subprocess.Popen([sys.executable, "-c", READER, name, str(publishes - 50)],
                                          stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        cpu = 0.0
        for i in range(publishes):
            before = time.thread_time()
            writer.publish(0, Positions("bench", 0, 1, Role.LEADER, 0, time.monotonic_ns(), i, 0, 0))
            cpu += time.thread_time() - before
            time.sleep(0.001)
        lat: list[int] = []
        reader_cpu = 0.0
        for proc in procs:
            got = json.loads(proc.stdout.readline())
            lat += got["lat"]
            reader_cpu += got["cpu_s"]
            proc.wait(10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        writer.close()
    return {"readers": readers, "wakes": len(lat), "p50_us": _pct(lat, 0.5), "p90_us": _pct(lat, 0.9),
            "p99_us": _pct(lat, 0.99), "writer_cpu_per_publish_us": round(cpu / publishes * 1e6, 2),
            "reader_cpu_per_wake_us": round(reader_cpu / max(1, len(lat)) * 1e6, 2), **_idle_setting()}


def _idle_setting() -> dict:
    """The host's CPU idle driver and its guest halt-poll bound, where Linux shows them."""
    found = {}
    for key, path in (("cpuidle", "/sys/devices/system/cpu/cpuidle/current_driver"),
                      ("guest_halt_poll_ns", "/sys/module/haltpoll/parameters/guest_halt_poll_ns")):
        try:
            with open(path) as f:
                found[key] = f.read().strip()
        except OSError:
            pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_wake", description=__doc__.splitlines()[0])
    parser.add_argument("--readers", default="1,10")
    parser.add_argument("--publishes", type=int, default=2000)
    args = parser.parse_args(argv)
    for n in (int(x) for x in args.readers.split(",")):
        print(json.dumps(run(n, args.publishes)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
