"""The metadata table: where clients find partition leaders without asking the SC.

The SC is the table's only writer; every client maps it read-only. The table is
a fixed header, ``max_spus`` SPU rows, then ``max_partitions`` partition rows,
all little-endian, in one buffer (a POSIX shared-memory object; see ``shm.py``,
the shell that maps it). This module is pure: it reads and writes a buffer.

Header, 64 bytes (``HEADER``)::

    pos size field               meaning
      0   8  magic               MAGIC, b"RILLETMT"; init_table writes it last, so
                                 zeros mean "being initialised"
      8   4  layout_version      LAYOUT_VERSION (2); readers refuse any other
     12   4  header_size         64; rows start here
     16   8  seq                 seqlock counter (seqlock.py): even idle, odd mid-write
     24   8  generation          0 after init_table, +1 per write_snapshot
     32   4  sc_pid              pid of the writing SC (tells a live table from a stale one)
     36   4  max_spus            SPU row capacity
     40   4  max_partitions      partition row capacity
     44   4  spu_count           SPU rows in use, the first spu_count rows
     48   4  partition_count     partition rows in use, the first partition_count rows
     52   4  spu_row_size        16; checked by readers
     56   4  partition_row_size  144; checked by readers
     60   4  reserved            zero

magic, layout_version and sc_pid keep these positions in every layout version,
so any rillet can tell whose table it is looking at.

SPU row, 16 bytes (``SPU_ROW``), at 64 + i * 16::

    pos size field    meaning
      0   4  spu_id   i32
      4   4  pid      i32, 0 when the SPU has no process
      8   1  status   SpuStatus
      9   7  padding  zero

Partition row, 144 bytes (``PARTITION_ROW``), at 64 + max_spus * 16 + i * 144::

    pos size field          meaning
      0  64  topic          ASCII, NUL-padded (at most 63 characters, so NUL-terminated)
     64   4  partition      i32, >= 0
     68   4  leader         i32 SPU id, -1 for none
     72   4  leader_epoch   i32, as in the record batch header
     76   1  status         PartitionStatus
     77   1  replica_count  entries used in ``replicas`` (<= MAX_REPLICAS)
     78   1  in_sync_count  entries used in ``in_sync`` (<= MAX_REPLICAS)
     79   1  padding        zero
     80  32  replicas       8 x i32 SPU ids, the assignment order (first = preferred leader)
    112  32  in_sync        8 x i32 SPU ids of the in-sync replicas

Layout 1 also had ``hw`` and ``leo`` columns, always -1. Offsets are published by the
process that owns them, each leader SPU in its own positions table (positions.py), not
here: the SC would have to rewrite this table, and move the generation every client
watches, at each SPU report, and the values would still lag the log.

Every write happens under the seqlock at ``seq``: rows are encoded and checked
first, then copied in with the counters, so the lock is held for two memcpys.
A read copies the used rows inside the seqlock and decodes them outside it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable, NamedTuple

from .errors import InvalidArgument, LayoutVersionMismatch, MetadataTableError
from .seqlock import DEFAULT_MAX_RETRIES, SeqLock

LAYOUT_VERSION = 2
MAGIC = b"RILLETMT"
MAX_REPLICAS = 8
MAX_TOPIC_LEN = 63                  # names.MAX_NAME_LEN; the 64-byte field keeps a NUL
# Caps on a layout, so a corrupt header cannot make a reader compute a huge size.
MAX_SPUS_LIMIT = 65_535
MAX_PARTITIONS_LIMIT = 1 << 20      # 144 MiB of partition rows


def _record(fields: tuple[tuple[str, str], ...]) -> tuple[struct.Struct, dict[str, int]]:
    """One Struct for a field list, and each field's offset derived with calcsize."""
    fmt, offsets = "<", {}
    for name, code in fields:
        offsets[name] = struct.calcsize(fmt)
        fmt += code
    return struct.Struct(fmt), offsets


