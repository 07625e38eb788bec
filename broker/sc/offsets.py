"""Durable consumer offsets, kept by the SC in an append-only, CRC-checked log.

Why the SC: a named consumer's offsets must outlive any one SPU. Fluvio keeps them
in a system topic on one SPU; in rillet the SC is the one process that survives the
loss of any SPU (and it already owns every other piece of durable metadata), so the
store lives beside ``metadata.json`` as ``<cluster>/sc/consumer-offsets.log``.

What is stored: for each (consumer, topic, partition) the last offset the consumer
has *seen*, and when it was stored. A consumer resumes at that offset + 1.

Strategy ("the same care as records"): every change appends one entry (put or delete)
to the log and the log is fsynced before the change is acknowledged or applied in
memory. On open the log is replayed; the first entry that fails its length, kind,
name or CRC check ends the valid prefix, and everything after it is moved byte for
byte into ``consumer-offsets.log.cut-<position>`` beside the log, the log truncated
there, and one WARNING logged: a torn tail never stops the SC. When the log holds more
than twice as many entries as live offsets it is compacted: the live map is written
to a temporary file, fsynced, renamed over the log, and the directory fsynced.

File layout, little-endian. File header (``FILE_HEADER``, 12 bytes)::

    pos size field     meaning
      0   4  magic     b"RLCO"
      4   2  version   FORMAT_VERSION (1)
      6   2  reserved  0
      8   4  crc       zlib CRC-32 of bytes 0-7

A header that fails its magic or CRC is damage: the whole file is set aside (as a
tail cut at position 0) and the store starts empty. A whole header of another version
is refused with an error instead, so a newer rillet's file is never destroyed.

then entries, each ``ENTRY`` (28 bytes) followed by its names::

    pos size field         meaning
      0   4  crc           zlib CRC-32 of every byte of the entry after this field
      4   1  kind          1 = put, 2 = delete
      5   1  reserved      0
      6   1  consumer_len  1 .. 63 (a valid name)
      7   1  topic_len     1 .. 63 (a valid name)
      8   4  partition     i32, >= 0
     12   8  offset        i64: put: the last seen offset (>= 0); delete: -1
     20   8  modified_ms   i64: wall-clock time of the change, ms since the epoch
     28   -  names         consumer then topic, ASCII

The pure part (encode, replay, the in-memory table and what a request changes) is
apart from the file shell (:class:`OffsetLog`) and the SC glue
(:class:`ConsumerOffsetStore`), and is tested with byte vectors and damaged files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    ConsumerOffsetNotFound, InvalidArgument, InvalidName, PartitionNotFound, StorageError, TopicNotFound,
)
from rillet.ipc.names import MAX_NAME_LEN, validate_name
from rillet.broker.storage.files import storage_error, write_atomic

FILE_HEADER = struct.Struct("<4sHHI")
assert FILE_HEADER.size == 12, FILE_HEADER.size
_HEADER_CRC_AT = struct.calcsize("<4sHH")
FILE_MAGIC = b"RLCO"
FORMAT_VERSION = 1

ENTRY = struct.Struct("<IBBBBiqq")
assert ENTRY.size == 28, ENTRY.size
_CRC_END = struct.calcsize("<I")          # the CRC covers everything after its own field
KIND_PUT = 1
KIND_DELETE = 2
MAX_ENTRY_SIZE = ENTRY.size + 2 * MAX_NAME_LEN
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1

# Compact when the log holds more than COMPACT_RATIO entries per live offset, and at
# least this many (so a handful of offsets is not rewritten on every other commit).
COMPACT_RATIO = 2
COMPACT_MIN_ENTRIES = 256

_log = logging.getLogger("sc.offsets")

__all__ = [
    "ConsumerOffsetStore", "OffsetLog", "OffsetTable", "Key", "Stored", "Replay", "HeaderError", "OtherVersion",
    "encode_put", "encode_delete", "encode_file_header", "encode_snapshot", "replay",
]


class Key(NamedTuple):
    consumer: str
    topic: str
    partition: int


class Stored(NamedTuple):
    offset: int          # the last offset the consumer has seen
    modified_ms: int


# --- pure: encoding ----------------------------------------------------------------------

def encode_file_header() -> bytes:
    head = FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, 0, 0)[:_HEADER_CRC_AT]
    return head + struct.pack("<I", zlib.crc32(head))


def _encode(kind: int, key: Key, offset: int, modified_ms: int) -> bytes:
    consumer, topic = key.consumer.encode("ascii"), key.topic.encode("ascii")
    body = ENTRY.pack(0, kind, 0, len(consumer), len(topic), key.partition, offset, modified_ms)[_CRC_END:]
    body += consumer + topic
    return struct.pack("<I", zlib.crc32(body)) + body


def encode_put(key: Key, offset: int, modified_ms: int) -> bytes:
    """One put entry: ``key`` has seen ``offset``."""
    return _encode(KIND_PUT, key, offset, modified_ms)


def encode_delete(key: Key, modified_ms: int) -> bytes:
    return _encode(KIND_DELETE, key, -1, modified_ms)


def encode_snapshot(entries: dict[Key, Stored]) -> bytes:
    """A whole log holding exactly ``entries`` (what compaction writes)."""
    parts = [encode_file_header()]
    parts += [encode_put(k, v.offset, v.modified_ms) for k, v in sorted(entries.items())]
    return b"".join(parts)


# --- pure: replay ------------------------------------------------------------------------

@dataclass(frozen=True)
class Replay:
    entries: dict[Key, Stored]   # the live map after every valid entry
    end: int                     # byte position just after the last valid entry
    count: int                   # valid entries read (puts and deletes)
    reason: str                  # why the walk stopped ("end of file" when it read everything)


class HeaderError(StorageError):
    """The file does not start with a valid header (damage, or not our file)."""


class OtherVersion(StorageError):
    """A whole, valid header of a format version this rillet does not read."""


def check_header(buf: bytes | memoryview) -> None:
    """Raise HeaderError unless ``buf`` starts with a whole header, OtherVersion unless it is version 1."""
    if len(buf) < FILE_HEADER.size:
        raise HeaderError(f"{len(buf)} bytes is shorter than the {FILE_HEADER.size}-byte header")
    magic, version, _reserved, crc = FILE_HEADER.unpack_from(buf, 0)
    if magic != FILE_MAGIC:
        raise HeaderError(f"bad magic {bytes(magic)!r} (expected {FILE_MAGIC!r})")
    if zlib.crc32(buf[:_HEADER_CRC_AT]) != crc:
        raise HeaderError("header CRC mismatch")
    if version != FORMAT_VERSION:
        raise OtherVersion(f"format version {version}; this rillet reads version {FORMAT_VERSION}")


def _decode_entry(buf: memoryview, pos: int) -> tuple[int, Key, int, int, int] | str:
    """``(kind, key, offset, modified_ms, size)`` of the entry at ``pos``, or why it is invalid."""
    left = len(buf) - pos
    if left < ENTRY.size:
        return f"{left} bytes left, less than an entry header ({ENTRY.size})"
    crc, kind, reserved, clen, tlen, partition, offset, modified_ms = ENTRY.unpack_from(buf, pos)
    if kind not in (KIND_PUT, KIND_DELETE) or reserved != 0:
        return f"unknown entry kind {kind} (reserved {reserved})"
    if not (1 <= clen <= MAX_NAME_LEN and 1 <= tlen <= MAX_NAME_LEN):
        return f"name lengths {clen}/{tlen} outside 1..{MAX_NAME_LEN}"
    size = ENTRY.size + clen + tlen
    if size > left:
        return f"entry of {size} bytes runs past the end of the file ({left} bytes left)"
    if zlib.crc32(buf[pos + _CRC_END:pos + size]) != crc:
        return "CRC mismatch"
    if partition < 0 or (kind == KIND_PUT and offset < 0):
        return f"invalid partition {partition} or offset {offset}"
    names = bytes(buf[pos + ENTRY.size:pos + size])
    try:
        consumer = validate_name(names[:clen].decode("ascii"), "consumer")
        topic = validate_name(names[clen:].decode("ascii"), "topic")
    except (UnicodeDecodeError, InvalidName) as exc:
        return f"invalid name: {exc}"
    return kind, Key(consumer, topic, partition), offset, modified_ms, size


def replay(buf: bytes | memoryview) -> Replay:
    """Apply every valid entry of a whole log file (header included), in order.

    Stops at the first invalid entry; the caller cuts the file at ``end``.
    Raises HeaderError when the header is damaged, OtherVersion for another format.
    """
    view = memoryview(buf)
    check_header(view)
    entries: dict[Key, Stored] = {}
    pos, count, reason = FILE_HEADER.size, 0, "end of file"
    while pos < len(view):
        decoded = _decode_entry(view, pos)
        if isinstance(decoded, str):
            reason = decoded
            break
        kind, key, offset, modified_ms, size = decoded
        if kind == KIND_PUT:
            entries[key] = Stored(offset, modified_ms)
        else:
            entries.pop(key, None)
        pos += size
        count += 1
    return Replay(entries, pos, count, reason)


# --- pure: the table and what requests change ------------------------------------------------

class Change(NamedTuple):
    key: Key
    stored: Stored | None        # None: delete
    at_ms: int                   # when the change was asked for

    def encode(self) -> bytes:
        if self.stored is None:
            return encode_delete(self.key, self.at_ms)
        return encode_put(self.key, self.stored.offset, self.stored.modified_ms)


TopicPartitions = Callable[[str], "int | None"]


class OffsetTable:
    """The live map and the rules for changing it; no I/O.

    ``topic_partitions(topic)`` gives a topic's partition count, or None when the topic
    does not exist; without it, topics and partitions are not checked.
    """

    def __init__(self, entries: dict[Key, Stored] | None = None,
                 topic_partitions: TopicPartitions | None = None) -> None:
        self.entries: dict[Key, Stored] = dict(entries or {})
        self.topic_partitions = topic_partitions

    # --- checks ---
    def check_partition(self, topic: str, partition: int | None) -> None:
        validate_name(topic, "topic")
        if partition is not None and (not isinstance(partition, int) or not 0 <= partition <= MAX_PARTITION):
            raise InvalidArgument(f"partition must be a non-negative integer, got {partition!r}")
        if self.topic_partitions is None:
            return
        count = self.topic_partitions(topic)
        if count is None:
            raise TopicNotFound(f"Topic not found: {topic}")
        if partition is not None and partition >= count:
            raise PartitionNotFound(f"partition {partition} of topic {topic!r} not found (it has {count})")

    # --- plans: validate, and say what would change ---
    def plan_commit(self, consumer: str, offsets: Iterable[tuple[str, int, int]], now_ms: int) -> list[Change]:
        validate_name(consumer, "consumer")
        changes: dict[Key, Change] = {}
        for topic, partition, offset in offsets:
            self.check_partition(topic, partition)
            if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
                raise InvalidArgument(f"offset must be a non-negative integer, got {offset!r}")
            key = Key(consumer, topic, partition)
            changes[key] = Change(key, Stored(offset, now_ms), now_ms)
        return list(changes.values())

    def plan_delete(self, consumer: str, topic: str | None, partition: int | None, now_ms: int) -> list[Change]:
        validate_name(consumer, "consumer")
        if partition is not None and topic is None:
            raise InvalidArgument("a partition needs a topic")
        if topic is not None:
            self.check_partition(topic, partition)
        keys = [k for k in sorted(self.entries) if k.consumer == consumer
                and (topic is None or k.topic == topic) and (partition is None or k.partition == partition)]
        if not keys:
            where = "" if topic is None else f" on topic {topic!r}" + ("" if partition is None else f" partition {partition}")
            raise ConsumerOffsetNotFound(f"consumer {consumer!r} has no stored offsets{where}")
        return [Change(k, None, now_ms) for k in keys]

    def exists(self, key: Key) -> bool:
        """Does the key's topic and partition (still) exist? True when that is not checked."""
        if self.topic_partitions is None:
            return True
        count = self.topic_partitions(key.topic)
        return count is not None and key.partition < count

    def plan_forget_topic(self, topic: str, now_ms: int) -> list[Change]:
        return [Change(k, None, now_ms) for k in sorted(self.entries) if k.topic == topic]

    def plan_prune(self, now_ms: int) -> list[Change]:
        """Deletes for offsets whose topic or partition no longer exists."""
        if self.topic_partitions is None:
            return []
        return [Change(key, None, now_ms) for key in sorted(self.entries) if not self.exists(key)]

    # --- apply and read ---
    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.stored is None:
                self.entries.pop(change.key, None)
            else:
                self.entries[change.key] = change.stored

    def rows(self, consumer: str | None = None, topic: str | None = None) -> list[m.ConsumerOffsetInfo]:
        return [m.ConsumerOffsetInfo(k.consumer, k.topic, k.partition, v.offset, v.modified_ms)
                for k, v in sorted(self.entries.items())
                if (consumer is None or k.consumer == consumer) and (topic is None or k.topic == topic)]

    def info(self, change: Change) -> m.ConsumerOffsetInfo:
        stored = self.entries.get(change.key) or change.stored or Stored(-1, 0)
        return m.ConsumerOffsetInfo(change.key.consumer, change.key.topic, change.key.partition,
                                    stored.offset, stored.modified_ms)


