"""How long a /metrics scrape holds the SC's event loop: ``python -m rillet.tools.bench_scrape``.

An ad-hoc measurement, not a benchmark workload: a LocalCluster (3 SPUs, metrics on a free
port), one topic of 300 partitions at RF 2, 20 scrapes 0.2 s apart. The loop-lag probe is
a thread sending ClusterStatusRequest back to back over one admin link: the SC answers it
between two events, so a round trip that overlaps a scrape waits for whatever the scrape
keeps the loop (or the GIL) busy with. Prints the scrape wall times and the probe's round
trips idle and during scrapes (median, max).
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request

from rillet.broker import launcher
from rillet.ipc import messages as m
from rillet.testing import LocalCluster

PARTITIONS, SCRAPES = 300, 20


def _summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms (n={len(xs)})"


def main() -> int:
    with LocalCluster(spus=3, metrics_port=0) as cluster:
        cluster.create_topic("big", partitions=PARTITIONS, replication=2, segment_size=65536)
        url = cluster.metrics_url
        urllib.request.urlopen(url, timeout=30).read()          # warm up
        stop = threading.Event()
        trips: list[tuple[float, float]] = []                   # (start, round trip)

        def probe() -> None:
            with launcher.admin_connection(cluster.paths) as conn:
                while not stop.is_set():
                    start = time.perf_counter()
                    conn.call(m.ClusterStatusRequest(conn.next_cid()))
                    trips.append((start, time.perf_counter() - start))
                    time.sleep(0.002)

        thread = threading.Thread(target=probe)
        thread.start()
        try:
            time.sleep(1.0)
            idle = [t for _, t in trips]
            walls, windows = [], []
            for _ in range(SCRAPES):
                start = time.perf_counter()
                body = urllib.request.urlopen(url, timeout=30).read()
                walls.append(time.perf_counter() - start)
                windows.append((start, time.perf_counter()))
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        during = [t for start, t in trips if any(a <= start <= b for a, b in windows)]
        print(f"exposition: {len(body)} bytes, {body.count(10)} lines")
        print("scrape wall:", _summary(walls))
        print("probe round trip, idle:", _summary(idle))
        print("probe round trip, during scrapes:", _summary(during))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
