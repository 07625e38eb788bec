"""The positions table: where an SPU publishes the offsets direct readers are bounded by.

Each SPU owns one POSIX shared-memory object (``names.ClusterPaths.positions_shm_name``)
and is its only writer; consumers on the host map it read-only (``shm.py`` is the shell).
The SC's metadata table says *who* leads a partition; this table says *how far* the
leader's log goes, so a consumer can read the leader's segment files itself
(client/_direct.py) and never hands out a byte the leader has not published.
This module is pure: it reads and writes a buffer.

Header, 64 bytes (``HEADER``)::

    pos size field            meaning
      0   8  magic            MAGIC, b"RILLETPS"; written last by init_positions
      8   4  layout_version   LAYOUT_VERSION (1); readers refuse any other
     12   4  header_size      64; rows start here
     16   4  spu_id           i32, the writing SPU
     20   4  spu_pid          pid of the writing SPU (tells a live object from a stale one)
     24   4  max_rows         row capacity
     28   4  row_size         128; checked by readers
     32  32  reserved         zero

Row, 128 bytes (``ROW``), at 64 + i * 128, one per replica the SPU holds::

    pos size field            meaning
      0   8  seq              this row's seqlock counter (seqlock.py): even idle, odd mid-write
      8   4  wake             futex word: +1 after every publish of this row (written
                              outside the seqlock; readers FUTEX_WAIT on it)
     12   4  partition        i32
     16  64  topic            ASCII, NUL-padded; all zero: a free row
     80   4  leader_epoch     i32, the epoch of the SPU's spec for this replica
     84   1  role             Role: FREE, LEADER, FOLLOWER
     85   1  padding          zero
     86   2  woken            u16 hint, written after each publish's FUTEX_WAKE (outside the
                              seqlock): 0x8000 | (wake & 0x7FFF) when that wake found fewer
                              sleepers than it may wake, so it woke them all and a reader that
                              sees the word at that value need not relay it (futex.py); 0 else.
                              Zero (a whole-row write, an older SPU) only means: relay
     88   8  log_start        i64 first offset still in the log
     96   8  hw               i64 high watermark
    104   8  leo              i64 log end offset
    112   8  active_base      i64 base offset of the active segment (changes at roll)
    120   8  active_used      i64 bytes of batches in the active segment: readers never read
                              past it (reading a preallocated file's unwritten tail would fill
                              the page cache with zero pages the writer then has to take over)

Publication order (single writer, the SPU's event loop): the records are in the
segment's page cache before the row says so; the row's fields change under its
seqlock; then ``wake`` moves and waiters are woken (futex.py). A reader that copies
a row inside one quiet period of its seqlock sees one publish, whole. The x86-64
argument of seqlock.py applies unchanged.
"""

from __future__ import annotations

import struct
import time
from enum import IntEnum
from typing import NamedTuple

from .errors import InvalidArgument, LayoutVersionMismatch, MetadataTableBusy, MetadataTableError
from .metadata_table import MAX_TOPIC_LEN, _record

LAYOUT_VERSION = 1
MAGIC = b"RILLETPS"
MAX_ROWS_LIMIT = 1 << 16
# One row per partition the metadata table can hold (TableLayout.max_partitions), so an SPU
# never runs out of rows (a replica without a row would be readable over the socket only):
# 512 KiB of /dev/shm per SPU.
DEFAULT_MAX_ROWS = 4096

HEADER, HEADER_OFFSETS = _record((
    ("magic", "8s"), ("layout_version", "I"), ("header_size", "I"), ("spu_id", "i"), ("spu_pid", "I"),
    ("max_rows", "I"), ("row_size", "I"), ("reserved", "32x"),
))
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64, HEADER_SIZE
SPU_PID_OFFSET = HEADER_OFFSETS["spu_pid"]
assert SPU_PID_OFFSET == 20, HEADER_OFFSETS