HEADER, HEADER_OFFSETS = _record((
    ("magic", "8s"), ("layout_version", "I"), ("header_size", "I"), ("seq", "Q"),
    ("generation", "Q"), ("sc_pid", "I"), ("max_spus", "I"), ("max_partitions", "I"),
    ("spu_count", "I"), ("partition_count", "I"), ("spu_row_size", "I"),
    ("partition_row_size", "I"), ("reserved", "4x"),
))
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64, HEADER_SIZE
assert HEADER_OFFSETS == {
    "magic": 0, "layout_version": 8, "header_size": 12, "seq": 16, "generation": 24, "sc_pid": 32,
    "max_spus": 36, "max_partitions": 40, "spu_count": 44, "partition_count": 48,
    "spu_row_size": 52, "partition_row_size": 56, "reserved": 60,
}, HEADER_OFFSETS
SEQ_OFFSET = HEADER_OFFSETS["seq"]
assert SEQ_OFFSET % 8 == 0
GENERATION_OFFSET = HEADER_OFFSETS["generation"]
SC_PID_OFFSET = HEADER_OFFSETS["sc_pid"]
SPU_COUNT_OFFSET = HEADER_OFFSETS["spu_count"]

SPU_ROW, SPU_ROW_OFFSETS = _record((("spu_id", "i"), ("pid", "i"), ("status", "B"), ("padding", "7x")))
SPU_ROW_SIZE = SPU_ROW.size
assert SPU_ROW_SIZE == 16 and SPU_ROW_OFFSETS["status"] == 8, SPU_ROW_SIZE

PARTITION_ROW, PARTITION_ROW_OFFSETS = _record((
    ("topic", "64s"), ("partition", "i"), ("leader", "i"), ("leader_epoch", "i"), ("status", "B"),
    ("replica_count", "B"), ("in_sync_count", "B"), ("padding", "x"),
    ("replicas", f"{MAX_REPLICAS}i"), ("in_sync", f"{MAX_REPLICAS}i"),
))
PARTITION_ROW_SIZE = PARTITION_ROW.size
assert PARTITION_ROW_SIZE == 144, PARTITION_ROW_SIZE
assert PARTITION_ROW_OFFSETS["replicas"] == 80 and PARTITION_ROW_OFFSETS["in_sync"] == 112, PARTITION_ROW_OFFSETS
# Positions in a PARTITION_ROW.unpack() tuple (each replica id is its own item).
_REPLICAS_AT = 7
_IN_SYNC_AT = _REPLICAS_AT + MAX_REPLICAS

_U64 = struct.Struct("<Q")
_GENERATION_PID = struct.Struct("<QI")          # generation, sc_pid at GENERATION_OFFSET
_COUNTS = struct.Struct("<II")                  # spu_count, partition_count at SPU_COUNT_OFFSET
assert GENERATION_OFFSET + _GENERATION_PID.size == SC_PID_OFFSET + 4
assert SPU_COUNT_OFFSET + _COUNTS.size == HEADER_OFFSETS["spu_row_size"]
_PID_MAX = 0xFFFFFFFF


class SpuStatus(IntEnum):
    INIT = 0
    ONLINE = 1
    OFFLINE = 2

    @property
    def label(self) -> str:
        """Fluvio's spelling, as the CLI shows it."""
        return _SPU_LABELS[self]


class PartitionStatus(IntEnum):
    OFFLINE = 0
    ONLINE = 1
    LEADER_OFFLINE = 2
    OUT_OF_STORAGE = 3

    @property
    def label(self) -> str:
        return _PARTITION_LABELS[self]


_SPU_LABELS = {SpuStatus.INIT: "Init", SpuStatus.ONLINE: "Online", SpuStatus.OFFLINE: "Offline"}
_PARTITION_LABELS = {
    PartitionStatus.OFFLINE: "Offline", PartitionStatus.ONLINE: "Online",
    PartitionStatus.LEADER_OFFLINE: "LeaderOffline", PartitionStatus.OUT_OF_STORAGE: "OutOfStorage",
}
# Decoding looks statuses up by position: the values must be 0..n-1.
_SPU_STATUSES = tuple(SpuStatus)
_PARTITION_STATUSES = tuple(PartitionStatus)
assert [int(s) for s in _SPU_STATUSES] == list(range(len(_SPU_STATUSES)))
assert [int(s) for s in _PARTITION_STATUSES] == list(range(len(_PARTITION_STATUSES)))


