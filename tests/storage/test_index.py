"""The sparse index: lookups agree with a linear scan; damaged index files are rebuilt."""

from __future__ import annotations

import logging
import struct

import pytest

from rillet.broker.storage import PartitionLog
from rillet.broker.storage.index import ENTRY, OffsetIndex, capacity_entries
from rillet.ipc.records import HEADER_SIZE

from .batches import base_of, count_of, sized_batch, split
from .conftest import LOGGER

SEG = 4096


def build(tmp_path, rng, *, interval: int, n: int = 120) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(tmp_path / "p0", segment_size=SEG, index_interval_bytes=interval, logger=LOGGER)
    for _ in range(n):
        log.append(sized_batch(rng.randrange(HEADER_SIZE + 1, 400), rng, record_count=rng.randrange(1, 6)),
                   leader_epoch=0)
    stored = []
    offset = 0
    while offset < log.leo:
        got = split(log.read(offset, 1 << 30))
        stored += got
        offset = base_of(got[-1]) + count_of(got[-1])
    return log, stored


def rule_entries(batches: list[bytes], segment_base: int, interval: int) -> list[tuple[int, int]]:
    """The index the rule in index.py prescribes, computed from the batches alone."""
    entries, pos, last = [], 0, 0
    for b in batches:
        if pos - last >= interval:
            entries.append((base_of(b) - segment_base, pos))
            last = pos
        pos += len(b)
    return entries


def segment_batches(stored: list[bytes], log: PartitionLog) -> dict[int, list[bytes]]:
    bases = [seg.base_offset for seg in log._segments] + [log.leo]
    return {lo: [b for b in stored if lo <= base_of(b) < hi] for lo, hi in zip(bases, bases[1:])}


@pytest.mark.parametrize("interval", [0, 1, 150, 4096])
def test_lookup_matches_linear_scan(tmp_path, rng, interval):
    log, stored = build(tmp_path, rng, interval=interval)
    assert log.segment_count > 3
    for seg, (base, batches) in zip(log._segments, segment_batches(stored, log).items()):
        assert seg.index.entries() == rule_entries(batches, base, interval)
        positions, pos = [], 0
        for b in batches:
            positions.append(pos)
            pos += len(b)
        for offset in range(base, seg.next_offset):
            j = next(i for i, b in enumerate(batches) if base_of(b) <= offset < base_of(b) + count_of(b))
            assert seg.find(offset) == (positions[j], base_of(batches[j]))
            assert bytes(log.read(offset, 0)) == batches[j]
    log.close()


def test_every_batch_indexed_with_interval_zero(tmp_path, rng):
    log, stored = build(tmp_path, rng, interval=0, n=10)
    assert log._segments[0].index.count == len(segment_batches(stored, log)[0])
    log.close()


def test_capacity_bound_holds():
    assert capacity_entries(64 << 20, 4096) == 16385
    assert capacity_entries(4096, 0) == 4096 // HEADER_SIZE + 1


def test_lookup_on_handmade_entries(tmp_path):
    path = tmp_path / "x.index"
    index = OffsetIndex.write_sealed(path, [(5, 100), (9, 300), (20, 700)], interval_bytes=100)
    assert [index.lookup(o) for o in (0, 4, 5, 8, 9, 19, 20, 10**6)] == [0, 0, 100, 100, 300, 300, 700, 700]
    assert index.first_problem(1000, lambda pos: {100: 5, 300: 9, 700: 20}[pos], 0) is None
    assert "does not point at the batch of offset 9" in index.first_problem(1000, lambda pos: 5, 0)
    assert "past the log's 500 bytes" in index.first_problem(500, lambda pos: {100: 5, 300: 9}.get(pos), 0)
    index.close(trim=False)


DAMAGE = {
    "garbage": lambda data: bytes((b * 7 + 3) & 0xFF for b in data),
    "non-monotonic": lambda data: data[8:16] + data[:8] + data[16:],
    "partial entry": lambda data: data + b"\x01\x02\x03",
    "past the log": lambda data: data[:-8] + ENTRY.pack(2**31, 2**31),
    "wrong offset": lambda data: data[:-8] + ENTRY.pack(struct.unpack_from("<I", data, len(data) - 8)[0] + 1,
                                                        struct.unpack_from("<I", data, len(data) - 4)[0]),
    "missing": None,
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_sealed_index_is_rebuilt(tmp_path, rng, caplog, kind):
    log, stored = build(tmp_path, rng, interval=150)
    log.close()
    path = sorted((tmp_path / "p0").glob("*.index"))[1]
    good = path.read_bytes()
    assert len(good) >= 24
    if DAMAGE[kind] is None:
        path.unlink()
    else:
        path.write_bytes(DAMAGE[kind](good))
    caplog.set_level(logging.WARNING)
    log = PartitionLog.open(tmp_path / "p0", segment_size=SEG, index_interval_bytes=150, logger=LOGGER)
    assert f"index {path} is unsound" in caplog.text
    assert path.read_bytes() == good
    for offset in range(log.leo):
        batch = bytes(log.read(offset, 0))
        assert base_of(batch) <= offset < base_of(batch) + count_of(batch)
    log.close()


def test_damaged_active_index_is_rebuilt_silently(tmp_path, rng, caplog):
    log, stored = build(tmp_path, rng, interval=150)
    log.close()
    path = sorted((tmp_path / "p0").glob("*.index"))[-1]
    good = path.read_bytes()
    path.write_bytes(b"\xff" * 4096)
    log = PartitionLog.open(tmp_path / "p0", segment_size=SEG, index_interval_bytes=150, logger=LOGGER)
    assert "unsound" not in caplog.text
    assert log._segments[-1].index.entries() == [ENTRY.unpack_from(good, i) for i in range(0, len(good), 8)]
    for offset in range(log._segments[-1].base_offset, log.leo):
        batch = bytes(log.read(offset, 0))
        assert base_of(batch) <= offset < base_of(batch) + count_of(batch)
    log.close()
    assert path.read_bytes() == good  # trimmed to the rebuilt entries at close
