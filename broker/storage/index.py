"""Sparse offset index of one segment: ``<base>.index``, a hint for finding a batch quickly.

Format, little-endian, entries back to back, no header (``ENTRY``)::

    pos size field            meaning
      0   4  relative_offset  base_offset of the indexed batch minus the segment's base offset
      4   4  position         byte position of that batch's first header byte in ``<base>.log``

An entry is added for the batch about to be written at ``position`` when at least
``interval_bytes`` were written since the previous entry's position (or since the segment
start): ``position - last_position >= interval_bytes``. Both fields therefore strictly
increase, and the entry count is bounded by :func:`capacity_entries`.

The active segment's index file is preallocated for that bound and mapped read/write; the
entry count lives in memory only, because recovery rebuilds the active index from the log.
At roll and at a clean close the file is trimmed to its entries, so a sealed index's length
gives its count. A sealed index is checked on load (whole entries, increasing, each pointing
at a batch header with the right offset inside the log) and rebuilt from the log when it is
not sound: Kafka brokers once refused to start on a non-monotonic index (KAFKA-3919).

A lookup is a binary search for the greatest entry at or below the target, then the caller
walks batch headers forward from its position.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Callable, Iterable

from rillet.ipc.records import HEADER_SIZE

from .files import map_file, preallocate, release_map, storage_error, truncate_file, write_atomic

ENTRY = struct.Struct("<II")
ENTRY_SIZE = ENTRY.size
assert ENTRY_SIZE == 8, ENTRY_SIZE
MAX_RELATIVE_OFFSET = 2**32 - 1


def capacity_entries(log_capacity: int, interval_bytes: int) -> int:
    """Most entries a log of ``log_capacity`` bytes can need: entries are >= one batch apart."""
    return log_capacity // max(interval_bytes, HEADER_SIZE) + 1


class OffsetIndex:
    """The index of one segment; writable while its segment is active."""

    def __init__(self, path: Path, interval_bytes: int, m: mmap.mmap | None, count: int, writable: bool,
                 torn_bytes: int = 0) -> None:
        self.path = path
        self._torn_bytes = torn_bytes  # a trailing partial entry: the file is not sound
        self.interval_bytes = interval_bytes
        self._map = m
        self._count = count
        self._capacity = len(m) // ENTRY_SIZE if m is not None else 0
        self.writable = writable

    @classmethod
    def open_writable(cls, path: Path, *, capacity: int, interval_bytes: int) -> OffsetIndex:
        """Open (creating if needed) and preallocate for ``capacity`` entries; the count starts at 0."""
        m = _open_map(path, capacity * ENTRY_SIZE, writable=True)
        return cls(path, interval_bytes, m, 0, writable=True)

    @classmethod
    def open_sealed(cls, path: Path, *, interval_bytes: int) -> OffsetIndex:
        """Map a sealed index read-only; a missing file is an empty index (see ``first_problem``)."""
        if not path.exists():
            return cls(path, interval_bytes, None, 0, writable=False)
        m = _open_map(path, 0, writable=False)
        size = len(m) if m is not None else 0
        return cls(path, interval_bytes, m, size // ENTRY_SIZE, writable=False, torn_bytes=size % ENTRY_SIZE)

    @classmethod
    def write_sealed(cls, path: Path, entries: Iterable[tuple[int, int]], *, interval_bytes: int) -> OffsetIndex:
        """Replace the file with ``entries`` (a rebuilt index) and map it read-only."""
        write_atomic(path, b"".join(ENTRY.pack(rel, pos) for rel, pos in entries))
        return cls.open_sealed(path, interval_bytes=interval_bytes)

    # --- queries ---------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    def entry(self, i: int) -> tuple[int, int]:
        return ENTRY.unpack_from(self._map, i * ENTRY_SIZE)

    def entries(self) -> list[tuple[int, int]]:
        return [self.entry(i) for i in range(self._count)]

    @property
    def last_position(self) -> int | None:
        return self.entry(self._count - 1)[1] if self._count else None

    def wants_entry(self, position: int) -> bool:
        """Whether the batch about to be written at ``position`` gets an entry."""
        last = self.last_position
        return position - (last if last is not None else 0) >= self.interval_bytes

    def lookup(self, relative_offset: int) -> int:
        """Position of the greatest entry with relative offset <= ``relative_offset`` (0 if none)."""
        lo, hi = 0, self._count
        while lo < hi:
            mid = (lo + hi) // 2
            if ENTRY.unpack_from(self._map, mid * ENTRY_SIZE)[0] <= relative_offset:
                lo = mid + 1
            else:
                hi = mid
        return self.entry(lo - 1)[1] if lo else 0

    def first_problem(self, log_size: int, base_at: Callable[[int], int | None], base_offset: int) -> str | None:
        """Why this sealed index cannot be trusted, or None if it is sound.

        ``base_at(position)`` gives the base offset of a batch header at ``position`` of the
        log, or None when no header is there.
        """
        if self._torn_bytes:
            return f"{self._count * ENTRY_SIZE + self._torn_bytes} bytes is not a whole number of entries"
        previous = (-1, -1)
        for i in range(self._count):
            rel, pos = self.entry(i)
            if rel <= previous[0] or pos <= previous[1]:
                return f"entry {i} ({rel}, {pos}) does not follow ({previous[0]}, {previous[1]})"
            if pos + HEADER_SIZE > log_size:
                return f"entry {i} points at position {pos}, past the log's {log_size} bytes"
            if base_at(pos) != base_offset + rel:
                return f"entry {i} ({rel}, {pos}) does not point at the batch of offset {base_offset + rel}"
            previous = (rel, pos)
        return None

    # --- changes (writable only) -------------------------------------------------

    def add(self, relative_offset: int, position: int) -> None:
        # The capacity is the proven bound, so a full index cannot happen; should it, the
        # index stays a correct (sparser) hint.
        if self._count < self._capacity:
            ENTRY.pack_into(self._map, self._count * ENTRY_SIZE, relative_offset, position)
            self._count += 1

    def reset(self, entries: Iterable[tuple[int, int]]) -> None:
        self._count = 0
        for rel, pos in entries:
            self.add(rel, pos)

    def truncate_at(self, position: int) -> None:
        """Drop the entries of batches at or after ``position``."""
        while self._count and self.entry(self._count - 1)[1] >= position:
            self._count -= 1

    def seal(self) -> None:
        """Trim the file to its entries and keep it mapped read-only."""
        self.close(trim=True)
        sealed = OffsetIndex.open_sealed(self.path, interval_bytes=self.interval_bytes)
        self._map, self._capacity, self.writable = sealed._map, sealed._capacity, False

    def make_writable(self, capacity: int) -> None:
        """Re-extend a sealed index (its segment became active again after a truncation)."""
        count = self._count
        release_map(self._map)
        self._map = _open_map(self.path, capacity * ENTRY_SIZE, writable=True)
        self._capacity = len(self._map) // ENTRY_SIZE
        self._count, self.writable = count, True

    def close(self, *, trim: bool) -> None:
        release_map(self._map)
        self._map = None
        if trim and self.writable:
            truncate_file(self.path, self._count * ENTRY_SIZE)


def _open_map(path: Path, size: int, *, writable: bool) -> mmap.mmap | None:
    """Map ``path`` whole, first extending it to ``size`` bytes when writable."""
    try:
        fd = os.open(path, (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY, 0o600)
    except OSError as exc:
        raise storage_error(exc, "open", path) from exc
    try:
        if writable:
            preallocate(fd, size, path)
        return map_file(fd, os.fstat(fd).st_size, path, writable=writable)
    finally:
        os.close(fd)