@dataclass(frozen=True, slots=True)
class SpuRow:
    spu_id: int
    pid: int            # 0: no process
    status: SpuStatus


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One partition as the SC published it. Checked by write_snapshot, not here,
    so that decoding thousands of rows stays cheap."""

    topic: str
    partition: int
    leader: int                 # SPU id, -1 for none
    leader_epoch: int
    status: PartitionStatus
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Row capacities of a table; fixed when the SC creates it."""

    max_spus: int = 64              # far above the SPUs one host runs
    max_partitions: int = 4096      # 640 KiB of rows; a table is sized once per cluster start

    def __post_init__(self) -> None:
        for what, value, limit in (("max_spus", self.max_spus, MAX_SPUS_LIMIT),
                                   ("max_partitions", self.max_partitions, MAX_PARTITIONS_LIMIT)):
            if not isinstance(value, int) or not 1 <= value <= limit:
                raise InvalidArgument(f"{what}={value!r} must be an int from 1 to {limit}")

    @property
    def spu_rows_offset(self) -> int:
        return HEADER_SIZE

    @property
    def partition_rows_offset(self) -> int:
        return HEADER_SIZE + self.max_spus * SPU_ROW_SIZE

    @property
    def size(self) -> int:
        """Total bytes of a table with this layout."""
        return self.partition_rows_offset + self.max_partitions * PARTITION_ROW_SIZE


class TableHeader(NamedTuple):
    """The header fields; from read_header, an unlocked read (see there)."""

    layout_version: int
    header_size: int
    seq: int
    generation: int
    sc_pid: int
    max_spus: int
    max_partitions: int
    spu_count: int
    partition_count: int
    spu_row_size: int
    partition_row_size: int

    @property
    def layout(self) -> TableLayout:
        return TableLayout(self.max_spus, self.max_partitions)


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    """A consistent copy of the table at one generation. Lookups are O(1): the
    index is built on the first lookup and kept."""

    generation: int
    sc_pid: int
    spus: tuple[SpuRow, ...]
    partitions: tuple[PartitionRow, ...]
    _index: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def _indexed(self) -> tuple[dict, dict, dict]:
        index = self._index
        if index is None:
            by_topic: dict[str, list[PartitionRow]] = {}
            for row in self.partitions:
                by_topic.setdefault(row.topic, []).append(row)
            for rows in by_topic.values():
                rows.sort(key=_partition_number)
            index = (
                {(row.topic, row.partition): row for row in self.partitions},
                by_topic,
                {row.spu_id: row for row in self.spus},
            )
            object.__setattr__(self, "_index", index)
        return index

    def partition(self, topic: str, partition: int) -> PartitionRow | None:
        return self._indexed()[0].get((topic, partition))

    def partitions_of(self, topic: str) -> list[PartitionRow]:
        """The topic's rows sorted by partition; empty for an unknown topic."""
        return list(self._indexed()[1].get(topic, ()))

    def topics(self) -> list[str]:
        return sorted(self._indexed()[1])

    def spu(self, spu_id: int) -> SpuRow | None:
        return self._indexed()[2].get(spu_id)


def _partition_number(row: PartitionRow) -> int:
    return row.partition


# --- header -----------------------------------------------------------------------

