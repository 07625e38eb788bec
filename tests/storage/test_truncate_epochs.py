"""truncate_to, the leader-epoch cache and the checkpoint files."""

from __future__ import annotations

import logging
import shutil
import struct

import pytest

from rillet.broker.storage import LeaderEpochCache, PartitionLog, read_checkpoint, write_atomic, write_checkpoint
from rillet.ipc.errors import InvalidArgument
from rillet.ipc.records import HEADER_SIZE

from .batches import base_of, count_of, sized_batch, split, stamped
from .conftest import LOGGER

SEG = 2048


def reopen(tmp_path, name="p0") -> PartitionLog:
    return PartitionLog.open(tmp_path / name, segment_size=SEG, index_interval_bytes=200, logger=LOGGER)


def fill_epochs(log: PartitionLog, rng, epochs: list[int]) -> list[bytes]:
    stored = []
    for epoch in epochs:
        batch = sized_batch(rng.randrange(HEADER_SIZE + 1, 500), rng, record_count=rng.randrange(1, 4))
        base, _ = log.append(batch, leader_epoch=epoch)
        stored.append(stamped(batch, base, epoch))
    return stored


def all_batches(log: PartitionLog) -> list[bytes]:
    out, offset = [], log.log_start_offset
    while offset < log.leo:
        got = split(log.read(offset, 1 << 30))
        out += got
        offset = base_of(got[-1]) + count_of(got[-1])
    return out


def epochs_of(stored: list[bytes]) -> list[tuple[int, int]]:
    out = []
    for b in stored:
        epoch = struct.unpack_from("<i", b, 12)[0]
        if not out or epoch > out[-1][0]:
            out.append((epoch, base_of(b)))
    return out


# --- truncate_to -------------------------------------------------------------------------


def test_truncate_to_every_batch_boundary(tmp_path, rng):
    log = reopen(tmp_path)
    stored = fill_epochs(log, rng, [0] * 6 + [1] * 6 + [4] * 6 + [5] * 6)
    log.close()
    shutil.copytree(tmp_path / "p0", tmp_path / "pristine")
    for keep in reversed(range(len(stored) + 1)):
        shutil.rmtree(tmp_path / "p0")
        shutil.copytree(tmp_path / "pristine", tmp_path / "p0")
        log = reopen(tmp_path)
        offset = base_of(stored[keep]) if keep < len(stored) else log.leo
        log.truncate_to(offset)
        assert log.leo == offset
        assert all_batches(log) == stored[:keep]
        assert log.epochs == epochs_of(stored[:keep])
        assert log.segment_count == len({p for p in (tmp_path / "p0").glob("*.log")})
        again = fill_epochs(log, rng, [6, 6])
        assert base_of(again[0]) == offset
        log.close()
        log = reopen(tmp_path)
        assert log.recovery_report == []
        assert all_batches(log) == stored[:keep] + again
        assert log.epochs == epochs_of(stored[:keep] + again)
        log.close()


def test_truncated_batches_do_not_come_back_after_a_crash(tmp_path, rng):
    log = reopen(tmp_path)
    stored = fill_epochs(log, rng, [0] * 20)
    cut = stored[-3]
    log.truncate_to(base_of(cut))
    shutil.copytree(tmp_path / "p0", tmp_path / "crashed")  # no close: as a SIGKILL leaves it
    crashed = reopen(tmp_path, "crashed")
    assert crashed.leo == base_of(cut) and crashed.recovery_report == []
    assert all_batches(crashed) == stored[:-3]
    crashed.close()
    log.close()


def test_truncate_to_rejects_bad_offsets(tmp_path, rng):
    log = reopen(tmp_path)
    stored = fill_epochs(log, rng, [0] * 5)
    inside = next(b for b in stored if count_of(b) > 1)
    with pytest.raises(InvalidArgument, match=rf"offset {base_of(inside) + 1}: it is inside the batch starting at "
                                              rf"{base_of(inside)}"):
        log.truncate_to(base_of(inside) + 1)
    with pytest.raises(InvalidArgument, match=rf"offset {log.leo + 1}: the log holds offsets \[0, {log.leo}\)"):
        log.truncate_to(log.leo + 1)
    with pytest.raises(InvalidArgument, match=r"offset -1"):
        log.truncate_to(-1)
    leo = log.leo
    log.truncate_to(leo)  # no-op
    assert all_batches(log) == stored and log.leo == leo
    log.close()


def test_truncate_removes_later_segment_files(tmp_path, rng):
    log = reopen(tmp_path)
    stored = fill_epochs(log, rng, [0] * 30)
    names = sorted(p.name for p in (tmp_path / "p0").glob("*.log"))
    assert len(names) > 3
    second_base = int(names[1][:20])
    log.truncate_to(second_base)
    assert sorted(p.name for p in (tmp_path / "p0").glob("*.log")) == names[:2]
    assert sorted(p.name for p in (tmp_path / "p0").glob("*.index")) == [n[:20] + ".index" for n in names[:2]]
    assert log.segment_count == 2 and log.leo == second_base
    assert all_batches(log) == [b for b in stored if base_of(b) < second_base]
    log.truncate_to(0)
    assert (log.leo, log.segment_count, log.size_bytes, log.epochs) == (0, 1, 0, [])
    log.close()


