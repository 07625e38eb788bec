"""The positions table (pure layout), its shm shell, and the futex wake-up."""

from __future__ import annotations

import ctypes
import os
import stat
import struct
import threading
import time
import uuid

import pytest

from rillet.ipc import futex, positions as p
from rillet.ipc.errors import ClusterAlreadyRunning, LayoutVersionMismatch, MetadataTableBusy, MetadataTableError
from rillet.ipc.positions_shm import PositionsReader, PositionsWriter
from rillet.ipc.shm import unlink_if_exists

ROW = p.Positions("orders", 3, 7, p.Role.LEADER, 10, 20, 25, 18, 4096)


def table(rows: int = 4) -> bytearray:
    buf = bytearray(p.size_for(rows))
    p.init_positions(buf, rows, 5001, 4242)
    return buf


def test_layout_sizes_and_offsets_are_pinned():
    assert (p.HEADER_SIZE, p.ROW_SIZE, p.size_for(4)) == (64, 128, 64 + 4 * 128)
    assert p.wake_offset(0) % 4 == 0 and p.row_offset(1) % 8 == 0
    assert p.wake_offset(2) == 64 + 2 * 128 + 8


def test_rows_round_trip_and_are_found_by_topic_and_partition():
    buf = table()
    p.write_row(buf, 2, ROW)
    p.write_row(buf, 0, ROW._replace(partition=4))
    assert p.read_row(buf, 2) == ROW
    assert p.find_row(buf, 4, "orders", 3) == 2
    assert p.find_row(buf, 4, "orders", 4) == 0
    assert p.find_row(buf, 4, "orders", 5) is None
    p.write_row(buf, 2, p.Positions("", 0, -1, p.Role.FREE, -1, -1, -1, -1, -1))     # freed: not found any more
    assert p.find_row(buf, 4, "orders", 3) is None
    assert p.read_header(buf) == (5001, 4242, 4) and p.peek_spu_pid(buf) == 4242


def test_raw_fields_are_what_a_direct_reader_compares_without_decoding():
    buf = table()
    p.write_row(buf, 1, ROW)
    fields = p.read_row_fields(buf, 1)
    assert fields == (3, p.raw_topic("orders"), 7, int(p.Role.LEADER), 10, 20, 25, 18, 4096)
    assert p.raw_topic("orders") != p.raw_topic("orders2") and len(p.raw_topic("x" * 63)) == 64
    assert bytes(buf[p.woken_offset(1):p.woken_offset(1) + 2]) == b"\0\0"
    value = p.bump_wake(buf, 1)
    p.mark_woken(buf, 1, value, True)
    assert struct.unpack_from("<H", buf, p.woken_offset(1))[0] == p.woken_mark(value)
    assert p.woke_all(buf, 1, value)


def test_the_wake_word_moves_on_each_bump_and_wraps():
    buf = table()
    assert p.read_wake(buf, 1) == 0
    assert p.bump_wake(buf, 1) == 1 and p.read_wake(buf, 1) == 1
    struct.pack_into("<I", buf, p.wake_offset(1), 0xFFFFFFFF)
    assert p.bump_wake(buf, 1) == 0
    assert p.read_wake(buf, 0) == 0                     # rows do not share words


def test_a_row_left_mid_write_is_busy_never_half_read():
    buf = table()
    p.write_row(buf, 1, ROW)
    struct.pack_into("<Q", buf, p.row_offset(1), 3)     # odd counter: a writer died inside its write
    with pytest.raises(MetadataTableBusy):
        p.read_row(buf, 1, max_retries=3)


@pytest.mark.parametrize("damage, error", [
    (lambda b: b.__setitem__(slice(0, 8), b"NOTATABL"), "not a rillet positions table"),
    (lambda b: struct.pack_into("<I", b, 8, 9), LayoutVersionMismatch),
    (lambda b: struct.pack_into("<I", b, 28, 100), "row sizes"),
    (lambda b: struct.pack_into("<I", b, 24, 1000), "smaller than its layout"),
])
def test_bad_headers_are_refused_with_a_clear_error(damage, error):
    buf = table()
    damage(buf)
    if isinstance(error, str):
        with pytest.raises(MetadataTableError, match=error):
            p.read_header(buf)
    else:
        with pytest.raises(error):
            p.read_header(buf)


def test_a_bad_row_is_refused_before_anything_is_written():
    buf = table()
    p.write_row(buf, 0, ROW)
    with pytest.raises(Exception):
        p.write_row(buf, 0, ROW._replace(topic="x" * 64))
    assert p.read_row(buf, 0) == ROW


@pytest.fixture
def shm_name():
    name = f"/rillet-test-positions-{uuid.uuid4().hex[:12]}"
    yield name
    unlink_if_exists(name)


def test_writer_and_reader_share_the_table_through_shm(shm_name):
    writer = PositionsWriter.create(shm_name, 5001, os.getpid(), max_rows=8)
    try:
        assert stat.S_IMODE(os.stat("/dev/shm" + shm_name).st_mode) == 0o600
        with pytest.raises(ClusterAlreadyRunning):                  # our own pid is alive
            PositionsWriter.create(shm_name, 5001, os.getpid(), max_rows=8)
        writer.publish(5, ROW)
        reader = PositionsReader.open(shm_name)
        try:
            assert (reader.spu_id, reader.max_rows) == (5001, 8)
            assert reader.find("orders", 3) == 5 and reader.row(5) == ROW
            address, value = reader.wake_word(5)
            assert value == 1
            writer.publish(5, ROW._replace(hw=21))
            assert reader.wake_word(5) == (address, 2) and reader.row(5).hw == 21
        finally:
            reader.close()
    finally:
        writer.close()
    assert not os.path.exists("/dev/shm" + shm_name)                 # close unlinks


