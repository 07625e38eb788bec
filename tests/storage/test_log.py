"""PartitionLog on real files: append and read across rolls, read limits, errors, reopen."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from rillet.broker.storage import PartitionLog
from rillet.ipc.errors import (
    Closed,
    CorruptBatch,
    InvalidArgument,
    MessageTooLarge,
    OffsetOutOfRange,
    StorageError,
)
from rillet.ipc.records import HEADER_SIZE, BatchBuilder, iter_batches, validate_batch

from .batches import base_of, count_of, epoch_of, make_batch, sized_batch, split, stamped

SEG = 4096


def fill(log: PartitionLog, rng, n: int, *, epoch: int = 0, max_size: int = 900) -> list[bytes]:
    """Append ``n`` random batches (1-4 records each); return them as stored."""
    stored = []
    for _ in range(n):
        batch = sized_batch(rng.randrange(HEADER_SIZE + 1, max_size), rng, record_count=rng.randrange(1, 5))
        base, leo = log.append(batch, leader_epoch=epoch)
        assert leo == base + count_of(batch)
        stored.append(stamped(batch, base, epoch))
    return stored


def read_all(log: PartitionLog) -> list[bytes]:
    out, offset = [], log.log_start_offset
    while offset < log.leo:
        view = log.read(offset, 1 << 30)
        got = split(view)
        view.release()
        out += got
        offset = base_of(got[-1]) + count_of(got[-1])
    return out


def containing(stored: list[bytes], offset: int) -> bytes:
    return next(b for b in stored if base_of(b) <= offset < base_of(b) + count_of(b))


def test_round_trip_across_rolls(open_log, rng):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 60)
    assert log.segment_count > 5
    assert [base_of(b) for b in stored][0] == 0
    for a, b in zip(stored, stored[1:]):
        assert base_of(b) == base_of(a) + count_of(a)
    assert log.leo == base_of(stored[-1]) + count_of(stored[-1])
    assert read_all(log) == stored
    assert log.size_bytes == sum(map(len, stored))
    for offset in range(log.leo):
        view = log.read(offset, 0)
        assert bytes(view) == containing(stored, offset)  # at least one whole batch


def test_segment_files_and_bases(open_log, rng, tmp_path):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 40)
    logs = sorted(p.name for p in (tmp_path / "p0").glob("*.log"))
    assert len(logs) == log.segment_count
    assert all(len(name) == 24 for name in logs)
    bases = [int(name[:20]) for name in logs]
    assert bases[0] == 0 and all(any(base_of(b) == base for b in stored) for base in bases)
    # Sealed segments are trimmed at roll; the active one is preallocated.
    for name in logs[:-1]:
        assert (tmp_path / "p0" / name).stat().st_size <= SEG
    assert (tmp_path / "p0" / logs[-1]).stat().st_size == SEG


def test_max_bytes_cuts_at_whole_batches(open_log, rng):
    log = open_log(segment_size=1 << 20)
    stored = fill(log, rng, 30, max_size=300)
    for offset in range(0, log.leo, 3):
        first = containing(stored, offset)
        i = stored.index(first)
        for max_bytes in (0, 1, len(first) - 1, len(first), len(first) + 1, 1000, 5000):
            got = split(log.read(offset, max_bytes))
            assert got[0] == first
            assert got == stored[i:i + len(got)]
            if len(got) > 1:
                assert sum(map(len, got)) <= max_bytes
            if i + len(got) < len(stored):
                assert sum(map(len, got)) + len(stored[i + len(got)]) > max_bytes or len(got) == 0


def test_batch_larger_than_max_bytes_is_returned_whole(open_log, rng):
    log = open_log()
    big = sized_batch(10_000, rng)
    log.append(big, leader_epoch=0)
    assert bytes(log.read(0, 100)) == stamped(big, 0, 0)


def test_upper_offset_bounds_the_read(open_log, rng):
    log = open_log(segment_size=1 << 20)
    stored = fill(log, rng, 20, max_size=200)
    for upper in range(0, log.leo + 3):
        got = split(log.read(0, 1 << 20, upper))
        assert all(base_of(b) < upper for b in got)
        expected = [b for b in stored if base_of(b) < upper]
        assert got == expected
    assert len(log.read(5, 1 << 20, 5)) == 0
    assert len(log.read(log.leo, 1 << 20)) == 0


def test_offset_out_of_range_names_both_ends(open_log, rng):
    log = open_log()
    fill(log, rng, 3)
    with pytest.raises(OffsetOutOfRange, match=rf"offset {log.leo + 1} .*log start offset 0, log end offset {log.leo}"):
        log.read(log.leo + 1, 100)
    with pytest.raises(OffsetOutOfRange, match=r"offset -1 .*log start offset 0"):
        log.read(-1, 100)
    with pytest.raises(InvalidArgument, match="max_bytes=-1"):
        log.read(0, -1)


def test_message_too_large_names_size_and_limit(open_log):
    log = open_log(segment_size=2048)
    with pytest.raises(MessageTooLarge, match=r"batch of 2049 bytes exceeds segment_size=2048"):
        log.append(make_batch(bytes(2049 - HEADER_SIZE)), leader_epoch=0)
    log.append(make_batch(bytes(2048 - HEADER_SIZE)), leader_epoch=0)  # exactly one segment fits
    log.append(make_batch(bytes(2048 - HEADER_SIZE)), leader_epoch=0)
    assert log.segment_count == 2 and log.leo == 2


def test_append_with_the_callers_validated_header(open_log, rng):
    # The leader's replica validates a batch first and hands its header over: the log does not
    # parse or check it again, but still refuses a batch that no segment holds, and one whose
    # header is not that of the bytes given.
    log = open_log(segment_size=2048)
    good = sized_batch(200, rng)
    assert log.append(good, leader_epoch=0, header=validate_batch(good)) == (0, 1)
    big = make_batch(bytes(2049 - HEADER_SIZE))
    with pytest.raises(MessageTooLarge, match=r"batch of 2049 bytes exceeds segment_size=2048"):
        log.append(big, leader_epoch=0, header=validate_batch(big))
    with pytest.raises(CorruptBatch, match="one batch"):
        log.append(good + b"\x01", leader_epoch=0, header=validate_batch(good))
    assert log.leo == 1 and log.size_bytes == 200
    assert bytes(log.read(0, 1 << 20)) == stamped(good, 0, 0)


def test_append_rejects_bad_batches_and_keeps_state(open_log, rng):
    log = open_log()
    good = sized_batch(200, rng)
    log.append(good, leader_epoch=0)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    for bad, match in ((bytes(bad_crc), "CRC mismatch"), (good[:100], "cut short"),
                       (good + b"\x01", "one batch"), (b"", "needs 61 bytes")):
        with pytest.raises(CorruptBatch, match=match):
            log.append(bad, leader_epoch=0)
    assert log.leo == 1 and log.size_bytes == 200
    log.append(good, leader_epoch=3)
    with pytest.raises(InvalidArgument, match="leader_epoch 2 is older than the log's latest epoch 3"):
        log.append(good, leader_epoch=2)
    with pytest.raises(InvalidArgument, match="leader_epoch -1"):
        log.append(good, leader_epoch=-1)


def test_caller_buffer_is_not_mutated(open_log, rng):
    log = open_log()
    buf = bytearray(sized_batch(300, rng))
    before = bytes(buf)
    for _ in range(3):
        log.append(memoryview(buf), leader_epoch=7)
    assert bytes(buf) == before
    assert [base_of(b) for b in split(log.read(0, 1 << 20))] == [0, 1, 2]
    assert all(epoch_of(b) == 7 for b in split(log.read(0, 1 << 20)))


def test_real_builder_batches_round_trip(open_log):
    log = open_log()
    builder = BatchBuilder()
    for i in range(5):
        builder.append(b"k%d" % i, b"value %d" % i, 1_700_000_000_000 + i)
    batch = builder.build()
    assert log.append(batch, leader_epoch=1) == (0, 5)
    assert log.append(batch, leader_epoch=1) == (5, 10)
    view = log.read(7, 1 << 20)
    header = validate_batch(view)
    assert (header.base_offset, header.leader_epoch, header.record_count) == (5, 1, 5)


def test_append_replicated(open_log, rng):
    leader = open_log("leader", segment_size=SEG)
    fill(leader, rng, 30)
    follower = open_log("follower", segment_size=SEG)
    offset = 0
    while offset < leader.leo:
        chunk = bytes(leader.read(offset, rng.randrange(1, 3000)))
        offset = follower.append_replicated(chunk)
    assert follower.leo == leader.leo
    assert read_all(follower) == read_all(leader)
    assert follower.epochs == leader.epochs == [(0, 0)]


def test_append_replicated_checks_offsets_before_writing(open_log, rng):
    log = open_log()
    a, b = make_batch(b"a", base_offset=0, leader_epoch=1), make_batch(b"b", base_offset=1, leader_epoch=1)
    with pytest.raises(StorageError, match="replica append at offset 1 but leo is 0"):
        log.append_replicated(b)
    with pytest.raises(StorageError, match="base offset 5, expected 1"):
        log.append_replicated(a + make_batch(b"c", base_offset=5, leader_epoch=1))
    with pytest.raises(CorruptBatch, match="cut short"):
        log.append_replicated(a + b[:-1])
    with pytest.raises(CorruptBatch, match="no leader epoch"):
        log.append_replicated(make_batch(b"a"))
    assert log.leo == 0 and log.size_bytes == 0  # nothing half-appended
    assert log.append_replicated(a + b) == 2
    assert log.append_replicated(b"") == 2


def test_reopen_after_clean_close(open_log, rng, tmp_path):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 25)
    leo, count = log.leo, log.segment_count
    log.close()
    for path in (tmp_path / "p0").glob("*.log"):
        assert path.stat().st_size <= SEG  # trimmed to the used length (a segment filled exactly is SEG)
    assert sum(p.stat().st_size for p in (tmp_path / "p0").glob("*.log")) == sum(map(len, stored))
    log = open_log(segment_size=SEG)
    assert (log.leo, log.segment_count, log.recovery_report) == (leo, count, [])
    assert read_all(log) == stored
    more = fill(log, rng, 10)
    assert read_all(log) == stored + more


def test_reopen_after_unclean_stop(open_log, rng, tmp_path, caplog):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 25)
    shutil.copytree(tmp_path / "p0", tmp_path / "copy")  # the files as a SIGKILL leaves them
    active = sorted((tmp_path / "copy").glob("*.log"))[-1]
    assert active.stat().st_size == SEG
    copy = open_log("copy", segment_size=SEG)
    assert copy.leo == log.leo and copy.recovery_report == []
    assert read_all(copy) == stored
    assert "recovery cut" not in caplog.text
    # The original, never closed, is opened again by a second object as after a crash.
    again = PartitionLog.open(tmp_path / "p0", segment_size=SEG)
    assert again.leo == log.leo and read_all(again) == stored
    again.close()


def test_open_validates_sizes(tmp_path):
    for size in (1023, 2**31 + 1):
        with pytest.raises(InvalidArgument, match=f"segment_size={size}"):
            PartitionLog.open(tmp_path / "x", segment_size=size)
    with pytest.raises(InvalidArgument, match="index_interval_bytes=-1"):
        PartitionLog.open(tmp_path / "x", index_interval_bytes=-1)


def test_empty_directory_and_stray_files(open_log, tmp_path):
    d = tmp_path / "p0"
    d.mkdir()
    for name in ("notes.txt", ".00000000000000000000.log.tmp", "00000000000000000000.log.cut-77", "123.log",
                 "00000000000000000099.index"):
        (d / name).write_bytes(b"\x01junk")
    log = open_log()
    assert (log.leo, log.log_start_offset, log.segment_count, log.last_epoch) == (0, 0, 1, -1)
    assert len(log.read(0, 100)) == 0
    assert (d / "123.log").read_bytes() == b"\x01junk"


def test_closed_log_raises_closed(open_log):
    log = open_log()
    log.close()
    log.close()  # idempotent
    for call in (lambda: log.read(0, 1), lambda: log.append(make_batch(), leader_epoch=0), log.flush):
        with pytest.raises(Closed):
            call()


def test_flush_and_reopen(open_log, rng):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 20)
    log.flush()
    log.flush()
    stored += fill(log, rng, 3)
    log.flush()
    log.close()
    assert read_all(open_log(segment_size=SEG)) == stored


def test_enospc_at_roll_leaves_state_unchanged(open_log, rng, tmp_path, monkeypatch):
    log = open_log(segment_size=SEG)
    stored = fill(log, rng, 4, max_size=900)
    files = sorted(p.name for p in (tmp_path / "p0").iterdir())
    leo, size = log.leo, log.size_bytes

    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    big = sized_batch(SEG - 10, rng)
    with pytest.raises(StorageError, match=r"ENOSPC") as info:
        log.append(big, leader_epoch=0)
    assert f"{leo:020d}.log" in str(info.value)
    assert (log.leo, log.size_bytes) == (leo, size)
    assert sorted(p.name for p in (tmp_path / "p0").iterdir()) == files
    assert read_all(log) == stored
    monkeypatch.undo()
    assert log.append(big, leader_epoch=0) == (leo, leo + 1)
    assert read_all(log) == stored + [stamped(big, leo, 0)]


def test_enospc_when_creating_a_log(tmp_path, monkeypatch):
    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with pytest.raises(StorageError, match=r"cannot preallocate 4096 bytes for .*00000000000000000000.log.*ENOSPC"):
        PartitionLog.open(tmp_path / "p0", segment_size=SEG)
    assert not list((tmp_path / "p0").glob("*.log"))


def test_failed_flush_poisons_writes(open_log, rng, monkeypatch):
    log = open_log()
    fill(log, rng, 2)

    def broken_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="EIO"):
        log.flush()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="refuses writes after a failure"):
        log.append(make_batch(), leader_epoch=0)
    assert len(log.read(0, 1 << 20)) > 0  # reads still work
    log.close()


def test_high_watermark_checkpoint(open_log, rng, caplog):
    log = open_log()
    fill(log, rng, 5)
    assert log.read_high_watermark() == 0
    log.write_high_watermark(3)
    assert log.read_high_watermark() == 3
    log.write_high_watermark(10**6)
    assert log.read_high_watermark() == log.leo
    assert "past the log end offset" in caplog.text


def test_iter_batches_sees_the_stamped_bytes(open_log, rng):
    log = open_log()
    fill(log, rng, 5, epoch=2)
    headers = [h for _, h in iter_batches(log.read(0, 1 << 20))]
    assert [h.leader_epoch for h in headers] == [2] * 5
    assert headers[0].base_offset == 0 and headers[-1].next_offset == log.leo


def test_batches_written_through_the_file_and_through_the_map_read_back_alike(open_log, rng):
    """Batches of PWRITE_MIN_BYTES and more go in with pwrite, smaller ones as stores into the
    map: both must read back byte for byte, through the map and from a reopened log."""
    from rillet.broker.storage.segment import PWRITE_MIN_BYTES
    log = open_log(segment_size=1 << 20)
    sizes = [PWRITE_MIN_BYTES - 1, PWRITE_MIN_BYTES, 200, 3 * PWRITE_MIN_BYTES + 7, 100, 65536 + 90]
    stored = []
    for size in sizes:
        batch = sized_batch(size, rng, record_count=rng.randrange(1, 4))
        base, _leo = log.append(batch, leader_epoch=2)
        stored.append(stamped(batch, base, 2))
    assert read_all(log) == stored
    log.close()
    reopened = open_log()
    assert reopened.recovery_report == [] and read_all(reopened) == stored