ROW, ROW_OFFSETS = _record((
    ("seq", "Q"), ("wake", "I"), ("partition", "i"), ("topic", "64s"), ("leader_epoch", "i"), ("role", "B"),
    ("padding", "3x"), ("log_start", "q"), ("hw", "q"), ("leo", "q"), ("active_base", "q"), ("active_used", "q"),
))
ROW_SIZE = ROW.size
assert ROW_SIZE == 128, ROW_SIZE
assert ROW_OFFSETS["wake"] == 8 and ROW_OFFSETS["partition"] == 12 and ROW_OFFSETS["log_start"] == 88, ROW_OFFSETS
WAKE_OFFSET = ROW_OFFSETS["wake"]
# The row body under the seqlock: everything after seq and wake.
BODY, _ = _record((
    ("partition", "i"), ("topic", "64s"), ("leader_epoch", "i"), ("role", "B"), ("padding", "3x"),
    ("log_start", "q"), ("hw", "q"), ("leo", "q"), ("active_base", "q"), ("active_used", "q"),
))
BODY_OFFSET = ROW_OFFSETS["partition"]
assert BODY.size == ROW_SIZE - BODY_OFFSET, BODY.size
_WAKE = struct.Struct("<I")
_SEQ = struct.Struct("<Q")
_U32_MASK = 0xFFFFFFFF
_U64_MASK = (1 << 64) - 1


class Role(IntEnum):
    FREE = 0
    LEADER = 1
    FOLLOWER = 2


class Positions(NamedTuple):
    """One row as published: a consistent copy."""

    topic: str
    partition: int
    leader_epoch: int
    role: Role
    log_start: int
    hw: int
    leo: int
    active_base: int
    active_used: int


def size_for(max_rows: int) -> int:
    if not isinstance(max_rows, int) or not 1 <= max_rows <= MAX_ROWS_LIMIT:
        raise InvalidArgument(f"max_rows={max_rows!r} must be an int from 1 to {MAX_ROWS_LIMIT}")
    return HEADER_SIZE + max_rows * ROW_SIZE


def row_offset(index: int) -> int:
    return HEADER_SIZE + index * ROW_SIZE


def wake_offset(index: int) -> int:
    """Where row ``index``'s futex word sits (4-byte aligned, as futexes need)."""
    return row_offset(index) + WAKE_OFFSET


def init_positions(buf, max_rows: int, spu_id: int, spu_pid: int) -> None:
    """Format a zeroed buffer of ``size_for(max_rows)`` bytes; the magic goes in last."""
    size = size_for(max_rows)
    if len(buf) < size:
        raise InvalidArgument(f"positions buffer of {len(buf)} bytes is smaller than {size}")
    HEADER.pack_into(buf, 0, b"\0" * len(MAGIC), LAYOUT_VERSION, HEADER_SIZE, spu_id, spu_pid, max_rows, ROW_SIZE)
    buf[0:len(MAGIC)] = MAGIC


def peek_spu_pid(buf) -> int | None:
    """The writer's pid, or None if ``buf`` is not an initialised positions table."""
    if len(buf) < HEADER_SIZE or bytes(buf[0:len(MAGIC)]) != MAGIC:
        return None
    return struct.unpack_from("<I", buf, SPU_PID_OFFSET)[0]


def read_header(buf) -> tuple[int, int, int]:
    """Check the header; returns ``(spu_id, spu_pid, max_rows)``.

    Raises MetadataTableError (not a positions table, or too small) or LayoutVersionMismatch.
    """
    if len(buf) < HEADER_SIZE:
        raise MetadataTableError(f"positions table of {len(buf)} bytes is smaller than its {HEADER_SIZE}-byte header")
    magic, version, header_size, spu_id, spu_pid, max_rows, row_size = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise MetadataTableError(f"not a rillet positions table: magic {magic!r}, expected {MAGIC!r}")
    if version != LAYOUT_VERSION:
        raise LayoutVersionMismatch(
            f"positions table has layout version {version}, this rillet reads {LAYOUT_VERSION}: "
            "run clients and cluster from the same rillet release")
    if (header_size, row_size) != (HEADER_SIZE, ROW_SIZE):
        raise MetadataTableError(f"positions table header and row sizes are {(header_size, row_size)}, "
                                 f"expected {(HEADER_SIZE, ROW_SIZE)}")
    try:
        size = size_for(max_rows)
    except InvalidArgument as exc:
        raise MetadataTableError(f"positions table header is corrupt: {exc}") from exc
    if len(buf) < size:
        raise MetadataTableError(f"positions table of {len(buf)} bytes is smaller than its layout's {size}")
    return spu_id, spu_pid, max_rows


