"""One segment of a partition log: ``<base>.log`` mapped with mmap, plus its ``<base>.index``.

``<base_offset:020d>.log`` holds whole record batches (rillet.ipc.records) back to back from
position 0. The first batch's base_offset is the segment's base offset (its file name) and
each next batch starts at the previous one's next offset. After the last batch come zeros,
up to the preallocated capacity while the segment is active, or the end of the file once it
is sealed (trimmed at roll). A walk over batches already known to be sound reads only this
span of each header (``BATCH_SPAN``), little-endian, 27 bytes::

    pos size field              meaning
      0   8  base_offset         offset of the batch's first record
      8   4  batch_length        the batch occupies 12 + batch_length bytes
     12   4  leader_epoch        epoch of the leader that appended it
     16   1  magic               records.MAGIC
     17   6  (crc, attributes)   skipped
     23   4  last_offset_delta   record_count - 1

Life cycle: ``create`` (new, preallocated with posix_fallocate, mapped read/write) or
``open_active`` (re-extended, then recovered by recovery.py) -> appends -> ``seal`` at roll
(trimmed, mapped read-only) or ``close`` (trimmed). ``open_sealed`` loads an older segment.

A batch becomes readable only once whole: ``write`` copies everything after the stamped
fields, stamps base offset and epoch, and writes ``batch_length`` last. The space is zero
beforehand, so a process killed mid-copy leaves a header whose length is 0 or a CRC that
fails, never a shorter valid batch. The body of a batch of PWRITE_MIN_BYTES or more goes in
with ``pwrite`` (the same page cache pages the map shows) instead of stores into the map;
the stamps and ``batch_length`` follow as stores, so the order above holds either way.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator

from rillet.ipc.errors import DamagedLog, StorageError
from rillet.ipc.records import (
    ATTRIBUTES_POS,
    BATCH_LENGTH_POS,
    HEADER_SIZE,
    LEADER_EPOCH_POS,
    MAGIC,
    MAGIC_POS,
    PREAMBLE,
    PREAMBLE_SIZE,
    stamp_batch,
)

from .files import (
    PAGE_SIZE,
    fsync_path,
    map_file,
    preallocate,
    release_map,
    remove_file,
    storage_error,
    truncate_file,
)
from .index import OffsetIndex, capacity_entries

BATCH_SPAN = struct.Struct("<qiiB6xi")
assert BATCH_SPAN.size == ATTRIBUTES_POS + 2 + 4 == 27, BATCH_SPAN.size
_ZERO_CHUNK = bytes(1 << 20)
# A batch at least this large is written with pwrite instead of stores into the map: a store
# to a page not yet in the process's page tables costs a fault (~2 µs a 4 KiB page here),
# pwrite one system call. Measured on the development VM, fresh pages of a preallocated
# file: 64 KiB batches 43 -> 14 µs; below a page the store wins (130 B: 0.1 against 0.9 µs).
PWRITE_MIN_BYTES = 4096


def log_name(base_offset: int) -> str:
    return f"{base_offset:020d}.log"


def index_name(base_offset: int) -> str:
    return f"{base_offset:020d}.index"


def walk_spans(buf, start: int, limit: int, expected: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(position, base_offset, size, leader_epoch, next_offset)`` for sound-looking batches.

    Stops at a zero or foreign header, a batch running past ``limit``, or a base offset other
    than ``expected`` (then the previous next offset). No CRC check: for sealed segments,
    whose batches were validated when they were appended or recovered.
    """
    pos = start
    while limit - pos >= HEADER_SIZE:
        base, length, epoch, magic, delta = BATCH_SPAN.unpack_from(buf, pos)
        size = PREAMBLE_SIZE + length
        if magic != MAGIC or base != expected or length < HEADER_SIZE - PREAMBLE_SIZE or pos + size > limit:
            return
        expected = base + delta + 1
        yield pos, base, size, epoch, expected
        pos += size


def nonzero_end(buf, start: int, end: int, fd: int | None = None) -> int:
    """One past the last non-zero byte of ``buf[start:end]``, or ``start`` if all are zero.

    With the file's ``fd``, only the ranges the kernel reports as data are read: space
    that posix_fallocate reserved and nothing wrote is a hole to SEEK_DATA, so a crashed
    64 MiB segment holding a few KiB costs a few KiB to check, not a read of 64 MiB.
    """
    for lo, hi in reversed(_data_ranges(fd, start, end)):
        while hi > lo:
            chunk_lo = max(lo, hi - len(_ZERO_CHUNK))
            kept = bytes(buf[chunk_lo:hi]).rstrip(b"\0")
            if kept:
                return chunk_lo + len(kept)
            hi = chunk_lo
    return start