def read_header(buf) -> TableHeader:
    """Check and return the header: size, magic, layout version, row sizes.

    An unlocked read: the static fields (version, sizes, capacities) are exact,
    but generation, counts and sc_pid may come from different writes. Use
    read_snapshot for a consistent view. Raises MetadataTableError ("not a rillet
    metadata table" for a wrong magic) or LayoutVersionMismatch.
    """
    if len(buf) < HEADER_SIZE:
        raise MetadataTableError(f"metadata table of {len(buf)} bytes is smaller than its {HEADER_SIZE}-byte header")
    magic, *fields = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        if magic == bytes(len(MAGIC)):
            raise MetadataTableError("metadata table is not initialised yet (zero magic): is the SC starting?")
        raise MetadataTableError(f"not a rillet metadata table: magic {magic!r}, expected {MAGIC!r}")
    header = TableHeader._make(fields)
    if header.layout_version != LAYOUT_VERSION:
        raise LayoutVersionMismatch(
            f"metadata table has layout version {header.layout_version}, this rillet reads layout version "
            f"{LAYOUT_VERSION}: run clients and cluster from the same rillet release"
        )
    expected = (HEADER_SIZE, SPU_ROW_SIZE, PARTITION_ROW_SIZE)
    found = (header.header_size, header.spu_row_size, header.partition_row_size)
    if found != expected:
        raise MetadataTableError(
            f"metadata table header, SPU row and partition row sizes are {found}, expected {expected}"
        )
    try:
        size = header.layout.size
    except InvalidArgument as exc:
        raise MetadataTableError(f"metadata table header is corrupt: {exc}") from exc
    if len(buf) < size:
        raise MetadataTableError(f"metadata table of {len(buf)} bytes is smaller than its layout's {size}")
    return header


def peek_sc_pid(buf) -> int | None:
    """The writer's pid recorded in any layout version, or None if ``buf`` does
    not hold an initialised rillet table. Used to tell a live table from a stale one."""
    if len(buf) < HEADER_SIZE or bytes(buf[0:len(MAGIC)]) != MAGIC:
        return None
    return struct.unpack_from("<I", buf, SC_PID_OFFSET)[0]


def _check_pid(sc_pid: int) -> int:
    if not isinstance(sc_pid, int) or not 0 <= sc_pid <= _PID_MAX:
        raise InvalidArgument(f"sc_pid={sc_pid!r} must be an int from 0 to {_PID_MAX}")
    return sc_pid


def init_table(buf, layout: TableLayout, sc_pid: int) -> None:
    """Format ``buf`` as an empty table: zero rows, generation 0, seq 0.

    The magic goes in last, so a concurrent reader sees either "not initialised"
    or a whole header. Not for a table readers are already using.
    """
    if not isinstance(layout, TableLayout):
        raise InvalidArgument(f"layout must be a TableLayout, not {type(layout).__name__}")
    _check_pid(sc_pid)
    size = layout.size
    if len(buf) < size:
        raise InvalidArgument(f"buffer of {len(buf)} bytes is smaller than the layout's {size}")
    buf[0:size] = bytes(size)
    HEADER.pack_into(buf, 0, bytes(len(MAGIC)), LAYOUT_VERSION, HEADER_SIZE, 0, 0, sc_pid,
                     layout.max_spus, layout.max_partitions, 0, 0, SPU_ROW_SIZE, PARTITION_ROW_SIZE)
    buf[0:len(MAGIC)] = MAGIC


# --- writing ----------------------------------------------------------------------

def _encode_spus(spus: tuple[SpuRow, ...], max_spus: int) -> bytearray:
    if len(spus) > max_spus:
        raise InvalidArgument(f"{len(spus)} SPU rows exceed max_spus={max_spus}")
    out = bytearray(len(spus) * SPU_ROW_SIZE)
    seen: set[int] = set()
    for i, row in enumerate(spus):
        if row.spu_id in seen:
            raise InvalidArgument(f"two SPU rows for spu {row.spu_id}")
        seen.add(row.spu_id)
        try:
            SPU_ROW.pack_into(out, i * SPU_ROW_SIZE, row.spu_id, row.pid, SpuStatus(row.status))
        except (struct.error, ValueError, TypeError) as exc:
            raise InvalidArgument(f"SPU row {i} (spu {row.spu_id!r}) does not fit the table: {exc}") from exc
    return out


