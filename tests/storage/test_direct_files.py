"""client/_direct.SegmentFiles against PartitionLog: a direct reader reads what an SPU's fetch
would serve, from the same files, for every offset, limit and bound (seeded random logs)."""

from __future__ import annotations

import random

import pytest

from rillet._direct import SegmentFiles
from rillet.broker.storage import PartitionLog
from rillet.ipc.records import iter_batches

from .test_log import fill

SEG = 2048


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_read_matches_the_spus_read(tmp_path, seed):
    rng = random.Random(seed)
    print("seed", seed)
    log = PartitionLog.open(tmp_path / "p", segment_size=SEG, index_interval_bytes=256)
    try:
        fill(log, rng, 120, max_size=700)
        assert log.segment_count >= 10
        active = (log.active_base_offset, log.active_used)
        files = SegmentFiles(str(log.directory))
        try:
            for _ in range(300):
                offset = rng.randrange(log.log_start_offset, log.leo)
                bound = rng.randrange(offset + 1, log.leo + 1)
                max_bytes = rng.choice([1, 100, 700, 1500, 1 << 20])
                expected = bytes(log.read(offset, max_bytes, bound))
                assert bytes(files.read(offset, max_bytes, bound, active)) == expected, (offset, max_bytes, bound)
            offset, chunks = 0, []                           # sequential, as a stream reads
            while offset < log.leo:
                data = bytes(files.read(offset, 900, log.leo, active))
                chunks.append(data)
                offset = _next_offset(data)
            assert b"".join(chunks) == b"".join(_whole_log(log))
        finally:
            files.close()
    finally:
        log.close()


def test_a_read_never_passes_the_published_end_of_the_active_segment(tmp_path):
    rng = random.Random(7)
    log = PartitionLog.open(tmp_path / "p", segment_size=64 * 1024)
    try:
        fill(log, rng, 5)
        files = SegmentFiles(str(log.directory))
        try:
            used = log.active_used
            fill(log, rng, 5)                                   # written after the publish we hold
            first_five = bytes(files.read(0, 1 << 20, log.leo, (log.active_base_offset, used)))
            assert len(first_five) == used
        finally:
            files.close()
    finally:
        log.close()


def _next_offset(data: bytes) -> int:
    return max(h.next_offset for _p, h in iter_batches(data))


def _whole_log(log: PartitionLog) -> list[bytes]:
    out, offset = [], 0
    while offset < log.leo:
        data = bytes(log.read(offset, 1 << 20))
        out.append(data)
        offset = _next_offset(data)
    return out