def _data_ranges(fd: int | None, start: int, end: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of ``[start, end)`` that may hold data (all of it if unknown)."""
    if fd is None or start >= end:
        return [(start, end)]
    ranges, pos = [], start
    try:
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:       # no data after pos
                    break
                raise
            if data >= end:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            ranges.append((data, min(hole, end)))
            pos = hole
    except OSError:
        return [(start, end)]                      # SEEK_DATA unsupported here: read it all
    return ranges


def _map_writable(directory: Path, base_offset: int, fd: int, capacity: int,
                  interval_bytes: int) -> tuple[mmap.mmap, OffsetIndex]:
    """Preallocate the active segment's file to ``capacity``, map it and open its index."""
    log_path = directory / log_name(base_offset)
    preallocate(fd, capacity, log_path)
    m = map_file(fd, capacity, log_path, writable=True)
    index = OffsetIndex.open_writable(directory / index_name(base_offset),
                                      capacity=capacity_entries(capacity, interval_bytes),
                                      interval_bytes=interval_bytes)
    return m, index


class Segment:
    """One segment; ``writable`` while it is the active (last) segment of its log."""

    def __init__(self, directory: Path, base_offset: int, m: mmap.mmap | None, fd: int | None,
                 index: OffsetIndex) -> None:
        self.base_offset = base_offset
        self.log_path = directory / log_name(base_offset)
        self.index = index
        self._map = m
        self._fd = fd
        self.used = 0
        self.next_offset = base_offset
        self._dirty: tuple[int, int] | None = None  # [lo, hi) written since the last flush
        self.damaged: str | None = None     # a sealed segment opened despite bytes after its last batch

    # --- opening -----------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, *, capacity: int, interval_bytes: int) -> Segment:
        """A new empty active segment; ENOSPC surfaces here as StorageError, leaving no file."""
        log_path = directory / log_name(base_offset)
        try:
            fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise storage_error(exc, "create segment", log_path) from exc
        try:
            m, index = _map_writable(directory, base_offset, fd, capacity, interval_bytes)
        except BaseException:
            os.close(fd)
            for name in (log_name(base_offset), index_name(base_offset)):
                (directory / name).unlink(missing_ok=True)
            raise
        return cls(directory, base_offset, m, fd, index)

    @classmethod
    def open_active(cls, directory: Path, base_offset: int, *, capacity: int,
                    interval_bytes: int) -> tuple[Segment, int]:
        """Re-extend and map the last segment; returns it (used 0) and its file size before.

        The caller recovers it (recovery.recover_active), which sets ``used`` and the index.
        """
        log_path = directory / log_name(base_offset)
        try:
            fd = os.open(log_path, os.O_RDWR)
            data_end = os.fstat(fd).st_size
        except OSError as exc:
            raise storage_error(exc, "open segment", log_path) from exc
        try:
            m, index = _map_writable(directory, base_offset, fd, max(capacity, data_end), interval_bytes)
        except BaseException:
            os.close(fd)
            raise
        return cls(directory, base_offset, m, fd, index), data_end

    @classmethod
    def open_sealed(cls, directory: Path, base_offset: int, *, interval_bytes: int,
                    logger: logging.Logger, keep_damaged: bool = False) -> Segment:
        """Map an older segment read-only and find its end (from the index's last entry).

        Its batches are trusted (checked when written); its index is checked and rebuilt when
        unsound. Non-zero bytes after the last batch are damage: DamagedLog, or with
        ``keep_damaged`` the segment ends at its last whole batch and ``damaged`` says why.
        """
        log_path = directory / log_name(base_offset)
        try:
            fd = os.open(log_path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                m = map_file(fd, size, log_path, writable=False)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error(exc, "open segment", log_path) from exc
        index = OffsetIndex.open_sealed(directory / index_name(base_offset), interval_bytes=interval_bytes)
        segment = cls(directory, base_offset, m, None, index)
        try:
            segment._load_sealed(size, logger, keep_damaged)
        except BaseException:
            segment.close(trim=False)
            raise
        return segment

    def _load_sealed(self, size: int, logger: logging.Logger, keep_damaged: bool = False) -> None:
        """Find the end of a sealed segment, check what follows it, rebuild its index if unsound."""
        index = self.index
        problem = index.first_problem(size, self._base_at, self.base_offset)
        if problem is None and not index.path.exists():
            problem = "file is missing"
        start, expected = 0, self.base_offset
        if problem is None and index.count:
            rel, start = index.entry(index.count - 1)
            expected += rel
        positions = []
        for pos, _, batch_size, _, next_offset in walk_spans(self._map, start, size, expected) if size else ():
            self.used, self.next_offset = pos + batch_size, next_offset
            positions.append(pos)
        try:
            self._check_sealed_tail(size)
        except DamagedLog as exc:
            if not keep_damaged:
                raise
            self.damaged = str(exc)
        if problem is not None:
            logger.warning("index %s is unsound (%s); rebuilt from the log", index.path, problem)
            index.close(trim=False)
            self.index = OffsetIndex.write_sealed(index.path, _sparse(self, positions),
                                                  interval_bytes=index.interval_bytes)

    def _check_sealed_tail(self, size: int) -> None:
        tail_end = nonzero_end(self._map, self.used, size, self._fd) if self._map is not None else self.used
        if tail_end > self.used:
            raise DamagedLog(
                f"sealed segment {self.log_path} is damaged: {tail_end - self.used} bytes at position "
                f"{self.used} (after offset {self.next_offset - 1}) are not valid batches; "
                "the replica must be re-fetched from a healthy leader"
            )

    def _base_at(self, pos: int) -> int | None:
        if self._map is None or pos + HEADER_SIZE > len(self._map):
            return None
        base, _, _, magic, _ = BATCH_SPAN.unpack_from(self._map, pos)
        return base if magic == MAGIC else None

    # --- queries -------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._fd is not None

    @property
    def capacity(self) -> int:
        return len(self._map) if self._map is not None else 0

    @property
    def buffer(self) -> mmap.mmap | None:
        """The map itself, for recovery and walks (no export is created)."""
        return self._map

    @property
    def fd(self) -> int | None:
        return self._fd

    def spans(self, start: int = 0) -> Iterator[tuple[int, int, int, int, int]]:
        """``walk_spans`` over this segment's batches."""
        if self._map is None or start >= self.used:
            return iter(())
        expected = BATCH_SPAN.unpack_from(self._map, start)[0] if start else self.base_offset
        return walk_spans(self._map, start, self.used, expected)

    def find(self, offset: int) -> tuple[int, int]:
        """``(position, base_offset)`` of the batch holding ``offset`` (< next_offset)."""
        m, pos = self._map, self.index.lookup(offset - self.base_offset)
        while pos < self.used:
            base, length, _, _, delta = BATCH_SPAN.unpack_from(m, pos)
            if offset <= base + delta:
                return pos, base
            pos += PREAMBLE_SIZE + length
        raise StorageError(f"offset {offset} is not in segment {self.log_path} ending at {self.next_offset}")

    def view(self, pos: int, upper_offset: int, max_bytes: int) -> memoryview:
        """Read-only view of whole batches from ``pos`` (see PartitionLog.read)."""
        m, end = self._map, pos
        while end < self.used:
            base, length = PREAMBLE.unpack_from(m, end)
            size = PREAMBLE_SIZE + length
            if base >= upper_offset or (end > pos and end + size - pos > max_bytes):
                break
            end += size
        with memoryview(m) as whole:
            return whole[pos:end].toreadonly()

    # --- changes (active segment) ---------------------------------------------------

    def write(self, batch: memoryview, *, base_offset: int, leader_epoch: int, next_offset: int) -> None:
        """Append one validated batch, stamping ``base_offset`` and ``leader_epoch`` in the map."""
        m, pos, size = self._map, self.used, len(batch)
        # Body first, then the stamps, then batch_length: see the module docstring.
        if size >= PWRITE_MIN_BYTES:
            self._pwrite(batch[MAGIC_POS:], pos + MAGIC_POS)
        else:
            m[pos + MAGIC_POS:pos + size] = batch[MAGIC_POS:]
        stamp_batch(m, pos, base_offset, leader_epoch)
        m[pos + BATCH_LENGTH_POS:pos + LEADER_EPOCH_POS] = batch[BATCH_LENGTH_POS:LEADER_EPOCH_POS]
        if self.index.wants_entry(pos):
            self.index.add(base_offset - self.base_offset, pos)
        self.used, self.next_offset = pos + size, next_offset
        self._mark_dirty(pos, pos + size)

    def _pwrite(self, data: memoryview, pos: int) -> None:
        """Write ``data`` at ``pos`` through the file, not the map: the same page cache pages
        (every map of the file sees them at once), without a page fault per fresh page."""
        fd = self._fd
        try:
            while data:
                n = os.pwrite(fd, data, pos)
                data, pos = data[n:], pos + n
        except OSError as exc:
            raise storage_error(exc, "write segment", self.log_path) from exc

    def truncate_at(self, pos: int, next_offset: int) -> None:
        """Remove every batch from ``pos`` on; their bytes are zeroed (a torn tail must not revive)."""
        self.zero(pos, self.used)
        self.index.truncate_at(pos)
        self.used, self.next_offset = pos, next_offset

    def zero(self, lo: int, hi: int) -> None:
        for start in range(lo, hi, len(_ZERO_CHUNK)):
            end = min(hi, start + len(_ZERO_CHUNK))
            self._map[start:end] = _ZERO_CHUNK[:end - start]
        if hi > lo:
            self._mark_dirty(lo, hi)

    def _mark_dirty(self, lo: int, hi: int) -> None:
        self._dirty = (lo, hi) if self._dirty is None else (min(lo, self._dirty[0]), max(hi, self._dirty[1]))

    def flush(self) -> None:
        """msync the written range and fsync the file; a sealed segment is fsynced by name."""
        if self._dirty is None:
            return
        lo, hi = self._dirty
        if self.writable:
            try:
                start = lo // PAGE_SIZE * PAGE_SIZE
                self._map.flush(start, hi - start)
                os.fsync(self._fd)
            except OSError as exc:
                raise storage_error(exc, "flush", self.log_path) from exc
        else:
            fsync_path(self.log_path)
        self._dirty = None

    def seal(self) -> None:
        """At roll: trim to the used length and keep the segment mapped read-only."""
        self._release(trim=True)
        try:
            fd = os.open(self.log_path, os.O_RDONLY)
            try:
                self._map = map_file(fd, os.fstat(fd).st_size, self.log_path, writable=False)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error(exc, "reopen sealed segment", self.log_path) from exc
        self.index.seal()

    def make_writable(self, capacity: int, interval_bytes: int) -> None:
        """Make a sealed segment active again (a truncation removed the segments after it)."""
        try:
            fd = os.open(self.log_path, os.O_RDWR)
        except OSError as exc:
            raise storage_error(exc, "reopen segment", self.log_path) from exc
        try:
            capacity = max(capacity, os.fstat(fd).st_size)
            preallocate(fd, capacity, self.log_path)
            m = map_file(fd, capacity, self.log_path, writable=True)
            self.index.make_writable(capacity_entries(capacity, interval_bytes))
        except BaseException:
            os.close(fd)
            raise
        release_map(self._map)
        self._map, self._fd = m, fd

    def close(self, *, trim: bool) -> None:
        """Release the map; trim an active segment to its used length when ``trim``."""
        trim_index = trim and self.writable
        self._release(trim=trim)
        self.index.close(trim=trim_index)

    def remove(self) -> None:
        self.close(trim=False)
        remove_file(self.log_path)
        remove_file(self.index.path)

    def _release(self, *, trim: bool) -> None:
        # Trimming under a live view could leave it pointing past EOF (SIGBUS on access),
        # so the file is trimmed only once the map is really gone.
        was_writable = self.writable
        unmapped = release_map(self._map)
        self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if trim and was_writable and unmapped:
            truncate_file(self.log_path, self.used)


def _sparse(segment: Segment, positions: list[int]) -> list[tuple[int, int]]:
    """Index entries for a segment's batch positions, by the interval rule of index.py."""
    entries, last = [], 0
    for pos in positions:
        if pos - last >= segment.index.interval_bytes:
            entries.append((segment._base_at(pos) - segment.base_offset, pos))
            last = pos
    return entries
