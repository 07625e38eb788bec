"""Consumers: streams of records from partitions, fetched with long polls.

A partition stream keeps one fetch request in flight while the caller works through
the previous answer: the next offset is known from the batch headers, so the request
goes out before the records are decoded. Records before the requested offset (a
batch may start earlier) are skipped; a partial trailing batch never arrives (the
SPU sends whole batches). On a leader change or a broken connection the stream
re-reads the metadata table and resumes at the next offset it has not delivered.
The same holds across a cluster restart (the metadata view maps the new table): a
following stream waits for as long as the cluster is away, retrying with a backoff
capped at 1 s (client/_outage.py); a ``disable_continuous`` stream gives up after
FAILOVER_WINDOW_S with one error.

The hot path: one fetch answer is decoded in one call into a list of final
``Record`` objects (record_decoding.decode_records; the offset bounds apply per batch, not per
record), and the stream hands that list out as it is (``next_batch``) or walks it
with a list iterator: ``for record in stream`` runs an ``itertools.chain`` over the
buffered lists (see :func:`chained`), so between the socket and the caller's loop
body a record costs no Python-level call at all; ``next(stream)`` costs one.

Waiting costs nothing and wakes at once: the SPU holds a fetch until a record is
there (long poll), and a reader of several partitions waits on all their sockets
with one ``poll()`` call. No client sleeps to wait for data.

SmartModules (client/_smartmodule.py): a stream given modules runs them on each batch of
records it decodes, by either path, before buffering them; a module failure is kept and raised
once the records before it are handed out, as damaged records are.

Direct reads (client/_direct.py; ``RILLET_DIRECT_READS=0`` forces the socket): a
stream with a ``DirectPath`` reads the leader's files itself. ``_open``, ``_step`` and
the merged wait choose the path; an unusable direct path falls back to the socket.

Modules: this one holds the partition stream and the legacy consumers; the record buffer
and the chain over it are client/_record_buffer.py, the merged reader of several
partitions client/_merged_stream.py, direct reads client/_direct.py.

Start positions (``Offset``) resolve when a stream opens, by :func:`start_position`:
relative forms clamp to the log's available range (records removed by retention are
skipped); ``absolute(n)`` outside the log is OffsetOutOfRange naming the valid range.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterator

from rillet.ipc import messages as m
from rillet.ipc.connection import Connection, raise_for_error
from rillet.ipc.errors import (
    Closed, CompressionError, CorruptBatch, InvalidArgument, OffsetOutOfRange, RecordsLost, RilletError, Timeout,
)
from rillet.ipc.names import validate_name
from rillet.ipc.record_decoding import decode_records
from rillet.ipc.records import iter_batches

from ._damage import leader_verdict, log_skip, lost_range
from ._direct import DirectPath, DirectUnavailable, direct_reads_enabled
from ._enums import Isolation
# ASYNC_SLICE_S and the merged stream are taken from here by the consumer iterator and the package.
from ._merged_stream import ASYNC_SLICE_S, MultiPartitionStream  # noqa: F401
from ._metadata import MetadataView
from ._offsets import DEFAULT_MAX_BYTES, start_position
from ._outage import Failover
from ._record import Offset, Record
from ._record_buffer import RecordBuffer, chained
from ._smartmodule import RecordTransform, resolve_modules, smartmodule_invocation

LONG_POLL_MS = 1000                  # one fetch waits at most this long for new records
REPLY_GRACE_S = 10.0                 # a fetch unanswered this long past its long poll: the SPU is stuck
_DROPPED = object()                 # a direct read found the direct path unusable
FAILOVER_WINDOW_S = 30.0             # how long a disable_continuous stream looks for a leader (or the
                                     # cluster); a following stream looks for as long as it takes


class ConsumerConfig:
    """Options of ``stream_with_config`` (Fluvio's setters return None; these return
    the config, so chaining works too)."""

    def __init__(self) -> None:
        self._disable_continuous = False
        self._max_bytes = DEFAULT_MAX_BYTES
        self._isolation = Isolation.ReadUncommitted
        self._smartmodules: list = []
        self._skip_damaged = False

    def smartmodule(self, name: str | None = None, path: str | None = None, kind=None,
                    params: dict[str, str] | None = None, aggregate=None) -> None:
        """Attach a SmartModule by registered ``name`` or ``.wasm`` ``path`` (Fluvio's checks and
        messages); called again, the modules apply in order (a chain). ``params`` go to the
        module's ``init``; ``aggregate`` is an aggregate's initial accumulator (bytes). The
        modules run in this process on the records the stream reads (see _smartmodule.py)."""
        self._smartmodules.append(smartmodule_invocation(name, path, kind, params, aggregate))

    def disable_continuous(self, val: bool = True) -> "ConsumerConfig":
        self._disable_continuous = bool(val)
        return self

    def max_bytes(self, max_bytes: int) -> "ConsumerConfig":
        if max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be positive, got {max_bytes}")
        self._max_bytes = int(max_bytes)
        return self

    def isolation(self, isolation: Isolation | str) -> "ConsumerConfig":
        self._isolation = Isolation.parse(isolation)
        return self

    def skip_damaged(self, val: bool = True) -> "ConsumerConfig":
        """Step past records lost to damage (RecordsLost) instead of raising: each range skipped
        is logged as a warning on the "rillet" logger and kept in the stream's ``skipped``."""
        self._skip_damaged = bool(val)
        return self


