"""Direct reads: a consumer takes batches straight from the leader's segment files.

The leader SPU publishes, per replica, its log start, high watermark (HW), log end
offset (LEO) and active segment in its positions table (ipc/positions.py). A
:class:`DirectPath` maps that table read-only, opens the leader's replica directory
(``data/spu-<id>/<topic>-<p>/``) read-only, and reads whole batches below the
bound its isolation allows: HW for COMMITTED, LEO for UNCOMMITTED. The segment
files are preallocated, so the end of the data comes from the published bound,
never from a file's size. No record byte crosses the SPU's socket or event loop.

How it stays correct:

* Bytes are copied with ``pread`` from the file (one copy, page cache to the
  consumer, the same count as a socket read), not through a mapping: an SPU trims a
  file when it seals or closes a segment, and a load from a mapping past a file's
  end is SIGBUS, which would kill the consumer. A short read cannot kill anyone.
* A record is handed out only below the bound read *before* the copy (the SPU
  writes a batch whole before it publishes), and only if the row, read again
  *after* the copy, still names the same leader epoch and a log start at or below
  it. Retention may delete the segment being read: an open file stays readable, but
  once the published log start passed the offset the read ends in OffsetOutOfRange,
  as a socket fetch would. The CRC of every batch handed out is checked by the
  decoder (record_decoding.decode_records) as on the socket path.
* Leader change: the row's epoch or role changes, or the SC's metadata table names
  another leader or a newer epoch (checked whenever the reader waits). The path then
  reopens on the new leader's table and directory, within the same failover window
  as the socket path. A COMMITTED reader only ever read below a HW, which no election
  truncates, so it never skips, repeats or hands out a truncated record.
* Segment roll: a segment's data ends where the next file starts (files are named
  by base offset, a roll happens at a batch boundary), so the next file's name is
  the next offset; a seek lists the directory and uses the sparse ``.index``.

Waiting at the end of the log: a futex wait on the row's wake word (ipc/futex.py),
in slices of ``WAIT_SLICE_S`` so a leader change is noticed even when no publish
comes. A multi-partition reader waits on all its words at once (futex_waitv).

The switch: ``RILLET_DIRECT_READS=0`` forces the socket fetch, ``1`` (the default)
uses direct reads when the files and the positions table can be opened and falls
back to the socket otherwise (another user's cluster, an SPU without a table).
"""

from __future__ import annotations

import bisect
import os
import struct
import time

from rillet.ipc import env, futex
from rillet.ipc.errors import (
    Closed, CorruptBatch, MetadataTableBusy, MetadataTableError, NotLeader, OffsetOutOfRange,
    RilletError,
)
from rillet.ipc import positions
from rillet.ipc.positions import Positions, Role
from rillet.ipc.records import ATTRIBUTES_POS, MAGIC, PREAMBLE_SIZE
from rillet.ipc.positions_shm import PositionsReader

from ._enums import Isolation
from ._metadata import MetadataView

ENV_SWITCH = "RILLET_DIRECT_READS"
WAIT_SLICE_S = 0.1            # a waiter re-checks the metadata table this often (leader deaths publish nothing)
RETRY_SLEEP_S = 0.01          # between attempts to find the new leader's row
MIXED_SLICE_S = 0.005         # a merged wait over direct and socket streams checks the direct ones this often
INDEX_ENTRY = struct.Struct("<II")   # broker/storage/index.py: relative offset, position
# The header fields a walk needs (ipc/records.py): base_offset, batch_length, leader_epoch,
# magic, (crc and attributes skipped), last_offset_delta.
SPAN = struct.Struct("<qiiB6xi")
assert SPAN.size == ATTRIBUTES_POS + 2 + 4 == 27, SPAN.size
MAX_INDEX_BYTES = 64 * 1024 * 1024
_LEADER = int(Role.LEADER)
_NOTHING = memoryview(b"")
_WAKE_WORD = positions.unpack_wake                    # a row's futex word
_ROW_SEQ = positions.unpack_seq                       # a row's seqlock word
_ROW_BODY = positions.unpack_body
_WOKEN_HINT = positions.unpack_woken                  # a row's woken hint


class DirectUnavailable(RilletError):
    """Direct reads cannot be used for this partition (files or table unreadable): use the socket."""