def write_row(buf, index: int, row: Positions) -> None:
    """Publish ``row`` at ``index`` under its seqlock (writer only). Checked before anything
    is written, so a bad row raises InvalidArgument and leaves the table as it was."""
    topic = row.topic.encode("ascii") if row.role != Role.FREE else b""
    if len(topic) > MAX_TOPIC_LEN:
        raise InvalidArgument(f"topic name of {len(topic)} bytes exceeds {MAX_TOPIC_LEN}")
    body = BODY.pack(row.partition, topic, row.leader_epoch, row.role, row.log_start, row.hw, row.leo,
                     row.active_base, row.active_used)
    # SeqLock.write's protocol, inlined: this runs on every append of a leader.
    at = row_offset(index)
    seq = _SEQ.unpack_from(buf, at)[0]
    if not seq & 1:
        seq += 1
        _SEQ.pack_into(buf, at, seq)
    buf[at + BODY_OFFSET:at + ROW_SIZE] = body
    _SEQ.pack_into(buf, at, (seq + 1) & _U64_MASK)


# The offsets at the end of a row, the only fields a leader's appends change.
_OFFSETS = struct.Struct("<5q")
_OFFSETS_AT = ROW_OFFSETS["log_start"]
assert _OFFSETS_AT + _OFFSETS.size == ROW_SIZE


def write_offsets(buf, index: int, log_start: int, hw: int, leo: int, active_base: int, active_used: int) -> None:
    """Publish new offsets in row ``index``, whose other fields (topic, partition, epoch,
    role) ``write_row`` wrote before and stay as they are: the leader's path on every
    append, 40 bytes under the seqlock instead of the whole row."""
    at = HEADER_SIZE + index * ROW_SIZE
    seq = _SEQ.unpack_from(buf, at)[0]
    if not seq & 1:
        seq += 1
        _SEQ.pack_into(buf, at, seq)
    _OFFSETS.pack_into(buf, at + _OFFSETS_AT, log_start, hw, leo, active_base, active_used)
    _SEQ.pack_into(buf, at, (seq + 1) & _U64_MASK)


def bump_wake(buf, index: int) -> int:
    """Move row ``index``'s futex word on (after a publish); returns its new value."""
    return bump_wake_at(buf, row_offset(index))


def bump_wake_at(buf, at: int) -> int:
    """:func:`bump_wake` of the row at byte offset ``at`` (``row_offset(index)``)."""
    at += WAKE_OFFSET
    value = (_WAKE.unpack_from(buf, at)[0] + 1) & _U32_MASK
    _WAKE.pack_into(buf, at, value)
    return value


_WOKEN = struct.Struct("<H")
WOKEN_OFFSET = ROW_OFFSETS["role"] + 2        # in the row's padding, which readers' unpacks skip
assert WOKEN_OFFSET == 86 and WOKEN_OFFSET + 2 == ROW_OFFSETS["log_start"]
_WOKEN_FLAG = 0x8000


def woken_mark(value: int) -> int:
    """The ``woken`` hint a publish leaves when its wake, moving the word to ``value``, woke
    every sleeper."""
    return _WOKEN_FLAG | (value & 0x7FFF)


def mark_woken(buf, index: int, value: int, woke_all: bool) -> None:
    """After the FUTEX_WAKE of the publish that moved row ``index``'s word to ``value``:
    record whether it woke every sleeper (see the layout's ``woken``)."""
    mark_woken_at(buf, row_offset(index), value, woke_all)


def mark_woken_at(buf, at: int, value: int, woke_all: bool) -> None:
    """:func:`mark_woken` of the row at byte offset ``at``."""
    _WOKEN.pack_into(buf, at + WOKEN_OFFSET, (_WOKEN_FLAG | (value & 0x7FFF)) if woke_all else 0)


def woke_all(buf, index: int, value: int) -> bool:
    """True when the publish that moved row ``index``'s word to ``value`` woke every sleeper."""
    return _WOKEN.unpack_from(buf, HEADER_SIZE + index * ROW_SIZE + WOKEN_OFFSET)[0] == woken_mark(value)


