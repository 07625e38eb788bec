"""Recovery on real damaged files: the longest valid prefix stays, the torn tail is kept aside.

Each case writes a damaged copy of a known-good replica directory and reopens it. The
expected outcome comes from a byte model, independent of the recovery code: the kept
prefix is the longest run of whole batches identical to the good ones (a batch can only
pass length, magic, CRC and offset checks if it is intact), and the side file holds what
follows it, up to its last non-zero byte.
"""

from __future__ import annotations

import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from rillet.broker.storage import PartitionLog
from rillet.ipc.errors import StorageError
from rillet.ipc.records import HEADER_SIZE

from .batches import base_of, count_of, sized_batch, split, stamped
from .conftest import LOGGER

SEG = 4096


@dataclass
class Golden:
    files: dict[str, bytes]      # every file of the cleanly closed directory
    active: str                  # name of the active segment
    batches: list[bytes]         # the active segment's batches, as stored
    bounds: list[int]            # batch start positions, then the end: [0, b1, ..., L]
    next_offsets: list[int]      # next offset after keeping i batches, i = 0..k

    @property
    def data(self) -> bytes:
        return self.files[self.active]


def make_golden(tmp_path: Path, rng, *, sealed: bool, k: int = 5) -> Golden:
    d = tmp_path / "golden"
    log = PartitionLog.open(d, segment_size=SEG, index_interval_bytes=128, logger=LOGGER)
    if sealed:  # a first segment to roll out of, so the active one has a base above 0
        while log.segment_count == 1:
            log.append(sized_batch(rng.randrange(200, 700), rng, record_count=3), leader_epoch=1)
    for i in range(k):
        log.append(sized_batch(rng.randrange(HEADER_SIZE + 1, 160), rng, record_count=rng.randrange(1, 4)),
                   leader_epoch=2 if i >= 2 else 1)
    log.close()
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    active = max(n for n in files if n.endswith(".log"))
    batches = split(files[active])
    bounds = [0]
    for b in batches:
        bounds.append(bounds[-1] + len(b))
    first = int(active[:20])
    next_offsets = [first] + [base_of(b) + count_of(b) for b in batches]
    shutil.rmtree(d)
    return Golden(files, active, batches, bounds, next_offsets)


def expected(golden: Golden, damaged: bytes) -> tuple[int, bytes]:
    """(batches kept, bytes cut) by the byte model."""
    kept = max(i for i, b in enumerate(golden.bounds) if damaged[:b] == golden.data[:b] and len(damaged) >= b)
    return kept, damaged[golden.bounds[kept]:].rstrip(b"\0")


def reopen_damaged(tmp_path: Path, golden: Golden, damaged: bytes) -> tuple[Path, PartitionLog]:
    d = tmp_path / "case"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    for name, data in golden.files.items():
        (d / name).write_bytes(damaged if name == golden.active else data)
    return d, PartitionLog.open(d, segment_size=SEG, index_interval_bytes=128, logger=LOGGER)


def check_case(tmp_path, golden: Golden, damaged: bytes, caplog, *, append_after: bool = False) -> None:
    caplog.clear()
    kept, cut = expected(golden, damaged)
    d, log = reopen_damaged(tmp_path, golden, damaged)
    try:
        where = f"kept {kept} batches, cut {len(cut)} bytes"
        assert log.leo == golden.next_offsets[kept], where
        active_base = int(golden.active[:20])
        got = split(log.read(active_base, 1 << 20)) if log.leo > active_base else []
        assert got == golden.batches[:kept], where
        side_files = sorted(d.glob("*.cut-*"))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "recovery cut" in r.getMessage()]
        position = golden.bounds[kept]
        if not cut:
            assert (log.recovery_report, side_files, warnings) == ([], [], []), where
        else:
            [report] = log.recovery_report
            side = d / f"{golden.active}.cut-{position}"
            assert (report.file, report.position, report.bytes_cut, report.side_file) == (
                d / golden.active, position, len(cut), side), where
            assert report.offset == log.leo
            assert side_files == [side]
            assert side.read_bytes() == cut, where
            [warning] = warnings
            text = warning.getMessage()
            assert f"{len(cut)} bytes at position {position} of {d / golden.active}" in text
            assert str(side) in text
            with open(d / golden.active, "rb") as f:
                f.seek(position)
                assert f.read(len(cut)).count(0) == len(cut), "the cut bytes are zeroed in the segment"
        if append_after:
            more = sized_batch(100, __import__("random").Random(position))
            base, _ = log.append(more, leader_epoch=3)
            assert base == golden.next_offsets[kept]
            log.close()
            assert (d / golden.active).stat().st_size == golden.bounds[kept] + len(more), "trimmed at close"
            caplog.clear()
            again = PartitionLog.open(d, segment_size=SEG, index_interval_bytes=128, logger=LOGGER)
            assert again.recovery_report == [] and again.leo == base + 1
            assert bytes(again.read(base, 1 << 20)) == stamped(more, base, 3)
            again.close()
    finally:
        log.close()