# --- the epoch cache through the log --------------------------------------------------------


def test_epoch_end_offsets(tmp_path, rng):
    log = reopen(tmp_path)
    assert (log.last_epoch, log.epoch_end_offset(0)) == (-1, -1)
    stored = fill_epochs(log, rng, [1, 1, 3, 3, 3, 7])
    starts = {e: s for e, s in epochs_of(stored)}
    assert log.epochs == [(1, 0), (3, starts[3]), (7, starts[7])]
    assert log.last_epoch == 7
    table = {0: 0, 1: starts[3], 2: starts[3], 3: starts[7], 5: starts[7], 6: starts[7], 7: log.leo, 8: -1, -1: -1}
    assert {e: log.epoch_end_offset(e) for e in table} == table
    log.close()
    log = reopen(tmp_path)
    assert {e: log.epoch_end_offset(e) for e in table} == table
    log.close()


def test_epoch_cache_follows_a_follower(tmp_path, rng):
    leader = reopen(tmp_path, "leader")
    fill_epochs(leader, rng, [2, 2, 5, 5, 9])
    follower = reopen(tmp_path, "follower")
    follower.append_replicated(bytes(leader.read(0, 1 << 20)))
    assert follower.epochs == leader.epochs
    leader.close()
    follower.close()


@pytest.mark.parametrize("damage", ["missing", "garbage", "bad crc", "empty"])
def test_lost_epoch_cache_is_rebuilt_from_headers(tmp_path, rng, caplog, damage):
    log = reopen(tmp_path)
    stored = fill_epochs(log, rng, [0] * 8 + [2] * 8 + [3] * 8)
    want = log.epochs
    log.close()
    path = tmp_path / "p0" / "leader-epoch.chk"
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not an epoch file")
    elif damage == "bad crc":
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")
    log = reopen(tmp_path)
    assert log.epochs == want == epochs_of(stored)
    assert "rebuilt from the batch headers" in caplog.text
    log.close()
    assert LeaderEpochCache(path).entries == want


def test_epochs_past_the_recovered_end_are_dropped(tmp_path, rng):
    log = reopen(tmp_path)
    fill_epochs(log, rng, [0, 0, 1])
    leo = log.leo
    log.close()
    cache = LeaderEpochCache(tmp_path / "p0" / "leader-epoch.chk")
    cache.assign(4, leo)  # persisted by an append that never reached the segment
    assert cache.latest_epoch == 4
    log = reopen(tmp_path)
    assert log.last_epoch == 1 and log.epochs[-1][0] == 1
    log.close()


# --- LeaderEpochCache and checkpoint files on their own ---------------------------------------


def test_leader_epoch_cache_unit(tmp_path):
    path = tmp_path / "leader-epoch.chk"
    cache = LeaderEpochCache(path)
    assert (cache.loaded, cache.latest_epoch, cache.end_offset_for(0, 10)) == (False, -1, -1)
    assert cache.assign(1, 0) and cache.assign(3, 10)
    assert not cache.assign(3, 20) and not cache.assign(2, 30)  # not newer: ignored
    assert cache.assign(5, 10)  # same start as epoch 3: epoch 3 never appended anything
    assert cache.entries == [(1, 0), (5, 10)]
    assert cache.assign(6, 40)
    assert [cache.end_offset_for(e, 99) for e in (0, 1, 2, 5, 6, 7)] == [0, 10, 10, 40, 99, -1]
    assert LeaderEpochCache(path).entries == cache.entries
    assert cache.truncate_from(41) is False
    assert cache.truncate_from(40) and cache.entries == [(1, 0), (5, 10)]
    assert cache.truncate_from(0) and cache.entries == []
    reloaded = LeaderEpochCache(path)
    assert (reloaded.loaded, reloaded.entries) == (True, [])
    with pytest.raises(InvalidArgument):
        cache.assign(-1, 0)


def test_checkpoint_round_trip_and_damage(tmp_path, caplog):
    path = tmp_path / "replication.chk"
    assert read_checkpoint(path, 7) == 7
    assert caplog.text == ""
    write_checkpoint(path, 123456789)
    assert read_checkpoint(path, 0) == 123456789
    assert len(path.read_bytes()) == 20
    data = path.read_bytes()
    caplog.set_level(logging.WARNING)
    for bad in (data[:-1], data + b"\0", b"XXXX" + data[4:], data[:10] + bytes([data[10] ^ 1]) + data[11:], b""):
        path.write_bytes(bad)
        caplog.clear()
        assert read_checkpoint(path, 42) == 42
        assert "is damaged" in caplog.text
    with pytest.raises(InvalidArgument):
        write_checkpoint(path, -1)


def test_write_atomic_leaves_no_temp_files(tmp_path):
    path = tmp_path / "f.chk"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.chk"]
