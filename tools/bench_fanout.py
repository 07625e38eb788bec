"""Fan-out check for direct reads: 1 producer process -> N consumer processes on one partition.

    .venv/bin/python -m rillet.tools.bench_fanout RECORDS DIRECT(1,0) CONSUMERS(1,4)
    .venv/bin/python -m rillet.tools.bench_fanout 500000 1,0 1,4

For each switch value and consumer count: a fresh 1-SPU cluster, N consumers reading
from the beginning, then a producer of RECORDS x 100 B (send_all, 64 KiB batches). Prints
the records delivered per second over all consumers and the SPU's CPU per record, the
figure direct reads should keep flat as consumers are added. A quick check, not
rillet-bench's W4 (its producer start-up is inside the timed span).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from rillet.testing import LocalCluster

PRODUCER = """
import sys
from rillet import Fluvio, TopicProducerConfigBuilder
f = Fluvio.connect(sys.argv[1], home=sys.argv[2])
cfg = TopicProducerConfigBuilder().batch_size(65536).linger(5).build()
with f.topic_producer_with_config("t", cfg) as p:
    v = b"x" * 100
    for _ in range(int(sys.argv[3]) // 10000):
        p.send_all([(None, v)] * 10000)
    p.flush()
"""
CONSUMER = """
import sys
from rillet import Fluvio, Offset
f = Fluvio.connect(sys.argv[1], home=sys.argv[2])
s = f.partition_consumer("t", 0).stream(Offset.beginning())
n, count = 0, int(sys.argv[3])
print("ready", flush=True)
for r in s:
    n += 1
    if n == count:
        break
print(s.statistics(), flush=True)
"""


def run(count: int, direct: str, consumers: int) -> str:
    with LocalCluster(spus=1) as cluster:
        cluster.create_topic("t")
        env = {**os.environ, "RILLET_DIRECT_READS": direct}
        args = [cluster.name, str(cluster.home), str(count)]
        spu = psutil.Process(cluster.spu_pid(5001))
        readers = [subprocess.Popen([sys.executable, "-c", CONSUMER, *args], env=env, stdout=subprocess.PIPE, text=True)
                   for _ in range(consumers)]
        try:
            for proc in readers:
                proc.stdout.readline()
            start, before = time.perf_counter(), spu.cpu_times()
            producer = subprocess.Popen([sys.executable, "-c", PRODUCER, *args])
            stats = [proc.stdout.readline().strip() for proc in readers]
            wall, after = time.perf_counter() - start, spu.cpu_times()
            producer.wait()
        finally:
            for proc in readers:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    spu_s = after.user + after.system - before.user - before.system
    return (f"direct={direct} consumers={consumers} wall={wall:.2f}s delivered/s={consumers * count / wall:,.0f} "
            f"spu_cpu={spu_s:.2f}s spu_us_per_record={spu_s / count * 1e6:.2f} {stats[0]}")


def main() -> None:
    count = int(sys.argv[1])
    for direct in sys.argv[2].split(","):
        for consumers in (int(x) for x in sys.argv[3].split(",")):
            print(run(count, direct, consumers), flush=True)


if __name__ == "__main__":
    main()
