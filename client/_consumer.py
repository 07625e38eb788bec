"""Consumers: a stream of records from one partition, fetched with long polls.

A stream keeps one fetch request in flight while the caller works through the
previous answer: the next offset is known from the batch headers, so the request
goes out before the records are decoded. Records before the requested offset (a
batch may start earlier) are skipped; a partial trailing batch never arrives (the
SPU sends whole batches). On a leader change or a broken connection the stream
re-reads the metadata table and resumes at the next offset it has not delivered.
"""

from __future__ import annotations

import time
from collections import deque

from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import Closed, InvalidArgument, OffsetOutOfRange, RilletError, Timeout
from rillet.ipc.records import iter_batches, iter_records

from ._enums import Isolation
from ._metadata import MetadataView
from ._record import Offset, Record

DEFAULT_MAX_BYTES = 1024 * 1024      # Fluvio's default fetch size
LONG_POLL_MS = 1000                  # one fetch waits at most this long for new records
FAILOVER_WINDOW_S = 30.0             # how long a stream keeps looking for a new leader


class ConsumerConfig:
    """Options of ``stream_with_config`` (Fluvio's setters return None: call one per line)."""

    def __init__(self) -> None:
        self._disable_continuous = False
        self._max_bytes = DEFAULT_MAX_BYTES
        self._isolation = Isolation.ReadUncommitted

    def disable_continuous(self, val: bool = True) -> None:
        self._disable_continuous = bool(val)

    def max_bytes(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be positive, got {max_bytes}")
        self._max_bytes = int(max_bytes)

    def isolation(self, isolation: Isolation | str) -> None:
        self._isolation = Isolation.parse(isolation)


class PartitionStream:
    """Iterator of :class:`Record` from one partition."""

    def __init__(self, meta: MetadataView, topic: str, partition: int, start: Offset, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, isolation: Isolation = Isolation.ReadUncommitted,
                 continuous: bool = True, end_offset: int | None = None) -> None:
        if not isinstance(start, Offset):
            raise InvalidArgument(f"stream needs an Offset, got {type(start).__name__}")
        self.meta = meta
        self.topic = topic
        self.partition = partition
        self.max_bytes = max_bytes
        self.isolation = isolation
        self.continuous = continuous
        self._conn: Connection | None = None
        self._pending: int | None = None       # cid of the fetch in flight
        self._buffer: deque[Record] = deque()
        self._closed = False
        log_start, hw, leo = self._open()
        visible_end = hw if isolation == Isolation.ReadCommitted else leo
        self.next_offset = start.resolve(log_start, hw)
        if not log_start <= self.next_offset <= leo:
            self.close()
            raise OffsetOutOfRange(
                f"offset {self.next_offset} is outside {topic}/{partition}: valid offsets are {log_start} to {leo}"
            )
        # disable_continuous: stop at what exists when the stream opens.
        self.stop_at = None if continuous else visible_end
        if end_offset is not None:
            self.stop_at = end_offset + 1 if self.stop_at is None else min(self.stop_at, end_offset + 1)

    # --- iteration ---
    def __iter__(self) -> "PartitionStream":
        return self

    def __next__(self) -> Record:
        while not self._buffer:
            if self._closed:
                raise StopIteration
            if self.stop_at is not None and self.next_offset >= self.stop_at:
                self.close()
                raise StopIteration
            self._fetch_more()
        return self._buffer.popleft()

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "PartitionStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---
    def _open(self) -> tuple[int, int, int]:
        reply = self._with_failover(lambda conn: conn.call(m.OffsetsRequest(conn.next_cid(), self.topic, self.partition)))
        return reply.log_start, reply.hw, reply.leo

    def _connection(self, refresh: bool) -> Connection:
        if self._conn is None:
            row = self.meta.leader(self.topic, self.partition, refresh=refresh)
            self._conn = Connection(self.meta.spu_socket(row.leader), client_id="rillet-consumer")
        return self._conn

    def _with_failover(self, fn):
        """Run ``fn(connection)``; on a retriable error, find the leader again and retry."""
        deadline = time.monotonic() + FAILOVER_WINDOW_S
        refresh = False
        while True:
            if self._closed:
                raise Closed("stream is closed")
            try:
                return fn(self._connection(refresh))
            except RilletError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._pending = None
                refresh = True
                time.sleep(0.01)

    def _request(self, conn: Connection) -> int:
        wait = LONG_POLL_MS if self.stop_at is None else 0
        cid = conn.next_cid()
        conn.send(m.FetchRequest(cid, self.topic, self.partition, self.next_offset, self.max_bytes,
                                 int(self.isolation), wait))
        return cid

    def _fetch_more(self) -> None:
        def round_trip(conn: Connection):
            if self._pending is None:
                self._pending = self._request(conn)
            while True:
                reply = conn.recv(timeout_s=LONG_POLL_MS / 1000 + 10)
                if reply.cid == self._pending:
                    self._pending = None
                    if isinstance(reply, m.ErrorResponse):
                        from rillet.ipc.connection import raise_for_error
                        raise_for_error(reply)
                    return reply
        reply = self._with_failover(round_trip)
        data = reply.batches
        start = self.next_offset
        end = start
        for _pos, header in iter_batches(data):
            end = max(end, header.next_offset)
        if end > start:
            self.next_offset = end
            more = self.stop_at is None or end < self.stop_at
            if more and self._conn is not None:
                try:
                    self._pending = self._request(self._conn)   # pipeline: next fetch before decoding
                except RilletError:
                    self._pending = None
        limit = self.stop_at
        for rec in iter_records(data):
            if rec.offset < start or (limit is not None and rec.offset >= limit):
                continue
            self._buffer.append(Record(rec.offset, self.partition, rec.key, rec.value, rec.timestamp))


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
                               isolation=config._isolation, continuous=not config._disable_continuous)

    async def async_stream(self, offset: Offset):
        return _AsyncStream(self.stream(offset))

    async def async_stream_with_config(self, offset: Offset, config: ConsumerConfig):
        return _AsyncStream(self.stream_with_config(offset, config))


class _AsyncStream:
    """``async for`` over a stream; each blocking fetch runs in a worker thread."""

    def __init__(self, stream: PartitionStream) -> None:
        self._stream = stream

    def __aiter__(self) -> "_AsyncStream":
        return self

    async def __anext__(self) -> Record:
        import asyncio
        if self._stream._buffer:
            return self._stream._buffer.popleft()
        record = await asyncio.to_thread(next, self._stream, None)
        if record is None:
            raise StopAsyncIteration
        return record


__all__ = ["ConsumerConfig", "PartitionConsumer", "PartitionStream", "Timeout"]
