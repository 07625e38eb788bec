"""Wake-up latency of direct readers: from an SPU-style publish to the reader running.

    .venv/bin/python -m rillet.tools.bench_wake [--readers 1,10] [--publishes 2000]

A writer publishes a positions row (ipc/positions.py) every ~1 ms, with its
CLOCK_MONOTONIC time in the hw field, through the same PositionsWriter.publish an
SPU uses (row write, wake word bump, FUTEX_WAKE of a few sleepers). Each reader
process sleeps in futex.wait on the row's word and, once running again, relays the
wake as consumers do and notes now - hw. One JSON line
per reader count: latency percentiles over every reader, and the writer's CPU per
publish (which should not grow with the number of readers).
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
reader.close()
print(json.dumps(lat), flush=True)
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
        for proc in procs:
            lat += json.loads(proc.stdout.readline())
            proc.wait(10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        writer.close()
    return {"readers": readers, "wakes": len(lat), "p50_us": _pct(lat, 0.5), "p90_us": _pct(lat, 0.9),
            "p99_us": _pct(lat, 0.99), "writer_cpu_per_publish_us": round(cpu / publishes * 1e6, 2)}


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