def test_a_table_left_by_a_dead_spu_is_replaced(shm_name):
    dead = PositionsWriter.create(shm_name, 5001, 2**31 - 7, max_rows=2)     # no such pid
    dead._map.close()
    dead._map = None                                                  # "SIGKILLed": not unlinked
    writer = PositionsWriter.create(shm_name, 5001, os.getpid(), max_rows=2)
    try:
        assert PositionsReader.open(shm_name).spu_pid == os.getpid()
    finally:
        writer.close()


def test_a_missing_table_is_a_clear_error(shm_name):
    with pytest.raises(MetadataTableError, match="no positions table"):
        PositionsReader.open(shm_name)


needs_futex = pytest.mark.skipif(not futex.AVAILABLE, reason="no futex syscall here")


@needs_futex
def test_futex_wait_times_out_returns_at_once_on_a_changed_word_and_is_woken():
    word = ctypes.c_uint32(5)
    address = ctypes.addressof(word)
    start = time.monotonic()
    assert futex.wait(address, 5, 0.05) is False
    assert time.monotonic() - start >= 0.04
    assert futex.wait(address, 4, 5.0) is True                       # already different: no sleep

    def bump():
        time.sleep(0.05)
        word.value = 6
        futex.wake(address)
    threading.Thread(target=bump).start()
    start = time.monotonic()
    assert futex.wait(address, 5, 5.0) is True
    assert time.monotonic() - start < 2.0


@needs_futex
def test_futex_wait_any_wakes_on_any_word():
    words = (ctypes.c_uint32 * 2)(0, 0)
    base = ctypes.addressof(words)
    assert futex.wait_any([(base, 0), (base + 4, 0)], 0.02) is False

    def bump():
        time.sleep(0.05)
        words[1] = 1
        futex.wake(base + 4)
    threading.Thread(target=bump).start()
    start = time.monotonic()
    assert futex.wait_any([(base, 0), (base + 4, 0)], 5.0) is True
    assert time.monotonic() - start < 2.0
    with pytest.raises(ValueError):
        futex.wait_any([], 1.0)


def test_an_offsets_only_write_moves_the_offsets_under_the_seqlock_and_keeps_the_rest():
    buf = table()
    p.write_row(buf, 2, ROW)
    seq = struct.unpack_from("<Q", buf, p.row_offset(2))[0]
    p.write_offsets(buf, 2, 11, 21, 30, 18, 4196)
    assert p.read_row(buf, 2) == ROW._replace(log_start=11, hw=21, leo=30, active_used=4196)
    assert struct.unpack_from("<Q", buf, p.row_offset(2))[0] == seq + 2        # one whole write: even again
    assert p.read_row(buf, 1) == p.Positions("", 0, 0, p.Role.FREE, 0, 0, 0, 0, 0)   # neighbours untouched


def test_publish_offsets_bumps_the_wake_word_like_a_whole_publish(shm_name):
    writer = PositionsWriter.create(shm_name, 5001, os.getpid(), max_rows=8)
    try:
        writer.publish(5, ROW)
        writer.publish_offsets(5, 10, 22, 26, 18, 4200)
        reader = PositionsReader.open(shm_name)
        try:
            assert reader.row(5) == ROW._replace(hw=22, leo=26, active_used=4200)
            assert reader.wake_word(5)[1] == 2
        finally:
            reader.close()
    finally:
        writer.close()


def test_the_woken_hint_names_one_wake_value_and_a_whole_row_write_clears_it():
    buf = table()
    p.write_row(buf, 1, ROW)
    assert not p.woke_all(buf, 1, 0)                                   # zero: relay
    p.mark_woken(buf, 1, 7, True)
    assert p.woke_all(buf, 1, 7) and not p.woke_all(buf, 1, 6) and not p.woke_all(buf, 1, 8)
    assert p.read_row(buf, 1) == ROW                                   # in the padding: the row reads the same
    p.mark_woken(buf, 1, 8, False)
    assert not p.woke_all(buf, 1, 8)
    p.mark_woken(buf, 1, 9, True)
    p.write_row(buf, 1, ROW._replace(hw=21))
    assert not p.woke_all(buf, 1, 9)
    assert not p.woke_all(buf, 0, 0) and not p.woke_all(buf, 2, 0)     # neighbours untouched


@needs_futex
def test_a_publish_says_whether_its_wake_reached_every_sleeper(shm_name):
    writer = PositionsWriter.create(shm_name, 5001, os.getpid(), max_rows=8)
    reader = PositionsReader.open(shm_name)
    try:
        writer.publish(5, ROW)
        address, value = reader.wake_word(5)
        assert value == 1 and reader.woke_all(5, 1)                    # nobody asleep: all (none) woken
        sleepers = [threading.Thread(target=futex.wait, args=(address, value, 5.0)) for _ in range(futex.RELAY_FANOUT + 1)]
        for t in sleepers:
            t.start()
        time.sleep(0.2)                                                # all of them in FUTEX_WAIT
        writer.publish_offsets(5, 10, 21, 26, 18, 4200)
        assert reader.wake_word(5)[1] == 2 and not reader.woke_all(5, 2)   # one left: readers must relay
        futex.wake(address)                                            # the relay, done here
        for t in sleepers:
            t.join(5)
        assert not any(t.is_alive() for t in sleepers)
    finally:
        reader.close()
        writer.close()
