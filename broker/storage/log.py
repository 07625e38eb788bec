"""PartitionLog: one replica of one partition, stored as a directory of segments.

Directory layout (``<data>/spu-<id>/<topic>-<partition>/``)::

    name                          format          what
    <base:020d>.log               segment.py      record batches; base = offset of its first record
    <base:020d>.index             index.py        sparse offset -> position index of that segment
    replication.chk               checkpoint.py   high-watermark checkpoint (CHECKPOINT, 20 bytes)
    leader-epoch.chk              checkpoint.py   leader-epoch cache (EPOCHS_HEADER + EPOCH_ENTRY)
    <base:020d>.log.cut-<pos>     recovery.py     bytes a recovery cut from a torn tail, kept raw
    anything else                 -               ignored (temporary files of atomic writes, ...)

This module adds no binary format of its own. Strategy: the last segment is the active
one, preallocated and mapped read/write; the others are sealed (trimmed, mapped
read-only) and trusted. Offsets are contiguous from ``log_start_offset`` (the first
segment's base) to ``leo``; a segment's base is the leo at the moment it was created.
Open recovers the active segment (recovery.py) and checks that every sealed segment ends
exactly where the next one starts.

The SPU is single-threaded, so nothing here locks. Views returned by ``read`` point into
the segment maps: drop them before ``truncate_to`` or ``close``. If a view is still held,
those calls do not fail: the map is left for the view to keep alive and the file is not
trimmed under it, so the view stays readable (after a truncation it may show zeros, or
newer batches once the space is reused).

Writes: every check happens before anything changes (decide, then act). The only steps
that can fail on a healthy machine, preallocating a new segment (ENOSPC) and persisting
a new epoch, come before the batch is copied, so a failed append leaves ``leo`` and the
files as they were. A failed flush poisons the log for writes (Linux may drop dirty pages
after reporting a write-back error once): the SPU must reopen it and resync.
"""

from __future__ import annotations

import bisect
import logging
import re
from pathlib import Path
from typing import Callable

from rillet.ipc.errors import (
    Closed, CorruptBatch, DamagedLog, InvalidArgument, MessageTooLarge, OffsetOutOfRange, StorageError,
)
from rillet.ipc.records import BatchHeader, iter_batches, validate_batch

from .checkpoint import MAX_EPOCH, LeaderEpochCache, read_checkpoint, write_checkpoint
from .files import fsync_directory, storage_error
from .index import MAX_RELATIVE_OFFSET
from .recovery import RecoveryCut, recover_active
from .segment import Segment

SEGMENT_FILE = re.compile(r"^(\d{20})\.log$")
HIGH_WATERMARK_FILE = "replication.chk"
LEADER_EPOCH_FILE = "leader-epoch.chk"
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 2**31  # index positions are u32; batch lengths are i32
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024  # Fluvio's default; one map per segment
DEFAULT_INDEX_INTERVAL_BYTES = 4096  # Kafka's default: an entry per page of batches


