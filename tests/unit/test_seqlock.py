"""SeqLock: a writer process and a reader process over one shared mmap, and the busy bound."""

from __future__ import annotations

import mmap
import os
import struct
import time

import pytest

from rillet.ipc.errors import InvalidArgument, MetadataTableBusy
from rillet.ipc.seqlock import SeqLock

SEQ_AT = 0
ROW_AT = 8
FIELDS = 64                                  # a long row: many separate stores per write
_FIELD = struct.Struct("<Q")
_ROW = struct.Struct(f"<{FIELDS}Q")
STOP_AT = ROW_AT + _ROW.size                 # one byte the reader sets to stop the writer
BUF_SIZE = STOP_AT + 8
RUN_S = 1.0
MAX_RUN_S = 20.0       # on a loaded machine the writer may get little CPU: read on until enough writes


def _write_rows_forever(buf: mmap.mmap, deadline: float) -> None:
    """Child: write rows whose fields all equal a counter, field by field, until the deadline."""
    lock = SeqLock(buf, SEQ_AT)
    value = 0
    while time.monotonic() < deadline and not buf[STOP_AT]:
        value += 1
        with lock.write():
            for i in range(FIELDS):
                _FIELD.pack_into(buf, ROW_AT + 8 * i, value)
        time.sleep(0.0001)                   # a quiet period, as between SC writes (a writer that
                                             # never pauses can starve readers: seqlocks assume rare writes)


def _fork_writer(buf: mmap.mmap, deadline: float) -> int:
    pid = os.fork()
    if pid == 0:                             # child: never return into pytest
        code = 0
        try:
            _write_rows_forever(buf, deadline)
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _join(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_reader_process_never_sees_a_torn_row():
    buf = mmap.mmap(-1, BUF_SIZE)  # anonymous MAP_SHARED: shared with the forked child
    lock = SeqLock(buf, SEQ_AT)
    pid = _fork_writer(buf, time.monotonic() + MAX_RUN_S)
    reads, copies, values = 0, 0, set()

    def copy():
        nonlocal copies
        copies += 1
        return _ROW.unpack_from(buf, ROW_AT)

    try:
        start = time.monotonic()
        # At least RUN_S, and on until the writer has been seen to make progress (a loaded
        # machine may give it little CPU), at most MAX_RUN_S; then the writer is told to stop.
        while time.monotonic() - start < RUN_S or (len(values) <= 10 and time.monotonic() - start < MAX_RUN_S):
            row = lock.read(copy)
            assert len(set(row)) == 1, f"torn row: {sorted(set(row))[:5]}"
            reads += 1
            values.add(row[0])
    finally:
        buf[STOP_AT] = 1
        _join(pid)
    assert lock.sequence % 2 == 0
    assert reads > 100 and len(values) > 10, (reads, len(values))
    if len(os.sched_getaffinity(0)) >= 2:
        assert copies > reads, "no copy overlapped a write: the test proved nothing"


def test_reading_without_the_lock_does_tear():
    # The control for the test above: the same writer, read with no seqlock.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to overlap reader and writer reliably")
    buf = mmap.mmap(-1, BUF_SIZE)
    pid = _fork_writer(buf, time.monotonic() + RUN_S)
    torn = 0
    try:
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline and not torn:
            torn += len(set(_ROW.unpack_from(buf, ROW_AT))) > 1
    finally:
        _join(pid)
    assert torn


def test_odd_counter_makes_readers_give_up_after_the_bound():
    buf = bytearray(16)
    _FIELD.pack_into(buf, 8, 7)                  # a writer died mid-update
    lock = SeqLock(buf, 8)
    calls = []
    started = time.monotonic()
    with pytest.raises(MetadataTableBusy) as info:
        lock.read(lambda: calls.append(1), max_retries=5)
    assert str(info.value) == "metadata table stayed mid-update after 5 reads; is the SC alive?"
    assert info.value.retriable
    assert calls == []                           # never copies while the counter is odd
    assert time.monotonic() - started < 1.0


def test_writer_makes_the_counter_odd_then_even():
    buf = bytearray(8)
    lock = SeqLock(buf, 0)
    with lock.write():
        assert lock.sequence == 1
    assert lock.sequence == 2
    assert lock.read(lambda: "copied") == "copied"


def test_writer_that_raises_leaves_the_counter_odd_and_the_next_write_recovers():
    buf = bytearray(8)
    lock = SeqLock(buf, 0)
    with pytest.raises(RuntimeError):
        with lock.write():
            raise RuntimeError("half written")
    assert lock.sequence == 1
    with pytest.raises(MetadataTableBusy):
        lock.read(lambda: None, max_retries=2)
    with lock.write():
        assert lock.sequence == 1
    assert lock.sequence == 2


def test_copy_that_fails_on_torn_data_is_retried():
    buf = bytearray(8)
    lock = SeqLock(buf, 0)
    attempts = []

    def copy():
        attempts.append(1)
        if len(attempts) == 1:
            _FIELD.pack_into(buf, 0, 2)          # a write happened meanwhile ...
            raise ValueError("garbage")          # ... and the copy choked on it
        return "ok"

    assert lock.read(copy) == "ok"
    assert len(attempts) == 2


def test_copy_that_fails_on_stable_data_raises():
    lock = SeqLock(bytearray(8), 0)
    with pytest.raises(ZeroDivisionError):
        lock.read(lambda: 1 / 0)


def test_offset_checks():
    with pytest.raises(InvalidArgument, match="multiple of 8"):
        SeqLock(bytearray(16), 4)
    with pytest.raises(InvalidArgument, match="needs 16 bytes, buffer has 12"):
        SeqLock(bytearray(12), 8)
    with pytest.raises(InvalidArgument, match="max_retries"):
        SeqLock(bytearray(8), 0).read(lambda: None, max_retries=0)