def read_wake(buf, index: int) -> int:
    return _WAKE.unpack_from(buf, wake_offset(index))[0]


_ROLES = tuple(Role)


_TOPICS: dict[bytes, str] = {}         # raw topic field -> name: a reader decodes each name once
_new_positions = Positions._make


def _decode(fields: tuple) -> Positions:
    partition, topic, epoch, role, log_start, hw, leo, active_base, active_used = fields
    if role >= len(_ROLES):
        raise MetadataTableError(f"positions row has unknown role {role}")
    name = _TOPICS.get(topic)
    if name is None:
        try:
            name = topic.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError as exc:
            raise MetadataTableError(f"positions row has a topic that is not ASCII: {topic!r}") from exc
        if len(_TOPICS) < 4096:         # bounded: one entry per topic name seen
            _TOPICS[topic] = name
    # _make: a plain tuple build, without the keyword handling of Positions(...) (this runs
    # three times per record a direct reader takes).
    return _new_positions((name, partition, epoch, _ROLES[role], log_start, hw, leo, active_base, active_used))


def read_row(buf, index: int, *, max_retries: int = 64) -> Positions:
    """A consistent copy of row ``index``. MetadataTableBusy if the row stays mid-write (a
    writer that died inside its write)."""
    return _decode(read_row_fields(buf, index, max_retries=max_retries))


def read_row_fields(buf, index: int, *, max_retries: int = 64) -> tuple:
    """Row ``index``'s body as raw fields, a consistent copy (SeqLock.read's protocol,
    inlined): ``(partition, topic bytes NUL-padded to 64, leader_epoch, role as int,
    log_start, hw, leo, active_base, active_used)``. A direct reader reads a row twice per
    read and compares these with what it expects, without building a Positions."""
    at = row_offset(index)
    body_at = at + BODY_OFFSET
    unpack_seq, unpack_body = _SEQ.unpack_from, BODY.unpack_from
    for attempt in range(max_retries):
        before = unpack_seq(buf, at)[0]
        if not before & 1:
            fields = unpack_body(buf, body_at)
            if unpack_seq(buf, at)[0] == before:
                return fields
        time.sleep(0 if attempt < 16 else 0.001)
    raise MetadataTableBusy(f"positions row {index} stayed mid-update after {max_retries} reads; is its SPU alive?")


def raw_topic(topic: str) -> bytes:
    """``topic`` as a row's topic field holds it (for comparing with read_row_fields)."""
    return topic.encode("ascii").ljust(MAX_TOPIC_LEN + 1, b"\0")


def woken_offset(index: int) -> int:
    """Byte offset of row ``index``'s ``woken`` hint (see woke_all)."""
    return HEADER_SIZE + index * ROW_SIZE + WOKEN_OFFSET


def used_rows(buf, max_rows: int) -> list[Positions]:
    """Every row in use (role not FREE), each a consistent copy; for observers that want the
    whole table at once (the SC's metrics and consumer lag). A free row's topic is all zero."""
    topic_at = ROW_OFFSETS["topic"]
    out = []
    for index in range(max_rows):
        if buf[row_offset(index) + topic_at]:
            row = read_row(buf, index)
            if row.role != Role.FREE:
                out.append(row)
    return out


def find_row(buf, max_rows: int, topic: str, partition: int) -> int | None:
    """The index of the row of ``topic``/``partition`` (any role but FREE), or None."""
    key = struct.pack("<i64s", partition, topic.encode("ascii"))
    for index in range(max_rows):
        at = row_offset(index) + BODY_OFFSET
        if bytes(buf[at:at + len(key)]) == key:        # cheap unlocked scan, then a locked check
            row = read_row(buf, index)
            if row.role != Role.FREE and row.topic == topic and row.partition == partition:
                return index
    return None


# The row's words as a reader that keeps their offsets unpacks them itself (client/_direct.py's
# hot path): the formats stay here, with the layout.
unpack_seq = _SEQ.unpack_from
unpack_wake = _WAKE.unpack_from
unpack_woken = _WOKEN.unpack_from
unpack_body = BODY.unpack_from
