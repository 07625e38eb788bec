"""What one scrub slice costs the SPU's event loop: ``python -m rillet.tools.bench_scrub``.

Fills a 64 MiB log of 100-byte and of 16 KiB batches in a temporary directory and scrubs it
with the SPU's per-tick budget (broker/spu/service.py), printing the throughput and the mean
and worst time of one slice (the longest the event loop waits behind the scrub).
"""

from __future__ import annotations

import logging
import struct
import tempfile
import time
import zlib

from rillet.broker.spu.service import SCRUB_BATCHES_PER_TICK, SCRUB_BYTES_PER_TICK
from rillet.broker.storage import PartitionLog
from rillet.broker.storage.scrub import Scrubber
from rillet.ipc.records import ATTRIBUTES_POS, BATCH_HEADER, CRC_POS, HEADER_SIZE, MAGIC, PREAMBLE_SIZE


def batch(size: int) -> bytes:
    payload = b"y" * (size - HEADER_SIZE)
    buf = bytearray(BATCH_HEADER.pack(0, HEADER_SIZE - PREAMBLE_SIZE + len(payload), -1, MAGIC, 0, 0, 0,
                                      0, 0, -1, -1, -1, 1)) + payload
    struct.pack_into("<I", buf, CRC_POS, zlib.crc32(memoryview(buf)[ATTRIBUTES_POS:]))
    return bytes(buf)


def main() -> None:
    for size in (100, 16384):
        with tempfile.TemporaryDirectory() as d:
            log = PartitionLog.open(f"{d}/p", segment_size=8 << 20, logger=logging.getLogger("bench"))
            one, total = batch(size), 0
            while total < 64 << 20:
                log.append(one, leader_epoch=1)
                total += len(one)
            scrubber, slices, worst, done = Scrubber(log), 0, 0.0, False
            started = time.perf_counter()
            while not done:
                t0 = time.perf_counter()
                done, _ = scrubber.step(SCRUB_BYTES_PER_TICK, SCRUB_BATCHES_PER_TICK)
                worst, slices = max(worst, time.perf_counter() - t0), slices + 1
            elapsed = time.perf_counter() - started
            print(f"batches of {size} B: {scrubber.checked_bytes / 2**20:.0f} MiB in {elapsed:.2f} s of CPU "
                  f"({scrubber.checked_bytes / 2**20 / elapsed:.0f} MiB/s); {slices} slices, mean "
                  f"{elapsed / slices * 1000:.2f} ms, worst {worst * 1000:.1f} ms")
            log.close()


if __name__ == "__main__":
    main()
