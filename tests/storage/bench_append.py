"""Append throughput of PartitionLog (not a test; run by hand).

    /tmp/v/bin/python tests/storage/bench_append.py [--batch-bytes 16384] [--seconds 3]

Reports MB/s and batches/s for the leader path (validate + copy into the map + stamp +
index), with no flush and with a flush (msync + fsync) every 100 batches.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rillet.broker.storage import PartitionLog
from rillet.ipc.records import BatchBuilder


def make_batch(total: int) -> bytes:
    """One record whose value makes the whole batch exactly ``total`` bytes."""
    value_size = total
    while True:
        builder = BatchBuilder()
        builder.append(None, random.Random(0).randbytes(value_size), 0)
        batch = builder.build()
        if len(batch) == total:
            return batch
        value_size += total - len(batch)


def run(directory: Path, batch: bytes, seconds: float, flush_every: int) -> tuple[float, float]:
    log = PartitionLog.open(directory)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            log.append(batch, leader_epoch=0)
        n += 100
        if flush_every and n % flush_every == 0:
            log.flush()
    log.close()
    return n * len(batch) / elapsed / 1e6, n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-bytes", type=int, default=16384)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    batch = make_batch(args.batch_bytes)
    for label, flush_every in (("no flush", 0), ("flush every 100 batches", 100)):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
            mb_s, batches_s = run(Path(d) / "p0", batch, args.seconds, flush_every)
        print(f"{len(batch)}-byte batches, {label}: {mb_s:,.0f} MB/s, {batches_s:,.0f} batches/s")


if __name__ == "__main__":
    main()