def _check_topic(topic: object) -> bytes:
    if not isinstance(topic, str) or not topic.isascii() or "\0" in topic or not topic:
        raise InvalidArgument(f"topic {topic!r} must be a non-empty ASCII string without NUL")
    if len(topic) > MAX_TOPIC_LEN:
        raise InvalidArgument(f"topic name of {len(topic)} characters exceeds the table's {MAX_TOPIC_LEN}")
    return topic.encode("ascii")


def _replica_ids(row: PartitionRow, what: str, ids: Iterable[int]) -> tuple[int, ...]:
    ids = tuple(ids)
    if len(ids) > MAX_REPLICAS:
        raise InvalidArgument(
            f"partition {row.topic}/{row.partition}: {len(ids)} {what} exceed MAX_REPLICAS={MAX_REPLICAS}"
        )
    return ids


def _pack_partition(out: bytearray, i: int, row: PartitionRow) -> None:
    topic = _check_topic(row.topic)
    if not isinstance(row.partition, int) or row.partition < 0 or row.leader < -1:
        raise InvalidArgument(
            f"partition row {i}: partition {row.partition!r} or leader {row.leader!r} out of range"
        )
    replicas = _replica_ids(row, "replicas", row.replicas)
    in_sync = _replica_ids(row, "in-sync replicas", row.in_sync)
    try:
        PARTITION_ROW.pack_into(
            out, i * PARTITION_ROW_SIZE, topic, row.partition, row.leader, row.leader_epoch,
            PartitionStatus(row.status), len(replicas), len(in_sync),
            *replicas, *(0,) * (MAX_REPLICAS - len(replicas)),
            *in_sync, *(0,) * (MAX_REPLICAS - len(in_sync)),
        )
    except (struct.error, ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"partition row {i} ({row.topic}/{row.partition}) does not fit the table: {exc}"
        ) from exc


def _encode_partitions(partitions: tuple[PartitionRow, ...], max_partitions: int) -> bytearray:
    if len(partitions) > max_partitions:
        raise InvalidArgument(f"{len(partitions)} partition rows exceed max_partitions={max_partitions}")
    out = bytearray(len(partitions) * PARTITION_ROW_SIZE)
    seen: set[tuple[str, int]] = set()
    for i, row in enumerate(partitions):
        key = (row.topic, row.partition)
        if key in seen:
            raise InvalidArgument(f"two rows for partition {row.topic}/{row.partition}")
        seen.add(key)
        _pack_partition(out, i, row)
    return out


def _store_rows(buf, start: int, blob: bytes | bytearray, old_rows: int, row_size: int) -> None:
    """Copy ``blob`` in at ``start`` and zero the rows the previous write used beyond it."""
    end = start + len(blob)
    buf[start:end] = blob
    old_end = start + old_rows * row_size
    if old_end > end:
        buf[end:old_end] = bytes(old_end - end)