# --- the file shell -------------------------------------------------------------------------

class OffsetLog:
    """The log file: replay and repair on open, durable appends, atomic compaction.

    Thread-safe: appends may run in a worker thread while the SC's loop thread
    forgets a topic; one lock orders them.
    """

    def __init__(self, path: Path, log: logging.Logger = _log) -> None:
        self.path = Path(path)
        self.log = log
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0                  # bytes of whole entries; a failed append is cut back to it
        self._broken: str | None = None
        self.entries_in_file = 0
        self.cuts: list[Path] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.initial = self._load()
        self._open_for_append()

    # --- open ---
    def _load(self) -> dict[Key, Stored]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise storage_error(exc, "read", self.path) from exc
        if not data:
            write_atomic(self.path, encode_file_header())
            self._size = FILE_HEADER.size
            return {}
        try:
            result = replay(data)
        except OtherVersion as exc:     # refuse rather than destroy a newer rillet's file
            raise StorageError(f"cannot read consumer offsets {self.path}: {exc}") from None
        except HeaderError as exc:
            self._set_aside(data, 0, str(exc))
            write_atomic(self.path, encode_file_header())
            self._size = FILE_HEADER.size
            return {}
        if result.end < len(data):
            self._set_aside(data[result.end:], result.end, result.reason)
            self._truncate(result.end)
        self._size = result.end
        self.entries_in_file = result.count
        self.log.info("consumer offsets: %d live from %d entries in %s", len(result.entries), result.count, self.path)
        return result.entries

    def _set_aside(self, tail: bytes, position: int, reason: str) -> None:
        side = self.path.with_name(f"{self.path.name}.cut-{position}")
        n = 1
        while side.exists():
            side = self.path.with_name(f"{self.path.name}.cut-{position}.{n}")
            n += 1
        write_atomic(side, tail)
        self.cuts.append(side)
        self.log.warning("consumer offsets %s: cut %d bytes at position %d (%s); they are kept in %s",
                         self.path, len(tail), position, reason, side)

    def _truncate(self, size: int) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error(exc, f"truncate to {size} bytes", self.path) from exc

    def _open_for_append(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise storage_error(exc, "open", self.path) from exc

    # --- writes ---
    def append(self, data: bytes, entries: int) -> None:
        """Append ``data`` (``entries`` whole entries) and fsync before returning.

        A failed write (a full disk) is cut back off, so no torn entry sits in front of
        later ones; if even that fails, appends are refused until the SC restarts (and
        replay cuts the tail)."""
        with self._lock:
            if self._fd is None:
                raise StorageError(f"consumer offsets {self.path} are closed")
            if self._broken:
                raise StorageError(f"consumer offsets {self.path} refuse writes until the SC restarts: {self._broken}")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fdatasync(self._fd)
            except OSError as exc:
                error = storage_error(exc, "append to", self.path)
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError as cut_exc:
                    self._broken = f"{error}; then cannot cut back to {self._size} bytes: {cut_exc.strerror}"
                raise error from exc
            self._size += len(data)
            self.entries_in_file += entries

    def rewrite(self, snapshot: bytes, entries: int) -> None:
        """Replace the log with ``snapshot`` atomically (temp file, fsync, rename, dir fsync)."""
        with self._lock:
            if self._fd is None:
                return
            try:
                write_atomic(self.path, snapshot)
                self._size = len(snapshot)
            finally:
                # Append to whatever file holds the name now: the new one, or the old one
                # if the rename did not happen. Never to an unlinked inode.
                os.close(self._fd)
                self._fd = None
                self._open_for_append()
            self.entries_in_file = entries

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def needs_compaction(entries_in_file: int, live: int, minimum: int = COMPACT_MIN_ENTRIES) -> bool:
    return entries_in_file >= minimum and entries_in_file > COMPACT_RATIO * live


# --- the SC glue --------------------------------------------------------------------------------

class ConsumerOffsetStore:
    """What the SC holds: the table, its log, and the admin routes that use them.

    Handlers validate in the SC's loop thread, then append and fsync in a worker
    thread (the loop keeps serving SPUs meanwhile), then apply the change in memory
    and answer. One asyncio lock keeps changes in the order they arrived.
    """

    def __init__(self, path: Path, topic_partitions: TopicPartitions | None = None, *,
                 log: logging.Logger = _log, compact_min_entries: int = COMPACT_MIN_ENTRIES) -> None:
        self.log = log
        self.compact_min_entries = compact_min_entries
        self.file = OffsetLog(path, log)
        self.table = OffsetTable(self.file.initial, topic_partitions)
        self._order: asyncio.Lock | None = None
        pruned = self.table.plan_prune(_now_ms(None))
        if pruned:
            self.log.info("dropping %d consumer offsets of topics or partitions that no longer exist", len(pruned))
            self._write(pruned)
        self._maybe_compact()

    @property
    def path(self) -> Path:
        return self.file.path

    def routes(self) -> dict[type, Callable]:
        """Admin message type -> handler, merged into the SC's routes."""
        return {
            m.CommitConsumerOffsets: self._on_commit,
            m.FetchConsumerOffsets: self._on_fetch,
            m.ListConsumerOffsets: self._on_list,
            m.DeleteConsumerOffsets: self._on_delete,
        }

    # --- synchronous API (tests, and the SC's own calls) ---
    def commit(self, consumer: str, offsets: Iterable[tuple[str, int, int]], now_ms: int | None = None) -> None:
        self._write(self.table.plan_commit(consumer, offsets, _now_ms(now_ms)))

    def delete(self, consumer: str, topic: str | None = None, partition: int | None = None) -> list[m.ConsumerOffsetInfo]:
        changes = self.table.plan_delete(consumer, topic, partition, _now_ms(None))
        deleted = [self.table.info(c) for c in changes]
        self._write(changes)
        return deleted

    def rows(self, consumer: str | None = None, topic: str | None = None) -> list[m.ConsumerOffsetInfo]:
        return self.table.rows(consumer, topic)

    def forget_topic(self, topic: str) -> None:
        """Drop every offset of a deleted topic."""
        changes = self.table.plan_forget_topic(topic, _now_ms(None))
        if changes:
            self._write(changes)
            self.log.info("dropped %d consumer offsets of deleted topic %s", len(changes), topic)

    def close(self) -> None:
        self.file.close()

    def _write(self, changes: list[Change]) -> None:
        self.file.append(b"".join(c.encode() for c in changes), len(changes))
        self.table.apply(changes)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        live = len(self.table.entries)
        if needs_compaction(self.file.entries_in_file, live, self.compact_min_entries):
            self._compact(encode_snapshot(self.table.entries), live)

    def _compact(self, snapshot: bytes, live: int) -> None:
        """Rewrite the log; a failure is logged, not raised (the appended log is still whole)."""
        before = self.file.entries_in_file
        try:
            self.file.rewrite(snapshot, live)
        except StorageError as exc:
            self.log.error("compacting consumer offsets failed (the log is kept as it is): %s", exc)
            return
        self.log.info("compacted consumer offsets: %d entries -> %d", before, live)

    # --- admin handlers ---
    async def _in_order(self, plan: Callable[[], list[Change]]) -> list[Change]:
        """Plan, write (off the loop thread) and apply one change set, in arrival order."""
        if self._order is None:
            self._order = asyncio.Lock()
        async with self._order:
            changes = plan()
            data = b"".join(c.encode() for c in changes)
            await asyncio.to_thread(self.file.append, data, len(changes))
            # The topic may have been deleted (and its offsets forgotten) during the write.
            stale = [Change(c.key, None, c.at_ms) for c in changes if c.stored is not None and not self.table.exists(c.key)]
            if stale:
                self.file.append(b"".join(c.encode() for c in stale), len(stale))
            self.table.apply(changes + stale)
            live = len(self.table.entries)
            if needs_compaction(self.file.entries_in_file, live, self.compact_min_entries):
                await asyncio.to_thread(self._compact, encode_snapshot(self.table.entries), live)
            return changes

    async def _on_commit(self, msg: m.CommitConsumerOffsets) -> m.Ok:
        now = _now_ms(None)
        offsets = [(o.topic, o.partition, o.offset) for o in msg.offsets]
        await self._in_order(lambda: self.table.plan_commit(msg.consumer, offsets, now))
        return m.Ok(msg.cid)

    def _on_fetch(self, msg: m.FetchConsumerOffsets) -> m.ConsumerOffsetList:
        validate_name(msg.consumer, "consumer")
        self.table.check_partition(msg.topic, None)
        return m.ConsumerOffsetList(msg.cid, self.table.rows(msg.consumer, msg.topic))

    def _on_list(self, msg: m.ListConsumerOffsets) -> m.ConsumerOffsetList:
        return m.ConsumerOffsetList(msg.cid, self.table.rows())

    async def _on_delete(self, msg: m.DeleteConsumerOffsets) -> m.ConsumerOffsetsDeleted:
        deleted: list[m.ConsumerOffsetInfo] = []

        def plan() -> list[Change]:
            changes = self.table.plan_delete(msg.consumer, msg.topic, msg.partition, _now_ms(None))
            deleted.extend(self.table.info(c) for c in changes)
            return changes
        await self._in_order(plan)
        return m.ConsumerOffsetsDeleted(msg.cid, deleted)


def _now_ms(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else int(now_ms)