class PartitionStream:
    """Iterator of :class:`Record` from one partition.

    ``stored_offset`` is a named consumer's last seen offset: relative start offsets
    then count from the record after it. ``end_offset`` (inclusive) ends the stream.
    """

    def __init__(self, meta: MetadataView, topic: str, partition: int, start: Offset, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, isolation: Isolation = Isolation.ReadUncommitted,
                 continuous: bool = True, end_offset: int | None = None, stored_offset: int | None = None,
                 direct: bool | None = None, skip_damaged: bool = False,
                 on_skip: Callable[[RecordsLost], None] | None = None, smartmodules: list | None = None) -> None:
        if not isinstance(start, Offset):
            raise InvalidArgument(f"stream needs an Offset, got {type(start).__name__}")
        # SmartModules (resolved ModuleSpecs) run here, on what this stream decodes; a module
        # failure is raised once the records before it are handed out (_at_end).
        self._transform = RecordTransform(smartmodules, partition, Record) if smartmodules else None
        self._sm_error: RilletError | None = None
        self.meta = meta
        self.topic = topic
        self.partition = partition
        self.max_bytes = max_bytes
        self.isolation = isolation
        self.continuous = continuous
        self._failover = Failover(f"{topic}/{partition}", None if continuous else FAILOVER_WINDOW_S)
        self.next_offset: int | None = None    # known once the log's range is
        self._conn: Connection | None = None
        self._pending: int | None = None       # cid of the fetch in flight
        self._sent_at = 0.0
        self._buffer = RecordBuffer()
        self._closed = False
        # Damaged records (RecordsLost): raised once the records before them are handed out, or
        # stepped past with skip_damaged (on_skip told, default: a warning in the "rillet" log).
        self.skip_damaged = skip_damaged
        self._on_skip = on_skip or log_skip
        self._lost: RecordsLost | None = None
        self.skipped: list[RecordsLost] = []
        # A bad batch this reader met before the leader knew: asked about first (leader_verdict).
        self._suspect: RecordsLost | None = None
        self._whole_at: int | None = None     # the leader said whole here; a second failure is lost
        self._direct: DirectPath | None = None     # direct reads from the leader's files, if usable
        self._direct_reads = 0                     # of paths already dropped (statistics)
        if direct_reads_enabled(direct):
            self._direct = DirectPath.open(meta, topic, partition, time.monotonic() + FAILOVER_WINDOW_S)
        log_start, hw, leo = self._open()
        visible_end = hw if isolation == Isolation.ReadCommitted else leo
        try:
            self.next_offset = start_position(start, log_start, hw, visible_end, stored_offset, where=f"{topic}/{partition}")
            if self.next_offset > leo:
                raise OffsetOutOfRange(
                    f"offset {self.next_offset} is outside {topic}/{partition}: valid offsets are {log_start} to {leo}")
        except OffsetOutOfRange:
            self.close()
            raise
        self.opened_at = self.next_offset      # where reading started (what it read: opened_at to next_offset)
        # disable_continuous: stop at what exists when the stream opens.
        self.stop_at = None if continuous else visible_end
        if end_offset is not None:
            self.stop_at = end_offset + 1 if self.stop_at is None else min(self.stop_at, end_offset + 1)

    # --- iteration ---
    def __iter__(self) -> Iterator[Record]:
        return chained(self._refill)

    def __next__(self) -> Record:
        for record in self._buffer.it:
            return record
        if not self._wait_records():
            raise StopIteration
        return next(self._buffer.it)

    def _refill(self) -> Iterator[Record] | None:
        return self._buffer.it if self._wait_records() else None

    def next_batch(self) -> list[Record]:
        """The records of one fetch (waiting for one if none is buffered); [] at the end."""
        if not self._wait_records():
            return []
        return self._buffer.take()

    def _wait_records(self) -> bool:
        """Fetch until records are buffered; False at the end of the stream."""
        # ``buffer.it.__length_hint__()`` is len(buffer) without its Python-level __len__:
        # this runs once per record for a reader at the end of the log.
        if not self._buffer.it.__length_hint__():
            self._buffer.clear()
        while not self._buffer.it.__length_hint__():
            if self._at_end():
                return False
            self._step(block=True)
        return True

    @property
    def finished(self) -> bool:
        """Nothing more will come: closed, or past the end offset with nothing buffered."""
        return not self._buffer.it.__length_hint__() and (self._closed or (self.stop_at is not None and self.next_offset >= self.stop_at))

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._drop_direct()

    def statistics(self) -> dict:
        """Which path the stream reads by, and how many direct reads handed out data."""
        return {"direct": self._direct is not None,
                "direct_reads": self._direct_reads + (self._direct.reads if self._direct is not None else 0)}

    def __enter__(self) -> "PartitionStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- stepping (used by the merged stream too) ---
    def _at_end(self) -> bool:
        if self._sm_error is not None and not len(self._buffer):
            self.close()
            raise self._sm_error
        if self._lost is not None and not len(self._buffer):
            self._step_past_lost()
        if self.finished:
            self.close()
            return True
        return False

    def fileno(self) -> int:
        """The socket a waiter should watch, or -1 when not connected."""
        conn = self._conn
        return conn.fileno() if conn is not None and not conn.closed else -1

    def _step_past_lost(self) -> None:
        lost, self._lost = self._lost, None
        if not self.skip_damaged:
            raise lost
        self.skipped.append(lost)
        self._on_skip(lost)

    def _step(self, block: bool) -> bool:
        """Send a fetch if none is in flight, then take its answer: waiting for it when
        ``block``, else only if it has already arrived. True when an answer was absorbed."""
        if self._lost is not None or self._sm_error is not None:
            return False                  # nothing after damaged records (or a failed module) before they are reported
        if self._suspect is not None:
            return self._ask_leader(block)
        if self._direct is not None:
            read = self._direct_step(block)
            if read is not None:
                return read
        try:
            reply = self._with_failover(lambda conn: self._receive(conn, block), block)
        except RecordsLost as lost:       # the SPU's scrub knows the damage: it serves up to it
            if lost.last_offset < self.next_offset:
                raise
            self.next_offset, self._lost = lost.last_offset + 1, lost
            return False
        if reply is None:
            return False
        self._absorb(reply)
        return True

    def _ask_leader(self, block: bool) -> bool:
        suspect = self._suspect
        verdict = (suspect if self._whole_at == suspect.first_offset
                   else leader_verdict(self._with_failover, self.topic, self.partition, suspect, block))
        if verdict is None:
            return False
        self._suspect, self._pending = None, None
        if verdict is True:               # whole where the leader is now: read it again from there
            self._whole_at = suspect.first_offset
        else:
            self.next_offset, self._lost = max(self.next_offset, verdict.last_offset + 1), verdict
        return False

    def _receive(self, conn: Connection, block: bool):
        if self._pending is None:
            self._pending = self._request(conn)
        while True:
            if block:
                reply = conn.recv(timeout_s=LONG_POLL_MS / 1000 + REPLY_GRACE_S)
            else:
                reply = conn.poll()
                if reply is None:
                    if time.monotonic() - self._sent_at > LONG_POLL_MS / 1000 + REPLY_GRACE_S:
                        raise Timeout(f"no answer to a fetch of {self.topic}/{self.partition} from {conn.path}")
                    return None
            if reply.cid == self._pending:
                self._pending = None
                return raise_for_error(reply)

    def _direct_step(self, block: bool) -> bool | None:
        """One direct read (or a wait for a publish), with the stream's failover around it
        (the socket path's rules). None when the direct path cannot be used any more: the
        socket path takes over."""
        def attempt():
            try:
                return self._direct.fetch(self.next_offset, self.max_bytes,
                                          self.isolation == Isolation.ReadCommitted, block)
            except DirectUnavailable:
                return _DROPPED
            except CorruptBatch as exc:     # no whole batch where one must be: ask the leader
                return exc
        data = self._retrying(attempt, block)
        if data is None:                    # the next try is not due
            return False
        if data is _DROPPED:
            self._drop_direct()
            return None
        if isinstance(data, CorruptBatch):
            self._suspect = RecordsLost.of(self.topic, self.partition, self.next_offset, self.next_offset, str(data))
            return False
        if len(data):
            self._absorb_bytes(data, self._direct.end_offset)
        return bool(len(data))

    def _drop_direct(self) -> None:
        if self._direct is not None:
            self._direct_reads += self._direct.reads
            self._direct.close()
            self._direct = None

    def _open(self) -> tuple[int, int, int]:
        if self._direct is not None:
            try:
                return self._direct.offsets(time.monotonic() + FAILOVER_WINDOW_S)
            except DirectUnavailable:
                self._drop_direct()
        reply = self._with_failover(lambda conn: conn.call(m.OffsetsRequest(conn.next_cid(), self.topic, self.partition)))
        return reply.log_start, reply.hw, reply.leo

    def _connection(self, refresh: bool) -> Connection:
        if self._conn is None or self._conn.closed:
            row = self.meta.leader(self.topic, self.partition, refresh=refresh)
            self._conn = Connection(self.meta.spu_socket(row.leader), client_id="rillet-consumer")
            self._pending = None
        return self._conn

    def _with_failover(self, fn, block: bool = True):
        """Run ``fn(connection)``; on a retriable error, find the leader again and retry
        (see :meth:`_retrying`). The outage ends with the first answer, not with a send
        that merely did not fail."""
        def attempt():
            try:
                return fn(self._connection(refresh=self._failover.active))
            except RilletError as exc:
                if exc.retriable:
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
                    self._pending = None
                raise
        return self._retrying(attempt, block)

    def _retrying(self, attempt, block: bool):
        """``attempt()`` until it returns without a retriable error; its result.

        Retries back off (10 ms doubling to 1 s). A following stream retries for as
        long as it takes (a cluster restart included); a disable_continuous one
        raises once the outage is FAILOVER_WINDOW_S old. Without ``block``, a stream
        whose next try is not due returns None at once (a merged reader waits on its
        other partitions meanwhile). A result other than None ends an outage.
        """
        failover = self._failover
        while True:
            if self._closed:
                raise Closed("stream is closed")
            wait = failover.wait_s()
            if wait > 0:
                if not block:
                    return None
                time.sleep(wait)         # a leader or the cluster is coming back; not a wait for data
                continue
            try:
                result = attempt()
            except RilletError as exc:
                if not exc.retriable:
                    raise
                failover.failed(exc, self.next_offset)
                continue
            if result is not None and failover.active:
                failover.recovered(self.next_offset)
            return result

    def _request(self, conn: Connection) -> int:
        wait = LONG_POLL_MS if self.continuous else 0
        cid = conn.next_cid()
        conn.send(m.FetchRequest(cid, self.topic, self.partition, self.next_offset, self.max_bytes,
                                 int(self.isolation), wait))
        self._sent_at = time.monotonic()
        return cid

    def _absorb(self, reply: m.FetchResponse) -> None:
        self._absorb_bytes(reply.batches)

    def _absorb_bytes(self, data, end: int | None = None) -> None:
        """Buffer the records of ``data`` (whole batches from ``next_offset`` on) and move
        ``next_offset`` past them; ``end``, when the reader knows it (a direct read walked the
        headers already), is the offset after the last batch."""
        start = self.next_offset
        if end is None:
            end = start
            for _pos, header in iter_batches(data):
                end = max(end, header.next_offset)
        if end > start:
            self.next_offset = end
            more = self.stop_at is None or end < self.stop_at
            if more and self._conn is not None and not self._conn.closed:
                try:
                    self._pending = self._request(self._conn)   # pipeline: next fetch before decoding
                except RilletError:
                    self._pending = None
        records: list[Record] = []
        try:
            decode_records(data, self.partition, record_type=Record, first_offset=start, end_offset=self.stop_at,
                           out=records)
        except (CorruptBatch, CompressionError) as exc:
            # The records before the damaged batch are delivered; then the leader is asked about it
            # (_ask_leader): a whole copy elsewhere is read, else RecordsLost (_at_end). A fetch
            # already sent past it answers for the wrong offset: its answer is left unread.
            lost = lost_range(data, start, self.topic, self.partition, exc)
            self.next_offset, self._suspect, self._pending = lost.first_offset, lost, None
        else:
            self._whole_at = None
        finally:
            if records and self._transform is not None:
                records, self._sm_error = self._transform.apply(records)
            if records:
                self._buffer.put(records)