@pytest.fixture(params=[False, True], ids=["first-segment", "after-roll"])
def golden(request, tmp_path, rng) -> Golden:
    return make_golden(tmp_path, rng, sealed=request.param)


def test_truncated_at_every_position(tmp_path, golden, caplog):
    for p in range(len(golden.data) + 1):
        check_case(tmp_path, golden, golden.data[:p], caplog, append_after=p % 97 == 0)


def test_zero_filled_tail_at_every_position(tmp_path, golden, caplog):
    size = len(golden.data)
    for p in range(size):
        check_case(tmp_path, golden, golden.data[:p] + bytes(size - p + 300), caplog, append_after=p % 89 == 0)


def test_random_garbage_tail_at_every_position(tmp_path, golden, caplog, rng):
    for p in range(len(golden.data) + 1):
        garbage = rng.randbytes(rng.randrange(1, 300))
        check_case(tmp_path, golden, golden.data[:p] + garbage, caplog, append_after=p % 83 == 0)


def test_garbage_after_zeros(tmp_path, golden, caplog, rng):
    """A zero header is not the end when non-zero bytes follow: a page written out of order."""
    for _ in range(40):
        p = rng.choice(golden.bounds[1:])
        damaged = golden.data[:p] + bytes(rng.randrange(HEADER_SIZE, 2000)) + rng.randbytes(rng.randrange(1, 50))
        check_case(tmp_path, golden, damaged, caplog)


def test_bad_crc(tmp_path, golden, caplog, rng):
    for j, start in enumerate(golden.bounds[:-1]):
        end = golden.bounds[j + 1]
        for pos in {start + 16, start + 17, start + 20, start + 21, start + HEADER_SIZE, end - 1,
                    rng.randrange(start + 17, end)}:
            damaged = bytearray(golden.data)
            damaged[pos] ^= 1 << rng.randrange(8)
            check_case(tmp_path, golden, bytes(damaged), caplog, append_after=j == 2)


def test_header_length_past_eof(tmp_path, golden, caplog):
    for j, start in enumerate(golden.bounds[:-1]):
        for length in (10**6, len(golden.data), 2**31 - 1, 0, -5, 48):
            damaged = bytearray(golden.data)
            struct.pack_into("<i", damaged, start + 8, length)
            check_case(tmp_path, golden, bytes(damaged), caplog)
            assert expected(golden, bytes(damaged))[0] == j


def test_base_offset_discontinuity(tmp_path, golden, caplog):
    for j, start in enumerate(golden.bounds[:-1]):
        for delta in (1, -1, 1000):
            damaged = bytearray(golden.data)
            struct.pack_into("<q", damaged, start, base_of(golden.batches[j]) + delta)
            check_case(tmp_path, golden, bytes(damaged), caplog, append_after=delta == 1000)
    # A valid batch appended twice: the copy's offset is not the next one.
    check_case(tmp_path, golden, golden.data + golden.batches[-1], caplog)


def test_partial_batch_written_with_plain_file_io(tmp_path, rng, caplog):
    """What a SPU killed mid-append leaves: half a batch after the last good one."""
    d = tmp_path / "p0"
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    good = [stamped(b, log.append(b, leader_epoch=0)[0], 0)
            for b in (sized_batch(rng.randrange(100, 400), rng) for _ in range(4))]
    leo = log.leo
    log.close()
    segment = d / "00000000000000000000.log"
    torn = stamped(sized_batch(500, rng), leo, 0)[:321]
    with open(segment, "r+b") as f:
        f.seek(0, 2)
        end = f.tell()
        f.write(torn)
    caplog.clear()
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    assert log.leo == leo and split(log.read(0, 1 << 20)) == good
    [cut] = log.recovery_report
    assert (cut.position, cut.bytes_cut) == (end, len(torn.rstrip(b"\0")))
    assert (d / f"00000000000000000000.log.cut-{end}").read_bytes() == torn.rstrip(b"\0")
    assert f"recovery cut {cut.bytes_cut} bytes at position {end}" in caplog.text
    assert log.append(sized_batch(100, rng), leader_epoch=0)[0] == leo
    log.close()


def test_partial_batch_in_a_preallocated_segment(tmp_path, rng, caplog):
    """Same, in a copy taken while open (file still at its preallocated size)."""
    d = tmp_path / "p0"
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    for _ in range(3):
        log.append(sized_batch(300, rng), leader_epoch=0)
    used, leo = log.size_bytes, log.leo
    shutil.copytree(d, tmp_path / "copy")
    log.close()
    torn = stamped(sized_batch(400, rng), leo, 0)[:HEADER_SIZE + 10]
    with open(tmp_path / "copy" / "00000000000000000000.log", "r+b") as f:
        f.seek(used)
        f.write(torn)
    copy = PartitionLog.open(tmp_path / "copy", segment_size=SEG, logger=LOGGER)
    assert copy.leo == leo
    assert [(c.position, c.bytes_cut) for c in copy.recovery_report] == [(used, len(torn.rstrip(b"\0")))]
    copy.close()