def write_snapshot(buf, spus: Iterable[SpuRow], partitions: Iterable[PartitionRow], *,
                   sc_pid: int | None = None) -> int:
    """Replace every row under the seqlock; return the new generation.

    All rows are checked before the lock is taken: InvalidArgument for more rows
    than the layout holds, more than MAX_REPLICAS replicas, a topic name over 63
    characters, duplicate rows, or a value out of its field's range. ``sc_pid``
    also replaces the recorded writer pid. Single writer by contract.
    """
    header = read_header(buf)
    layout = header.layout
    spu_blob = _encode_spus(tuple(spus), layout.max_spus)
    partition_blob = _encode_partitions(tuple(partitions), layout.max_partitions)
    pid = header.sc_pid if sc_pid is None else _check_pid(sc_pid)
    generation = header.generation + 1
    with SeqLock(buf, SEQ_OFFSET).write():
        _store_rows(buf, layout.spu_rows_offset, spu_blob, header.spu_count, SPU_ROW_SIZE)
        _store_rows(buf, layout.partition_rows_offset, partition_blob, header.partition_count, PARTITION_ROW_SIZE)
        _GENERATION_PID.pack_into(buf, GENERATION_OFFSET, generation, pid)
        _COUNTS.pack_into(buf, SPU_COUNT_OFFSET, len(spu_blob) // SPU_ROW_SIZE,
                          len(partition_blob) // PARTITION_ROW_SIZE)
    return generation


# --- reading ----------------------------------------------------------------------

def read_generation(buf, *, max_retries: int = DEFAULT_MAX_RETRIES) -> int:
    """The current generation, without copying any row (three 8-byte reads).

    Assumes ``buf`` passed read_header once (TableReader checks it on open).
    """
    return SeqLock(buf, SEQ_OFFSET).read(lambda: _U64.unpack_from(buf, GENERATION_OFFSET)[0],
                                         max_retries=max_retries)


def read_snapshot(buf, *, max_retries: int = DEFAULT_MAX_RETRIES) -> TableSnapshot:
    """A consistent snapshot: the used rows are copied under the seqlock, then decoded.

    Raises MetadataTableError (bad magic, corrupt row), LayoutVersionMismatch, or
    MetadataTableBusy when the writer stays mid-update for ``max_retries`` reads.
    """
    header = read_header(buf)
    layout = header.layout
    spu_start, partition_start = layout.spu_rows_offset, layout.partition_rows_offset

    def copy() -> tuple[int, int, bytes, bytes]:
        generation, sc_pid = _GENERATION_PID.unpack_from(buf, GENERATION_OFFSET)
        spu_count, partition_count = _COUNTS.unpack_from(buf, SPU_COUNT_OFFSET)
        if spu_count > layout.max_spus or partition_count > layout.max_partitions:
            raise MetadataTableError(
                f"metadata table counts {spu_count} SPUs and {partition_count} partitions, "
                f"capacity is {layout.max_spus} and {layout.max_partitions}"
            )
        spu_raw = bytes(buf[spu_start:spu_start + spu_count * SPU_ROW_SIZE])
        partition_raw = bytes(buf[partition_start:partition_start + partition_count * PARTITION_ROW_SIZE])
        return generation, sc_pid, spu_raw, partition_raw

    generation, sc_pid, spu_raw, partition_raw = SeqLock(buf, SEQ_OFFSET).read(copy, max_retries=max_retries)
    return TableSnapshot(generation, sc_pid, _decode_spus(spu_raw), _decode_partitions(partition_raw))


def _decode_spus(raw: bytes) -> tuple[SpuRow, ...]:
    rows = []
    for i, (spu_id, pid, status) in enumerate(SPU_ROW.iter_unpack(raw)):
        if status >= len(_SPU_STATUSES):
            raise MetadataTableError(f"corrupt SPU row {i}: status {status}")
        rows.append(SpuRow(spu_id, pid, _SPU_STATUSES[status]))
    return tuple(rows)


def _decode_partitions(raw: bytes) -> tuple[PartitionRow, ...]:
    topics: dict[bytes, str] = {}       # most rows share a topic: decode each name once
    rows = []
    for i, f in enumerate(PARTITION_ROW.iter_unpack(raw)):
        topic = topics.get(f[0])
        if topic is None:
            topic = topics[f[0]] = _decode_topic(f[0], i)
        status, replica_count, in_sync_count = f[4], f[5], f[6]
        if status >= len(_PARTITION_STATUSES) or replica_count > MAX_REPLICAS or in_sync_count > MAX_REPLICAS:
            raise MetadataTableError(
                f"corrupt partition row {i}: status {status}, {replica_count} replicas, {in_sync_count} in sync"
            )
        rows.append(PartitionRow(
            topic, f[1], f[2], f[3], _PARTITION_STATUSES[status],
            f[_REPLICAS_AT:_REPLICAS_AT + replica_count], f[_IN_SYNC_AT:_IN_SYNC_AT + in_sync_count],
        ))
    return tuple(rows)


def _decode_topic(raw: bytes, row: int) -> str:
    name = raw.split(b"\0", 1)[0]
    try:
        topic = name.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MetadataTableError(f"corrupt partition row {row}: topic {name!r} is not ASCII") from exc
    if not topic:
        raise MetadataTableError(f"corrupt partition row {row}: empty topic")
    return topic