class PartitionConsumer:
    """Reads one partition (Fluvio's legacy consumer API)."""

    def __init__(self, meta: MetadataView, topic: str, partition: int) -> None:
        self._meta = meta
        self.topic = topic
        self.partition = partition
        meta.partition(topic, partition)   # TopicNotFound / PartitionNotFound now, not at first read

    def stream(self, offset: Offset) -> PartitionStream:
        return PartitionStream(self._meta, self.topic, self.partition, offset)

    def stream_with_config(self, offset: Offset, config: ConsumerConfig) -> PartitionStream:
        return PartitionStream(self._meta, self.topic, self.partition, offset, max_bytes=config._max_bytes,
                               isolation=config._isolation, continuous=not config._disable_continuous,
                               skip_damaged=config._skip_damaged,
                               smartmodules=resolve_modules(self._meta.paths, config._smartmodules))

    async def async_stream(self, offset: Offset) -> MultiPartitionStream:
        return MultiPartitionStream([await asyncio.to_thread(self.stream, offset)])

    async def async_stream_with_config(self, offset: Offset, config: ConsumerConfig) -> MultiPartitionStream:
        return MultiPartitionStream([await asyncio.to_thread(self.stream_with_config, offset, config)])


class PartitionSelectionStrategy:
    """Which partitions a MultiplePartitionConsumer reads: every partition of a topic,
    or a list of (topic, partition) pairs."""

    def __init__(self, topic: str | None, selections: list[tuple[str, int]] | None) -> None:
        self.topic = topic
        self.selections = selections

    @classmethod
    def with_all(cls, topic: str) -> "PartitionSelectionStrategy":
        return cls(validate_name(topic, "topic"), None)

    @classmethod
    def with_multiple(cls, topic: list[tuple[str, int]]) -> "PartitionSelectionStrategy":
        pairs = []
        for item in topic:
            try:
                name, partition = item
            except (TypeError, ValueError):
                raise InvalidArgument(f"expected (topic, partition) pairs, got {item!r}") from None
            if not isinstance(partition, int) or partition < 0:
                raise InvalidArgument(f"partition must be a non-negative integer, got {partition!r}")
            pairs.append((validate_name(name, "topic"), partition))
        if not pairs:
            raise InvalidArgument("with_multiple needs at least one (topic, partition) pair")
        return cls(None, pairs)

    def resolve(self, meta: MetadataView) -> list[tuple[str, int]]:
        """The (topic, partition) pairs, checked against the metadata table."""
        if self.topic is not None:
            return [(self.topic, p) for p in range(meta.partition_count(self.topic))]
        for name, partition in self.selections:
            meta.partition(name, partition)
        return list(self.selections)