def _byte_view(data: bytes | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class PartitionLog:
    """The segments of one replica. Build with :meth:`open`."""

    def __init__(self, directory: Path, segment_size: int, index_interval_bytes: int,
                 logger: logging.Logger) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.index_interval_bytes = index_interval_bytes
        self._logger = logger
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._unsynced: list[Segment] = []  # sealed segments with writes not yet fsynced
        self._dir_dirty = False  # segment files created or removed since the last flush
        self._report: list[RecoveryCut] = []
        self._epochs: LeaderEpochCache | None = None
        self._failure: str | None = None
        self._closed = False
        self._max_timestamps: dict[int, int] = {}   # sealed segment base -> newest record timestamp
        # Opened with keep_damaged: (segment, position, first offset, last offset, cause) of each
        # range of offsets the sealed segments should hold and do not (a damaged batch header).
        self.load_damage: list[tuple[str, int, int, int, str]] = []
        self._keep_damaged = False

    @classmethod
    def open(cls, directory: Path, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
             index_interval_bytes: int = DEFAULT_INDEX_INTERVAL_BYTES,
             logger: logging.Logger | None = None, keep_damaged: bool = False) -> PartitionLog:
        """Open (creating if missing) the replica in ``directory`` and recover its active segment.

        Raises InvalidArgument for sizes out of range and StorageError for an OS error or a
        damaged sealed segment (one that does not end where the next one starts: DamagedLog).
        With ``keep_damaged`` (a copy nobody else may hold whole) such a segment is opened up to
        its last whole batch and the offsets it lost are listed in ``load_damage``.
        """
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise InvalidArgument(
                f"segment_size={segment_size} is out of range [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        if index_interval_bytes < 0:
            raise InvalidArgument(f"index_interval_bytes={index_interval_bytes} is negative")
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, "create directory", directory) from exc
        log = cls(directory, segment_size, index_interval_bytes, logger or logging.getLogger(__name__))
        log._keep_damaged = keep_damaged
        try:
            log._load()
        except BaseException:
            log._release()
            raise
        return log

    def set_segment_size(self, segment_size: int) -> None:
        """The size of segments created from now on (a topic update); the active one keeps its own."""
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise InvalidArgument(f"segment_size={segment_size} is out of range [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        self.segment_size = segment_size

    def _load(self) -> None:
        try:
            names = [p.name for p in self.directory.iterdir()]
        except OSError as exc:
            raise storage_error(exc, "list", self.directory) from exc
        bases = sorted(int(m.group(1)) for name in names if (m := SEGMENT_FILE.match(name)))
        active_epochs: list[tuple[int, int]] = []
        if not bases:
            self._add(Segment.create(self.directory, 0, capacity=self.segment_size,
                                     interval_bytes=self.index_interval_bytes))
            self._dir_dirty = True
        else:
            for base in bases[:-1]:
                self._add(Segment.open_sealed(self.directory, base, interval_bytes=self.index_interval_bytes,
                                              logger=self._logger, keep_damaged=self._keep_damaged))
            self._check_chain(bases[-1])
            active, file_size = Segment.open_active(self.directory, bases[-1], capacity=self.segment_size,
                                                    interval_bytes=self.index_interval_bytes)
            self._add(active)
            cut, active_epochs = recover_active(active, file_size, self._logger)
            if cut is not None:
                self._report.append(cut)
        self._load_epochs(active_epochs)

    def _check_chain(self, active_base: int) -> None:
        for seg, next_base in zip(self._segments, self._bases[1:] + [active_base]):
            if seg.next_offset != next_base:
                cause = seg.damaged or (f"segment {seg.log_path} ends at offset {seg.next_offset} but the next "
                                        f"segment starts at {next_base}")
                if not self._keep_damaged or next_base < seg.next_offset:      # overlapping: nothing to serve
                    raise DamagedLog(f"{cause}: the log is damaged; the replica must be re-fetched from a "
                                     "healthy leader")
                self.load_damage.append((str(seg.log_path), seg.used, seg.next_offset, next_base - 1, cause))
            elif seg.damaged:
                self._logger.warning("%s (no offsets lost: the next segment starts where its last batch ends)",
                                     seg.damaged)

    def _load_epochs(self, active_epochs: list[tuple[int, int]]) -> None:
        self._epochs = LeaderEpochCache(self.directory / LEADER_EPOCH_FILE, logger=self._logger)
        if not self._epochs.loaded and self.leo > self.log_start_offset:
            self._epochs.reset(self._scan_epochs())
            self._logger.warning("leader-epoch cache %s rebuilt from the batch headers: %s",
                                 self._epochs.path, self._epochs.entries)
            return
        self._epochs.truncate_from(self.leo)
        self._epochs.assign_many((e, s) for e, s in active_epochs if e >= 0)

    def _scan_epochs(self) -> list[tuple[int, int]]:
        changes: list[tuple[int, int]] = []
        for seg in self._segments:
            for _, base, _, epoch, _ in seg.spans():
                if epoch >= 0 and (not changes or epoch > changes[-1][0]):
                    changes.append((epoch, base))
        return changes

    def _add(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._bases.append(segment.base_offset)

    # --- properties ------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._bases[0]

    @property
    def leo(self) -> int:
        """Log end offset: the offset the next record gets."""
        return self._segments[-1].next_offset

    @property
    def active_segment_path(self) -> Path:
        """The active segment's file (the SPU checks it still exists: broker/spu/health.py)."""
        return self._segments[-1].log_path

    @property
    def active_segment(self):
        """The segment appends go to (its ``next_offset`` is the leo, ``base_offset`` and
        ``used`` are what direct readers are told); for reading its fields, not for writing."""
        return self._segments[-1]

    @property
    def active_base_offset(self) -> int:
        """Base offset of the active segment (moves at roll; direct readers watch it)."""
        return self._segments[-1].base_offset

    @property
    def active_used(self) -> int:
        """Bytes of batches in the active segment (where its data ends)."""
        return self._segments[-1].used

    @property
    def size_bytes(self) -> int:
        return sum(seg.used for seg in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def recovery_report(self) -> list[RecoveryCut]:
        """What recovery cut at open (empty after a clean close or an intact crash)."""
        return list(self._report)

    @property
    def last_epoch(self) -> int:
        """The latest leader epoch in the log, or -1 before any append."""
        return self._epochs.latest_epoch

    @property
    def epochs(self) -> list[tuple[int, int]]:
        """The leader-epoch cache: ``(epoch, start_offset)`` pairs in order."""
        return self._epochs.entries

    @property
    def closed(self) -> bool:
        return self._closed

    def epoch_end_offset(self, epoch: int) -> int:
        """OffsetForLeaderEpoch: where ``epoch`` ends here (leo for the latest; -1 if unknown)."""
        return self._epochs.end_offset_for(epoch, self.leo)

    # --- writes ----------------------------------------------------------------

    def append(self, batch: bytes | memoryview, *, leader_epoch: int,
               header: BatchHeader | None = None) -> tuple[int, int]:
        """Leader path: append one whole batch, assigning offsets from leo; returns ``(base_offset, new_leo)``.

        The batch is validated (CorruptBatch), must fit a segment (MessageTooLarge), and is
        stamped with its base offset and ``leader_epoch`` in the segment map; the caller's
        buffer is never modified. ``leader_epoch`` may not be older than ``last_epoch``.
        ``header``: what ``records.validate_batch`` returned for these very bytes, when the
        caller ran it (the leader's replica does, first thing): then it is not run again.
        StorageError (naming the errno and the file) if a new segment or the epoch cache
        cannot be written; leo and the files are then unchanged.
        """
        self._check_writable()
        if not 0 <= leader_epoch <= MAX_EPOCH:
            raise InvalidArgument(f"leader_epoch {leader_epoch} is out of range [0, {MAX_EPOCH}]")
        if leader_epoch < self.last_epoch:
            raise InvalidArgument(f"leader_epoch {leader_epoch} is older than the log's latest epoch {self.last_epoch}")
        view = _byte_view(batch)
        if header is None:
            header = self._validate(view, 0)
        elif header.total_size > self.segment_size:
            raise MessageTooLarge(f"batch of {header.total_size} bytes exceeds segment_size={self.segment_size}")
        if header.total_size != len(view):
            raise CorruptBatch(f"append takes one batch: {len(view)} bytes given, the batch has {header.total_size}")
        base = self.leo
        self._write(view, header, base, leader_epoch)
        return base, self.leo

    def append_replicated(self, batches: bytes | memoryview) -> int:
        """Follower path: append already-stamped whole batches, the first at leo; returns the new leo.

        All batches are validated before any is written. Each batch is appended atomically;
        if an append fails (StorageError), the batches before it stay and leo covers them.
        """
        self._check_writable()
        view = _byte_view(batches)
        checked: list[tuple[int, BatchHeader]] = []
        pos, expected = 0, self.leo
        while pos < len(view):
            header = self._validate(view, pos)
            if header.base_offset != expected:
                if not checked:
                    raise StorageError(f"replica append at offset {header.base_offset} but leo is {expected}")
                raise StorageError(f"replicated batch at position {pos} has base offset {header.base_offset}, "
                                   f"expected {expected}")
            if header.leader_epoch < 0:
                raise CorruptBatch(f"replicated batch at offset {header.base_offset} has no leader epoch "
                                   f"({header.leader_epoch})")
            checked.append((pos, header))
            pos, expected = pos + header.total_size, header.next_offset
        for pos, header in checked:
            self._write(view[pos:pos + header.total_size], header, header.base_offset, header.leader_epoch)
        return self.leo

    def _validate(self, view: memoryview, pos: int) -> BatchHeader:
        header = validate_batch(view, pos, max_batch_bytes=MAX_SEGMENT_SIZE + 1)
        if header.total_size > self.segment_size:
            raise MessageTooLarge(f"batch of {header.total_size} bytes exceeds segment_size={self.segment_size}")
        return header

    def _write(self, batch: memoryview, header: BatchHeader, base: int, epoch: int) -> None:
        active = self._segments[-1]
        # The active segment keeps the size it was made with: a topic update changes the
        # size of the segments made after it (set_segment_size), never this one's mapping.
        if (active.used + header.total_size > min(self.segment_size, active.capacity)
                or base - active.base_offset > MAX_RELATIVE_OFFSET):
            active = self._roll()
        if epoch > self.last_epoch:
            self._epochs.assign(epoch, base)
        active.write(batch, base_offset=base, leader_epoch=epoch, next_offset=base + header.last_offset_delta + 1)

    def _roll(self) -> Segment:
        old = self._segments[-1]
        new = Segment.create(self.directory, self.leo, capacity=self.segment_size,
                             interval_bytes=self.index_interval_bytes)
        try:
            old.seal()
        except StorageError as exc:
            self._failure = f"sealing {old.log_path} failed: {exc}"
            new.remove()
            raise
        self._add(new)
        self._unsynced.append(old)
        self._dir_dirty = True
        self._logger.debug("rolled %s at offset %d", new.log_path, new.base_offset)
        return new

    # --- retention -------------------------------------------------------------

    def sealed(self) -> list[Segment]:
        """The sealed segments, oldest first (the scrub reads them: storage/scrub.py)."""
        return self._segments[:-1]

    def sealed_segments(self) -> list[tuple[int, int, int, int]]:
        """``(base_offset, next_offset, size_bytes, max_timestamp)`` of each sealed segment, oldest
        first (the active segment is never listed: retention never deletes it)."""
        out = []
        for seg in self._segments[:-1]:
            stamp = self._max_timestamps.get(seg.base_offset)
            if stamp is None:
                with memoryview(seg.buffer) as whole, whole[:seg.used] as view:
                    stamp = max((h.max_timestamp for _p, h in iter_batches(view)), default=-1)
                self._max_timestamps[seg.base_offset] = stamp      # a sealed segment never changes
            out.append((seg.base_offset, seg.next_offset, seg.used, stamp))
        return out

    def delete_oldest_segments(self, count: int) -> int:
        """Delete the ``count`` oldest sealed segments; returns the new log start offset.

        Offsets are never reused: the log start moves up, the log end stays.
        """
        self._check_writable()
        count = min(count, len(self._segments) - 1)
        for _ in range(max(count, 0)):
            seg = self._segments.pop(0)
            self._bases.pop(0)
            self._max_timestamps.pop(seg.base_offset, None)
            if seg in self._unsynced:
                self._unsynced.remove(seg)
            seg.remove()
            self._dir_dirty = True
            self._logger.info("retention deleted %s (offsets %d to %d)", seg.log_path, seg.base_offset,
                              seg.next_offset - 1)
        return self.log_start_offset

    def reset_to(self, offset: int) -> None:
        """Drop every segment and continue empty at ``offset`` (a follower whose log ends
        before its leader's log start: what it holds cannot be continued)."""
        self._check_writable()
        for seg in self._segments:
            seg.remove()
        self._segments, self._bases, self._unsynced = [], [], []
        self._max_timestamps.clear()
        self._add(Segment.create(self.directory, offset, capacity=self.segment_size,
                                 interval_bytes=self.index_interval_bytes))
        self._dir_dirty = True
        self._epochs.truncate_from(0)
        self._logger.warning("reset %s to start empty at offset %d", self.directory, offset)

    def truncate_to(self, offset: int) -> None:
        """Remove every batch with base_offset >= ``offset`` (a batch boundary, or leo: no-op).

        Later segments are deleted, the segment holding ``offset`` becomes the active one and
        the epoch cache forgets epochs starting at or after ``offset``. Durable after flush().
        """
        self._check_writable()
        start, leo = self.log_start_offset, self.leo
        if offset == leo:
            return
        if not start <= offset < leo:
            raise InvalidArgument(f"cannot truncate to offset {offset}: the log holds offsets [{start}, {leo})")
        i = bisect.bisect_right(self._bases, offset) - 1
        seg = self._segments[i]
        pos, base = seg.find(offset)
        if base != offset:
            raise InvalidArgument(f"cannot truncate to offset {offset}: it is inside the batch starting at {base}; "
                                  "use a batch boundary or the log end offset")
        if not seg.writable:
            seg.make_writable(self.segment_size, self.index_interval_bytes)
        try:
            while len(self._segments) > i + 1:
                self._segments[-1].remove()
                self._segments.pop()
                self._bases.pop()
                self._dir_dirty = True
            self._unsynced = [s for s in self._unsynced if s in self._segments[:i]]
            seg.truncate_at(pos, offset)
            self._epochs.truncate_from(offset)
        except StorageError as exc:
            self._failure = f"truncation to offset {offset} failed: {exc}"
            raise
        self._logger.info("truncated %s to offset %d (leo was %d)", self.directory, offset, leo)

    def flush(self) -> None:
        """msync and fsync every segment written since the last flush, and the directory."""
        self._check_writable()
        try:
            for seg in self._unsynced:
                seg.flush()
            self._unsynced.clear()
            self._segments[-1].flush()
            if self._dir_dirty:
                fsync_directory(self.directory)
                self._dir_dirty = False
        except StorageError as exc:
            self._failure = f"flush failed: {exc}"
            raise

    def close(self) -> None:
        """Clean close: flush, trim the active segment to its used length, release the maps.

        Idempotent. Views from ``read`` still held stay readable (see the module docstring).
        """
        if self._closed:
            return
        error = None
        if self._failure is None:
            try:
                self.flush()
            except StorageError as exc:
                error = exc
        self._closed = True
        try:
            self._release(trim=True)
        except StorageError as exc:
            error = error or exc
        if error is not None:
            raise error

    def _release(self, *, trim: bool = False) -> None:
        self._closed = True
        error = None
        for seg in self._segments:
            try:
                seg.close(trim=trim and seg.writable)
            except StorageError as exc:
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"partition log {self.directory} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failure is not None:
            raise StorageError(f"partition log {self.directory} refuses writes after a failure "
                               f"({self._failure}); reopen it")

    # --- reads -----------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, upper_offset: int | None = None) -> memoryview:
        """Whole batches from the one holding ``offset``: a read-only view into the segment map.

        Stops before a batch whose base_offset >= ``upper_offset`` (default and cap: leo) and
        before exceeding ``max_bytes``, but returns at least one whole batch if one qualifies,
        even a larger one. Reads from one segment per call. ``offset`` == leo (or >=
        ``upper_offset``) gives an empty view; outside [log_start_offset, leo] raises
        OffsetOutOfRange. Drop the view before truncate_to() or close().
        """
        self._check_open()
        if max_bytes < 0:
            raise InvalidArgument(f"max_bytes={max_bytes} is negative")
        start, leo = self.log_start_offset, self.leo
        if not start <= offset <= leo:
            raise OffsetOutOfRange(f"offset {offset} is out of range: log start offset {start}, log end offset {leo}")
        upper = leo if upper_offset is None else min(upper_offset, leo)
        if offset >= upper:
            return memoryview(b"")
        seg = self._segments[bisect.bisect_right(self._bases, offset) - 1]
        pos, _ = seg.find(offset)
        return seg.view(pos, upper, max_bytes)

    def scan_headers(self, on_header: Callable[[BatchHeader], None], segments: int | None = None) -> int:
        """Call ``on_header`` with the header of every batch in the last ``segments`` segments (None:
        all), oldest first; return the offset where the scan started. Reads headers only (the
        idempotent-producer state of broker/spu/producer_state.py is rebuilt from them)."""
        self._check_open()
        chosen = self._segments if segments is None else self._segments[-max(segments, 1):]
        for seg in chosen:
            buf = seg.buffer
            if buf is None:
                continue
            with memoryview(buf) as whole, whole[:seg.used] as view:
                for _pos, header in iter_batches(view):
                    on_header(header)
        return chosen[0].base_offset

    # --- high-watermark checkpoint ----------------------------------------------

    def read_high_watermark(self) -> int:
        """The checkpointed high watermark, clamped to [log_start_offset, leo] (damage -> log start)."""
        path = self.directory / HIGH_WATERMARK_FILE
        value = read_checkpoint(path, self.log_start_offset, logger=self._logger)
        if value > self.leo:
            self._logger.warning("high watermark %d in %s is past the log end offset %d; using %d",
                                 value, path, self.leo, self.leo)
        return min(max(value, self.log_start_offset), self.leo)

    def write_high_watermark(self, value: int) -> None:
        self._check_open()
        write_checkpoint(self.directory / HIGH_WATERMARK_FILE, value)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"[{self.log_start_offset}, {self.leo})"
        return f"<PartitionLog {self.directory} {state} segments={len(self._segments)}>"