def direct_reads_enabled(choice: bool | None = None) -> bool:
    """``choice`` if given, else the RILLET_DIRECT_READS switch (default on)."""
    if choice is not None:
        return bool(choice)
    return env.switch(ENV_SWITCH)


def _segment_name(base: int) -> str:
    return f"{base:020d}.log"


class _Segment:
    """An open segment file and the read position of the next batch in it."""

    __slots__ = ("base", "fd", "pos", "offset")

    def __init__(self, base: int, fd: int, pos: int, offset: int) -> None:
        self.base, self.fd, self.pos, self.offset = base, fd, pos, offset


class SegmentFiles:
    """The batches of one replica directory, read with pread. Not thread-safe."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._cur: _Segment | None = None
        # One buffer reused by every read: a fresh 1 MiB bytes per read would make glibc
        # map and fault it in each time (a third of the consumer's CPU in W2).
        self._buf = bytearray(SPAN.size)

    def _pread(self, fd: int, size: int, pos: int) -> memoryview:
        if len(self._buf) < size:
            self._buf = bytearray(size)
        with memoryview(self._buf) as whole:
            view = whole[:size]
        return view[:os.preadv(fd, [view], pos)]

    def close(self) -> None:
        cur, self._cur = self._cur, None        # taken first: a close from another thread closes once
        if cur is not None:
            try:
                os.close(cur.fd)
            except OSError:                     # EBADF: that other thread won
                pass

    @property
    def end_offset(self) -> int:
        """The offset after the batches the last read returned."""
        return self._cur.offset if self._cur is not None else -1

    def read(self, offset: int, max_bytes: int, bound: int, active: tuple[int, int]) -> memoryview:
        """Whole batches from the one holding ``offset``, those with base < ``bound``, up to
        ``max_bytes`` (at least one batch). ``active`` is the published ``(base offset, bytes
        used)`` of the active segment, whose preallocated tail is never read. Raises
        FileNotFoundError when no segment holds ``offset`` (retention removed it, or the
        directory changed under a leader change). The view is into a buffer the next read
        reuses: decode it first."""
        cur = self._cur
        if cur is None or cur.offset != offset:
            cur = self._seek(offset)
        data = self._take(cur, max_bytes, bound, active)
        if not len(data):                           # this segment is used up: the next one starts here
            try:
                nxt = self._open(cur.offset, cur.offset)
            except FileNotFoundError:
                if any(base > cur.offset for base in self._bases()):
                    # Later data exists, so this segment's batches end early: a damaged header. The
                    # stream asks the leader what is lost (ReportDamage) instead of waiting here.
                    raise CorruptBatch(f"segment {_segment_name(cur.base)} of {self.directory} holds no valid "
                                       f"batch at offset {cur.offset}, before the next segment") from None
                raise
            self.close()
            self._cur = cur = nxt
            data = self._take(cur, max_bytes, bound, active)
        return data

    def _take(self, cur: _Segment, max_bytes: int, bound: int, active: tuple[int, int]) -> memoryview:
        want = max(max_bytes, SPAN.size)
        if cur.base == active[0]:                   # a sealed segment's file ends where its data does
            want = min(want, active[1] - cur.pos)
        if want <= 0:
            return memoryview(b"")
        buf = self._pread(cur.fd, want, cur.pos)
        end, expected = 0, cur.offset
        while len(buf) - end >= SPAN.size:
            base, length, _epoch, magic, delta = SPAN.unpack_from(buf, end)
            if length <= 0 or magic != MAGIC or base != expected or base >= bound:
                break                               # zeros (end of data), or the bound
            size = PREAMBLE_SIZE + length
            if end + size > len(buf):
                if end == 0:                        # one batch larger than the chunk: read it whole
                    buf = self._pread(cur.fd, size, cur.pos)
                    if len(buf) == size:
                        continue
                break
            if end and end + size > max_bytes:
                break
            end += size
            expected = base + delta + 1
        cur.pos += end
        cur.offset = expected
        return buf[:end]

    def _open(self, base: int, offset: int) -> _Segment:
        fd = os.open(os.path.join(self.directory, _segment_name(base)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            pos = self._find(fd, base, offset)
        except BaseException:
            os.close(fd)
            raise
        return _Segment(base, fd, pos[0], pos[1])

    def _bases(self) -> list[int]:
        return sorted(int(name[:20]) for name in os.listdir(self.directory)
                      if name.endswith(".log") and len(name) == 24 and name[:20].isdigit())

    def _seek(self, offset: int) -> _Segment:
        self.close()
        bases = self._bases()
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            raise FileNotFoundError(f"no segment of {self.directory} holds offset {offset}")
        self._cur = cur = self._open(bases[i], offset)
        return cur

    def _find(self, fd: int, base: int, offset: int) -> tuple[int, int]:
        """``(position, base offset)`` of the batch holding ``offset`` (or where it will be)."""
        pos, batch_base = self._index_hint(base, offset), base
        if pos:
            head = os.pread(fd, SPAN.size, pos)
            if len(head) < SPAN.size or SPAN.unpack(head)[3] != MAGIC:
                pos = 0
            else:
                batch_base = SPAN.unpack(head)[0]
        while True:
            head = os.pread(fd, SPAN.size, pos)
            if len(head) < SPAN.size:
                return pos, batch_base
            b, length, _e, magic, delta = SPAN.unpack(head)
            if length <= 0 or magic != MAGIC or b != batch_base or offset <= b + delta:
                return pos, batch_base
            pos += PREAMBLE_SIZE + length
            batch_base = b + delta + 1

    def _index_hint(self, base: int, offset: int) -> int:
        """The position the sparse index gives for ``offset``, 0 when it gives none."""
        try:
            with open(os.path.join(self.directory, f"{base:020d}.index"), "rb") as f:
                raw = f.read(MAX_INDEX_BYTES)
        except OSError:
            return 0
        best, last_pos = 0, -1
        for rel, pos in INDEX_ENTRY.iter_unpack(raw[:len(raw) - len(raw) % INDEX_ENTRY.size]):
            if pos <= last_pos or base + rel > offset:      # zeros after the live entries, or past it
                break
            best, last_pos = pos, pos
        return best


class DirectPath:
    """Direct reads of one partition, across leader changes. Build with :meth:`open`."""

    def __init__(self, meta: MetadataView, topic: str, partition: int) -> None:
        self.meta = meta
        self.topic = topic
        self.partition = partition
        self.reads = 0                      # reads that handed out data (statistics)
        self.end_offset = -1                # the offset after the last read's batches
        self._table: PositionsReader | None = None
        self._files: SegmentFiles | None = None
        self._row = -1
        self._leader = -1
        self._epoch = -1
        # The attached row's words, for the hot path's own struct reads (set by _open_leader):
        # the table's view, the wake word's offset and address, the woken hint's offset.
        self._tbuf = None
        self._row_at = self._wake_at = self._wake_address = self._woken_at = 0
        self._raw_topic = positions.raw_topic(topic)
        self._generation = -1
        self._moved = False                 # the SC's table names another leader or epoch
        self._alive_check_at = 0.0          # when a waiter next checks that the leader's process lives

    @classmethod
    def open(cls, meta: MetadataView, topic: str, partition: int, deadline: float) -> "DirectPath | None":
        """A path on the current leader, or None when direct reads cannot be used here
        (no futex to sleep on: the socket's long poll waits better than a polling loop)."""
        if not futex.AVAILABLE:
            return None
        path = cls(meta, topic, partition)
        try:
            path._attach(deadline)
        except DirectUnavailable:
            path.close()
            return None
        except BaseException:
            path.close()
            raise
        return path

    # --- leader tracking ---
    def _attach(self, deadline: float, refresh: bool = False) -> None:
        """Open the leader's table and directory; retry while a new leader is being set up,
        until ``deadline`` (at least once). ``refresh``: re-read the SC's table first (after
        a failure: it may have been replaced by a restart; the metadata view then maps the new
        one, or raises the retriable ClusterUnavailable while there is none)."""
        while True:
            self._detach()
            try:
                snapshot = self.meta.snapshot(refresh)
                row = self.meta.leader(self.topic, self.partition)
                self._generation = snapshot.generation
                self._open_leader(row.leader, row.leader_epoch)
                return
            except DirectUnavailable:
                raise
            except RilletError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
            refresh = True
            time.sleep(RETRY_SLEEP_S)

    def _open_leader(self, leader: int, epoch: int) -> None:
        paths = self.meta.paths
        try:
            self._table = PositionsReader.open(paths.positions_shm_name(leader))
        except MetadataTableError as exc:
            if exc.retriable:
                raise
            raise DirectUnavailable(str(exc)) from exc
        directory = str(paths.replica_dir(leader, self.topic, self.partition))
        if not os.access(directory, os.R_OK | os.X_OK):
            raise DirectUnavailable(f"cannot read {directory}")
        self._files = SegmentFiles(directory)
        self._leader, self._epoch = leader, epoch
        index = self._table.find(self.topic, self.partition)
        if index is None:
            raise NotLeader(f"SPU {leader} has not published {self.topic}/{self.partition} yet")
        self._row = index
        self._tbuf = self._table.buffer
        self._row_at = positions.row_offset(index)
        self._wake_at = positions.wake_offset(index)
        self._wake_address = self._table.address + self._wake_at
        self._woken_at = positions.woken_offset(index)
        self.positions()                     # leader at this epoch yet?

    def _detach(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
        if self._table is not None:
            self._table.close()
            self._table = None
        self._row = -1
        self._tbuf = None
        self._moved = False

    def positions(self) -> Positions:
        """The leader's published row; NotLeader when it no longer leads at our epoch."""
        table = self._table
        # _row < 0: an attach that found the leader's table but not yet its row (a leader
        # just moved there) left it half done; reading row -1 would read out of bounds.
        if table is None or self._moved or self._row < 0:
            raise NotLeader(f"no leader attached for {self.topic}/{self.partition}")
        try:
            row = table.row(self._row)
        except MetadataTableBusy as exc:        # its SPU died inside a publish: find the new leader
            raise NotLeader(f"SPU {self._leader}'s row for {self.topic}/{self.partition} is stuck mid-write") from exc
        if (row.role != Role.LEADER or row.leader_epoch != self._epoch or row.topic != self.topic
                or row.partition != self.partition):
            raise NotLeader(f"SPU {self._leader} does not lead {self.topic}/{self.partition} at epoch {self._epoch} "
                            f"(its row: {row.role.name} at epoch {row.leader_epoch})")
        return row

    def _bounds(self) -> tuple:
        """:meth:`positions` as the row's raw fields (positions.read_row_fields), compared
        with what this path expects without building a Positions: the read path's two row
        reads per read. NotLeader as positions() raises it."""
        if self._table is None or self._moved or self._row < 0:
            raise NotLeader(f"no leader attached for {self.topic}/{self.partition}")
        # The seqlock read of positions.read_row_fields, inlined (this runs twice per read).
        buf, at = self._tbuf, self._row_at
        try:
            before = _ROW_SEQ(buf, at)[0]
            fields = _ROW_BODY(buf, at + positions.BODY_OFFSET)
            stable = not before & 1 and _ROW_SEQ(buf, at)[0] == before
        except (ValueError, TypeError) as exc:   # released by a close from another thread
            raise Closed(f"direct reader of {self.topic}/{self.partition} is closed") from exc
        if not stable:                           # mid-write: the table's read retries
            try:
                fields = self._table.row_fields(self._row)
            except MetadataTableBusy as exc:
                raise NotLeader(f"SPU {self._leader}'s row for {self.topic}/{self.partition} is stuck mid-write") from exc
        if (fields[3] != _LEADER or fields[2] != self._epoch or fields[1] != self._raw_topic
                or fields[0] != self.partition):
            self.positions()                    # raises NotLeader, saying what the row holds now
        return fields

    def _check_metadata(self) -> None:
        """Note when the SC's table moved this partition to another leader or epoch, or shows
        the leader SPU with another pid (a dead leader publishes nothing more; a restarted
        one publishes in a new object): positions() then raises NotLeader until reattached."""
        now = time.monotonic()
        if now >= self._alive_check_at and self._table is not None:
            # A SIGKILLed leader publishes nothing and no table may change for a while (its
            # whole cluster stopped, or an SC that is away): its own process tells.
            self._alive_check_at = now + WAIT_SLICE_S
            if not self._table.writer_alive():
                self._moved = True
        snapshot = self.meta.snapshot()
        if snapshot.generation != self._generation:
            self._generation = snapshot.generation
            row = snapshot.partition(self.topic, self.partition)
            spu = snapshot.spu(self._leader)
            if row is not None and (row.leader != self._leader or row.leader_epoch != self._epoch):
                self._moved = True
            elif spu is not None and spu.pid and self._table is not None and spu.pid != self._table.spu_pid:
                self._moved = True          # the SPU was restarted: its table is a new object

    def _failover(self, fn, deadline: float):
        """``fn()``; after a leader change, reattach (to the new leader, or the restarted one)
        and run it again, until ``deadline``, at least once. Past it, the retriable error goes
        to the stream, whose own failover decides how long to keep trying (client/_outage.py)."""
        attached = False
        while True:
            try:
                return fn()
            except (NotLeader, FileNotFoundError) as exc:
                if attached and time.monotonic() > deadline:
                    if isinstance(exc, NotLeader):
                        raise
                    raise NotLeader(f"no leader of {self.topic}/{self.partition} to read from: {exc}") from exc
                self._attach(deadline, refresh=True)
                attached = True

    # --- the stream's side ---
    def offsets(self, deadline: float) -> tuple[int, int, int]:
        row = self._failover(self.positions, deadline)
        return row.log_start, row.hw, row.leo

    def fetch(self, offset: int, max_bytes: int, committed: bool, block: bool, window_s: float = 0.0) -> memoryview:
        """A stream's step: batches at ``offset``, or (when ``block``) a wait for a publish
        and an empty view. A leader change is ridden through for ``window_s`` (at least one
        reattach); then its retriable error is raised for the stream's failover."""
        # The wake word's value is taken before the read: a publish after it moves the word,
        # so when the read finds nothing new the wait sleeps on that value without reading
        # the row again (one row read less per record for a reader at the end of the log).
        before = self._wake_value() if block else None
        data = self.read(offset, max_bytes, committed, time.monotonic() + window_s)
        if not len(data) and block:
            if before is not None and before[0] is self._table and before[1] == self._row:
                if self._sleep(before[2], before[3], WAIT_SLICE_S) and self._table is not None:
                    # A publish moved the word: read now, in this call, so that a reader at the
                    # end of the log runs the stream's layers above once per record instead of
                    # twice (an empty step, then the read). None of them changes in the sleep:
                    # a close from another thread detaches (_table None), and then no read.
                    data = self.read(offset, max_bytes, committed, time.monotonic() + window_s)
            else:                                # reattached meanwhile: that value is another table's
                self.wait(offset, committed, WAIT_SLICE_S)
        return data

    def _wake_value(self) -> tuple | None:
        """``(table, row, address, value)`` of the wake word now, or None when detached."""
        table = self._table
        if table is None or self._moved:
            return None
        try:
            value = _WAKE_WORD(self._tbuf, self._wake_at)[0]
        except (ValueError, TypeError):          # released by a close from another thread
            return None
        return table, self._row, self._wake_address, value

    def _sleep(self, address: int, value: int, timeout_s: float) -> bool:
        """Sleep on a wake word whose ``value`` was taken before a read that found nothing.
        True when the word moved (a publish came)."""
        try:
            self._check_metadata()               # a dead or replaced leader publishes nothing
        except (NotLeader, Closed):
            return False
        if self._moved:
            return False                         # the next read reattaches
        return self._sleep_on([(self, address, value)], timeout_s)

    def read(self, offset: int, max_bytes: int, committed: bool, deadline: float) -> memoryview:
        """Batches at ``offset`` below the visible bound; empty when there are none yet."""
        return self._failover(lambda: self._read(offset, max_bytes, committed), deadline)

    def _read(self, offset: int, max_bytes: int, committed: bool) -> memoryview:
        _p, _t, _e, _r, log_start, hw, leo, active_base, active_used = self._bounds()
        if not log_start <= offset <= leo:
            raise OffsetOutOfRange(f"offset {offset} is outside {self.topic}/{self.partition}: valid offsets are "
                                   f"{log_start} to {leo}")
        bound = hw if committed else leo
        if offset >= bound:                      # the wait checks the SC's table (a dead leader)
            return _NOTHING
        try:
            data = self._files.read(offset, max_bytes, bound, (active_base, active_used))
        except FileNotFoundError:
            after = self.positions()
            if offset < after.log_start:
                raise OffsetOutOfRange(f"offset {offset} of {self.topic}/{self.partition} was deleted by retention: "
                                       f"the first available offset is {after.log_start}") from None
            raise
        except OSError as exc:                   # unreadable now (permissions, I/O): the socket takes over
            raise DirectUnavailable(f"cannot read {self._files.directory}: {exc}") from exc
        after_start = self._bounds()[4]          # hand out nothing retention removed meanwhile
        if offset < after_start:
            raise OffsetOutOfRange(f"offset {offset} of {self.topic}/{self.partition} was deleted by retention: "
                                   f"the first available offset is {after_start}")
        if len(data):
            self.reads += 1
            self.end_offset = self._files.end_offset
        return data

    def wait(self, offset: int, committed: bool, timeout_s: float) -> None:
        """Sleep until a publish may have made ``offset`` visible, ``timeout_s`` at most."""
        self.wait_many([(self, offset, committed)], timeout_s)

    def wake_word(self, offset: int, committed: bool) -> tuple[int, int] | None:
        """The futex word to sleep on, or None when ``offset`` is visible already (or the
        leader changed: the next read finds out)."""
        if self._table is None or self._row < 0:     # not (fully) attached: the next read attaches
            return None
        try:
            self._check_metadata()
            address, value = self._table.wake_word(self._row)
            row = self.positions()           # after taking the value: a publish in between moves it
        except (NotLeader, Closed):          # the next read reattaches
            return None
        return None if (row.hw if committed else row.leo) > offset else (address, value)

    @staticmethod
    def wait_many(waits: list[tuple["DirectPath", int, bool]], timeout_s: float) -> None:
        if any(path._table is None for path, _o, _c in waits):
            time.sleep(timeout_s)                # in an outage: the caller's timeout is its next try
            return
        words = []
        for path, offset, committed in waits:
            word = path.wake_word(offset, committed)
            if word is None:
                return
            words.append(word)
        DirectPath._sleep_on([(path, address, value) for (path, _o, _c), (address, value) in zip(waits, words)],
                             timeout_s)

    @staticmethod
    def _sleep_on(words: list[tuple["DirectPath", int, int]], timeout_s: float) -> bool:
        """Sleep on ``(path, address, value)`` wake words until one moves; relay the wake.
        True when a word moved."""
        timeout_s = min(timeout_s, WAIT_SLICE_S)
        if len(words) > futex.MAX_WAITV:         # futex_waitv's limit: poll the first ones in short slices
            words, timeout_s = words[:futex.MAX_WAITV], min(timeout_s, MIXED_SLICE_S)
        moved = False
        try:
            if len(words) == 1:
                futex.wait(words[0][1], words[0][2], timeout_s)
            else:
                futex.wait_any([(address, value) for _path, address, value in words], timeout_s)
            for path, address, value in words:
                table = path._table
                if table is None:
                    continue
                buf = path._tbuf
                now = _WAKE_WORD(buf, path._wake_at)[0]
                if now != value:
                    moved = True
                    # Pass the publish on (see futex.py), unless the SPU's own wake found nobody
                    # else asleep: then this syscall per record would wake no one.
                    if _WOKEN_HINT(buf, path._woken_at)[0] != positions.woken_mark(now):
                        futex.wake(address, futex.RELAY_FANOUT)
        except (OSError, Closed, ValueError, TypeError):   # closed from another thread meanwhile
            pass
        return moved

    def close(self) -> None:
        self._detach()


def wait_streams(streams: list, timeout_s: float, wait_sockets) -> None:
    """Wait for any of a merged reader's partition ``streams``: on futexes when all read
    directly, with ``wait_sockets(fds, timeout_s)`` when none does, and on the sockets in
    short slices when they are mixed (a fallback case)."""
    direct = [(s._direct, s.next_offset, s.isolation == Isolation.ReadCommitted)
              for s in streams if s._direct is not None]
    if not direct:
        wait_sockets([s.fileno() for s in streams], timeout_s)
    elif len(direct) == len(streams):
        DirectPath.wait_many(direct, timeout_s)
    else:
        wait_sockets([s.fileno() for s in streams], min(timeout_s, MIXED_SLICE_S))