class MultiplePartitionConsumer:
    """Reads several partitions, of one topic or many, merged (Fluvio's legacy API)."""

    def __init__(self, meta: MetadataView, strategy: PartitionSelectionStrategy) -> None:
        self._meta = meta
        self.strategy = strategy
        self.partitions = strategy.resolve(meta)

    def stream(self, offset: Offset) -> MultiPartitionStream:
        return self._open(offset, ConsumerConfig())

    def stream_with_config(self, offset: Offset, config: ConsumerConfig) -> MultiPartitionStream:
        return self._open(offset, config)

    async def async_stream(self, offset: Offset) -> MultiPartitionStream:
        return await asyncio.to_thread(self.stream, offset)

    async def async_stream_with_config(self, offset: Offset, config: ConsumerConfig) -> MultiPartitionStream:
        return await asyncio.to_thread(self.stream_with_config, offset, config)

    def _open(self, offset: Offset, config: ConsumerConfig) -> MultiPartitionStream:
        return MultiPartitionStream(open_streams(
            self._meta, self.partitions, offset, max_bytes=config._max_bytes, isolation=config._isolation,
            continuous=not config._disable_continuous, skip_damaged=config._skip_damaged,
            smartmodules=resolve_modules(self._meta.paths, config._smartmodules)))


def open_streams(meta: MetadataView, partitions: list[tuple[str, int]], start: Offset, *,
                 stored: dict[tuple[str, int], int] | None = None, **options) -> list[PartitionStream]:
    """One PartitionStream per (topic, partition); if one fails to open, the others are closed."""
    streams: list[PartitionStream] = []
    try:
        for topic, partition in partitions:
            stored_offset = (stored or {}).get((topic, partition))
            streams.append(PartitionStream(meta, topic, partition, start, stored_offset=stored_offset, **options))
    except BaseException:
        for s in streams:
            s.close()
        raise
    return streams


__all__ = [
    "ConsumerConfig", "PartitionConsumer", "PartitionStream", "MultiPartitionStream", "MultiplePartitionConsumer",
    "PartitionSelectionStrategy", "open_streams", "Timeout",
]