def test_repeated_cut_at_the_same_position_keeps_both_side_files(tmp_path, rng):
    d = tmp_path / "p0"
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    log.append(sized_batch(200, rng), leader_epoch=0)
    log.close()
    segment = d / "00000000000000000000.log"
    for garbage in (b"\x01\x02\x03", b"\x04\x05"):
        with open(segment, "ab") as f:
            f.write(garbage)
        log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
        log.close()
    assert (d / "00000000000000000000.log.cut-200").read_bytes() == b"\x01\x02\x03"
    assert (d / "00000000000000000000.log.cut-200.1").read_bytes() == b"\x04\x05"


# --- sealed segments are trusted, but must join up ---------------------------------------


def make_rolled(tmp_path: Path, rng, segments: int = 3) -> Path:
    d = tmp_path / "p0"
    log = PartitionLog.open(d, segment_size=2048, logger=LOGGER)
    while log.segment_count < segments:
        log.append(sized_batch(rng.randrange(100, 600), rng, record_count=2), leader_epoch=0)
    log.close()
    return d


def test_sealed_segment_cut_short_is_damage(tmp_path, rng):
    d = make_rolled(tmp_path, rng)
    first = sorted(d.glob("*.log"))[0]
    data = first.read_bytes()
    first.write_bytes(data[:-7])  # a torn last batch: its bytes are left over
    with pytest.raises(StorageError, match=rf"sealed segment {first} is damaged: \d+ bytes at position \d+ "
                                           r"\(after offset \d+\) are not valid batches"):
        PartitionLog.open(d, segment_size=2048, logger=LOGGER)
    last = split(data)[-1]
    first.write_bytes(data[:-len(last)])  # the whole last batch missing
    with pytest.raises(StorageError, match=rf"segment {first} ends at offset {base_of(last)} but the next "
                                           rf"segment starts at {base_of(last) + count_of(last)}"):
        PartitionLog.open(d, segment_size=2048, logger=LOGGER)


def test_sealed_segment_with_garbage_after_its_end_is_damage(tmp_path, rng):
    d = make_rolled(tmp_path, rng)
    first = sorted(d.glob("*.log"))[0]
    with open(first, "ab") as f:
        f.write(b"\x00\x00\x07")
    with pytest.raises(StorageError, match=rf"sealed segment {first} is damaged: 3 bytes at position"):
        PartitionLog.open(d, segment_size=2048, logger=LOGGER)


def test_missing_middle_segment_is_damage(tmp_path, rng):
    d = make_rolled(tmp_path, rng, segments=4)
    sorted(d.glob("*.log"))[1].unlink()
    with pytest.raises(StorageError, match="the log is damaged"):
        PartitionLog.open(d, segment_size=2048, logger=LOGGER)


def test_untrimmed_sealed_segment_is_accepted(tmp_path, rng):
    """A crash between creating the next segment and trimming this one leaves zeros: harmless."""
    d = make_rolled(tmp_path, rng)
    log = PartitionLog.open(d, segment_size=2048, logger=LOGGER)
    before = (log.leo, log.size_bytes, bytes(log.read(0, 1 << 20)))
    log.close()
    first = sorted(d.glob("*.log"))[0]
    with open(first, "ab") as f:
        f.write(bytes(2048 - first.stat().st_size))
    log = PartitionLog.open(d, segment_size=2048, logger=LOGGER)
    assert log.recovery_report == [] and log.segment_count == 3
    assert (log.leo, log.size_bytes, bytes(log.read(0, 1 << 20))) == before
    log.close()


def test_failed_side_file_write_leaves_the_segment_untouched(tmp_path, rng, monkeypatch):
    """The cut bytes are zeroed only after they are safely in the side file."""
    import rillet.broker.storage.recovery as recovery

    d = tmp_path / "p0"
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    log.append(sized_batch(200, rng), leader_epoch=0)
    log.close()
    segment = d / "00000000000000000000.log"
    with open(segment, "ab") as f:
        f.write(b"torn bytes")
    damaged = segment.read_bytes()

    def no_space(path, data):
        raise StorageError(f"cannot write {path}: No space left on device (ENOSPC)")

    monkeypatch.setattr(recovery, "write_atomic", no_space)
    with pytest.raises(StorageError, match="ENOSPC"):
        PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    assert segment.read_bytes()[:len(damaged)] == damaged
    assert not list(d.glob("*.cut-*"))
    monkeypatch.undo()
    log = PartitionLog.open(d, segment_size=SEG, logger=LOGGER)
    assert log.leo == 1 and log.recovery_report[0].bytes_cut == len(b"torn bytes")
    log.close()
