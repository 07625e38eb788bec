"""The producer: per-partition batching, a sender thread, pipelined acks.

Threads and ownership:

* the caller's thread runs ``send``: choose the partition, append the record to
  that partition's open batch (a records.BatchBuilder), seal it when it reaches
  ``batch_size``. No I/O happens here.
* one sender thread seals batches whose ``linger`` expired, encodes them (and
  compresses), finds the leader in the shared-memory table and writes produce
  requests, several in flight per SPU connection.
* one receiver thread per SPU connection reads answers and resolves each batch's
  result; a retriable failure puts the batch back for the sender after the retry
  policy's delay (at-least-once), re-reading the table first.

``send`` blocks (backpressure) while a partition already has ``batch_queue_size``
sealed batches waiting. The public ``TopicProducer`` is a thin shell over
``_ProducerCore`` so that garbage-collecting it flushes and stops the threads
(the threads hold the core, never the shell).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace

from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import (
    BrokenConnection, Closed, InvalidArgument, MessageTooLarge, RilletError, Timeout, error_from_code,
)
from rillet.ipc.records import HEADER_SIZE, BatchBuilder

from ._enums import Compression, DeliverySemantic, Isolation
from ._metadata import MetadataView
from ._partitioner import Partitioner
from ._retry import RetryPolicy, RetryStrategy

_RECORD_OVERHEAD = 16           # msgpack framing per record, for the batch-full estimate
_QUEUE_WAIT_S = 30.0            # Fluvio's BatchQueueWaitTimeout
_MAX_IN_FLIGHT = 32             # produce requests per SPU connection


@dataclass(frozen=True, kw_only=True)
class TopicProducerConfig:
    batch_size: int = 16_384                 # bytes of records per batch (Fluvio's default)
    linger_ms: int = 100                     # the seeds' default; linger(0) sends at once
    max_request_size: int = 1_048_576        # largest batch a single record may make (Fluvio's default)
    batch_queue_size: int = 100              # sealed batches per partition before send() waits
    compression: Compression = Compression.None_
    timeout_ms: int = 1_500                  # how long the SPU waits for the HW (ReadCommitted)
    isolation: Isolation = Isolation.ReadUncommitted
    delivery_semantic: DeliverySemantic = DeliverySemantic.AtLeastOnce
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    partition: int | None = None             # set_specific_partitioner

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_request_size", "batch_queue_size", "timeout_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        if self.linger_ms < 0:
            raise InvalidArgument(f"linger must not be negative, got {self.linger_ms}")
        if self.partition is not None and self.partition < 0:
            raise InvalidArgument(f"partition must not be negative, got {self.partition}")


class TopicProducerConfigBuilder:
    """Fluent builder with Fluvio's method names; units are Fluvio's (bytes, milliseconds)."""

    def __init__(self) -> None:
        self._fields: dict = {}

    def _set(self, **kw) -> "TopicProducerConfigBuilder":
        self._fields.update(kw)
        return self

    def batch_size(self, size: int): return self._set(batch_size=int(size))
    def max_request_size(self, size: int): return self._set(max_request_size=int(size))
    def batch_queue_size(self, size: int): return self._set(batch_queue_size=int(size))
    def linger(self, ms: int): return self._set(linger_ms=int(ms))
    def timeout(self, ms: int): return self._set(timeout_ms=int(ms))
    def compression(self, c: Compression | str): return self._set(compression=Compression.parse(c))
    def isolation(self, i: Isolation | str): return self._set(isolation=Isolation.parse(i))
    def delivery_semantic(self, d: DeliverySemantic | str): return self._set(delivery_semantic=DeliverySemantic.parse(d))
    def set_specific_partitioner(self, partition: int): return self._set(partition=int(partition))

    def retry_policy(self, *, max_retries: int | None = None, initial_delay_ms: int | None = None,
                     max_delay_ms: int | None = None, timeout_ms: int | None = None,
                     strategy: RetryStrategy | str | None = None) -> "TopicProducerConfigBuilder":
        base = self._fields.get("retry_policy", RetryPolicy())
        changes = {k: v for k, v in dict(max_retries=max_retries, initial_delay_ms=initial_delay_ms,
                                         max_delay_ms=max_delay_ms, timeout_ms=timeout_ms,
                                         strategy=RetryStrategy(strategy) if strategy is not None else None).items()
                   if v is not None}
        return self._set(retry_policy=replace(base, **changes))

    def build(self) -> TopicProducerConfig:
        return TopicProducerConfig(**self._fields)


class RecordMetadata:
    __slots__ = ("_offset", "_partition")

    def __init__(self, offset: int, partition: int) -> None:
        self._offset, self._partition = offset, partition

    def offset(self) -> int:
        return self._offset

    def partition_id(self) -> int:
        return self._partition

    def __repr__(self) -> str:
        return f"RecordMetadata(partition={self._partition}, offset={self._offset})"


class _BatchResult:
    """Completion of one batch: its base offset, or the error that ended it."""

    __slots__ = ("_event", "base_offset", "error", "_callbacks")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.base_offset = -1
        self.error: RilletError | None = None
        self._callbacks: list = []

    def resolve(self, base_offset: int = -1, error: RilletError | None = None) -> None:
        if self._event.is_set():
            return
        self.base_offset, self.error = base_offset, error
        self._event.set()
        for cb in self._callbacks:
            cb()

    def wait(self, timeout_s: float | None = None) -> None:
        if not self._event.wait(timeout_s):
            raise Timeout(f"record not acknowledged within {timeout_s} s")
        if self.error is not None:
            raise self.error

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def add_done_callback(self, cb) -> None:
        self._callbacks.append(cb)
        if self._event.is_set():
            cb()


class ProduceOutput:
    """What ``send`` returns. ``wait()`` gives the record's metadata once, then None."""

    __slots__ = ("_result", "_index", "_partition", "_taken")

    def __init__(self, result: _BatchResult, index: int, partition: int) -> None:
        self._result, self._index, self._partition = result, index, partition
        self._taken = False

    def wait(self, timeout: float | None = None) -> RecordMetadata | None:
        if self._taken:
            return None
        self._result.wait(timeout)
        self._taken = True
        return RecordMetadata(self._result.base_offset + self._index, self._partition)

    async def async_wait(self) -> RecordMetadata | None:
        import asyncio
        if self._taken:
            return None
        if not self._result.done:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._result.add_done_callback(lambda: loop.call_soon_threadsafe(_set_if_pending, fut))
            await fut
        return self.wait()

    def is_done(self) -> bool:
        return self._result.done


def _set_if_pending(fut) -> None:
    if not fut.done():
        fut.set_result(None)


class _OpenBatch:
    __slots__ = ("partition", "builder", "result", "deadline", "size")

    def __init__(self, partition: int, codec: int, linger_s: float) -> None:
        self.partition = partition
        self.builder = BatchBuilder(codec)
        self.result = _BatchResult()
        self.deadline = time.monotonic() + linger_s
        self.size = HEADER_SIZE


@dataclass(eq=False)
class _Sealed:
    partition: int
    builder: BatchBuilder
    result: _BatchResult
    attempt: int = 0
    first_sent: float = 0.0
    payload: bytes | None = None


class _SpuLink:
    """One connection to one SPU and its receiver thread."""

    def __init__(self, core: "_ProducerCore", spu_id: int, path: str) -> None:
        self.spu_id = spu_id
        self.conn = Connection(path, client_id="rillet-producer", timeout_s=None)
        self.in_flight: dict[int, _Sealed] = {}
        self.slots = threading.BoundedSemaphore(_MAX_IN_FLIGHT)
        self.broken = False
        self.thread = threading.Thread(target=core.receive_loop, args=(self,), daemon=True,
                                       name=f"rillet-producer-recv-{spu_id}")
        self.thread.start()


class _ProducerCore:
    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig) -> None:
        self.meta = meta
        self.topic = topic
        self.config = config
        self.partition_count = meta.partition_count(topic)
        if config.partition is not None and config.partition >= self.partition_count:
            raise InvalidArgument(f"partition {config.partition} does not exist: topic {topic!r} has {self.partition_count}")
        self.partitioner = Partitioner()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.open: dict[int, _OpenBatch] = {}
        self.ready: deque[_Sealed] = deque()
        self.retries: list[tuple[float, int, _Sealed]] = []      # heap of (due, seq, batch)
        self.queued = [0] * self.partition_count                  # sealed, not yet answered, per partition
        self.unresolved: set[_BatchResult] = set()
        self.links: dict[int, _SpuLink] = {}
        self.closing = False
        self.closed = False
        self._seq = itertools.count()
        self.linger_s = config.linger_ms / 1000
        self.sender = threading.Thread(target=self.send_loop, daemon=True, name=f"rillet-producer-{topic}")
        self.sender.start()

    # --- caller side -------------------------------------------------------------------
    def send(self, key: bytes | None, value: bytes, partition: int | None) -> ProduceOutput:
        record_size = len(value) + (len(key) if key is not None else 0) + _RECORD_OVERHEAD
        if record_size + HEADER_SIZE > self.config.max_request_size:
            raise MessageTooLarge(
                f"record of {record_size} bytes exceeds max_request_size={self.config.max_request_size}"
            )
        ts = time.time_ns() // 1_000_000
        with self.lock:
            if self.closing:
                raise Closed(f"producer for topic {self.topic!r} is closed")
            if partition is None:
                partition = self._choose(key)
            batch = self.open.get(partition)
            if batch is not None and batch.size + record_size > self.config.batch_size:
                self._seal(batch)
                batch = None
            if batch is None:
                batch = self.open[partition] = _OpenBatch(partition, int(self.config.compression), self.linger_s)
                self.cond.notify()
            index = batch.builder.append(key, value, ts)
            batch.size += record_size
            if batch.size >= self.config.batch_size or self.linger_s == 0:
                self._seal(batch)
        return ProduceOutput(batch.result, index, partition)

    def _choose(self, key: bytes | None) -> int:
        if self.config.partition is not None:
            return self.config.partition
        if key is not None:
            return self.partitioner.for_key(key, self.partition_count)
        return self.partitioner.current_keyless(self.partition_count)

    def _seal(self, batch: _OpenBatch, wait: bool = True) -> None:
        """Move an open batch to the ready queue (lock held).

        Callers' threads wait while the partition's queue is full (backpressure);
        the sender thread passes ``wait=False``, since it is the one that drains it.
        """
        del self.open[batch.partition]
        if self.config.partition is None:
            self.partitioner.next_keyless(self.partition_count)
        deadline = time.monotonic() + _QUEUE_WAIT_S
        while wait and self.queued[batch.partition] >= self.config.batch_queue_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                batch.result.resolve(error=Timeout(
                    f"{self.topic}/{batch.partition}: batch queue stayed full ({self.config.batch_queue_size} batches) for {_QUEUE_WAIT_S} s"))
                return
            self.cond.wait(remaining)
        self.queued[batch.partition] += 1
        self.unresolved.add(batch.result)
        self.ready.append(_Sealed(batch.partition, batch.builder, batch.result))
        self.cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        with self.lock:
            for batch in list(self.open.values()):
                self._seal(batch)
            pending = list(self.unresolved)
        first_error = None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for result in pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result.wait(remaining)
            except Timeout:
                raise Timeout(f"flush of topic {self.topic!r} did not finish within {timeout_s} s") from None
            except RilletError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def close(self, timeout_s: float | None = 30.0) -> None:
        if self.closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            with self.lock:
                self.closing = True
                self.closed = True
                self.cond.notify_all()
            for link in list(self.links.values()):
                link.conn.close()

    # --- sender thread ---------------------------------------------------------------------
    def send_loop(self) -> None:
        while True:
            with self.lock:
                batches = self._collect()
                if batches is None:
                    return
            for sealed in batches:
                self._dispatch(sealed)

    def _collect(self) -> list[_Sealed] | None:
        """Wait (lock held) for batches to send; None when the producer is closed."""
        while True:
            if self.closed and not self.ready:
                return None
            now = time.monotonic()
            for batch in [b for b in self.open.values() if b.deadline <= now]:
                self._seal(batch, wait=False)
            while self.retries and self.retries[0][0] <= now:
                self.ready.append(heapq.heappop(self.retries)[2])
            if self.ready:
                out = list(self.ready)
                self.ready.clear()
                return out
            waits = [b.deadline for b in self.open.values()] + [r[0] for r in self.retries[:1]]
            self.cond.wait(max(0.0, min(waits) - now) if waits else None)

    def _dispatch(self, sealed: _Sealed) -> None:
        if sealed.payload is None:
            sealed.payload = sealed.builder.build()
            sealed.first_sent = time.monotonic()
        try:
            row = self.meta.leader(self.topic, sealed.partition, refresh=sealed.attempt > 0)
            link = self._link(row.leader)
            link.slots.acquire()
            cid = link.conn.next_cid()
            link.in_flight[cid] = sealed
            link.conn.send(m.ProduceRequest(
                cid, self.topic, sealed.partition, int(self.config.isolation), self.config.timeout_ms,
                memoryview(sealed.payload)))
        except RilletError as exc:
            self.failed(sealed, exc)

    def _link(self, spu_id: int) -> _SpuLink:
        link = self.links.get(spu_id)
        if link is None or link.broken:
            link = self.links[spu_id] = _SpuLink(self, spu_id, self.meta.spu_socket(spu_id))
        return link

    # --- receiver threads ---------------------------------------------------------------------
    def receive_loop(self, link: _SpuLink) -> None:
        while True:
            try:
                reply = link.conn.recv(timeout_s=None)
            except RilletError as exc:
                link.broken = True
                pending = list(link.in_flight.values())
                link.in_flight.clear()
                if not self.closed:
                    for sealed in pending:
                        self.failed(sealed, exc if isinstance(exc, BrokenConnection) else BrokenConnection(str(exc)))
                else:
                    for sealed in pending:
                        self._finish(sealed, error=Closed("producer closed before the answer arrived"))
                return
            sealed = link.in_flight.pop(reply.cid, None)
            if sealed is None:
                continue
            link.slots.release()
            if isinstance(reply, m.ProduceResponse):
                self._finish(sealed, base_offset=reply.base_offset)
            elif isinstance(reply, m.ErrorResponse):
                self.failed(sealed, error_from_code(reply.code, reply.message))

    def failed(self, sealed: _Sealed, exc: RilletError) -> None:
        """Retry a retriable failure under the policy (at-least-once), else end the batch."""
        policy = self.config.retry_policy
        delays = policy.delays_ms()
        elapsed_ms = (time.monotonic() - sealed.first_sent) * 1000
        if (self.config.delivery_semantic == DeliverySemantic.AtLeastOnce and exc.retriable and not self.closed
                and sealed.attempt < len(delays) and elapsed_ms + delays[sealed.attempt] <= policy.timeout_ms):
            due = time.monotonic() + delays[sealed.attempt] / 1000
            sealed.attempt += 1
            with self.lock:
                heapq.heappush(self.retries, (due, next(self._seq), sealed))
                self.cond.notify_all()
            return
        msg = f"produce to {self.topic}/{sealed.partition} failed"
        if sealed.attempt:
            msg += f" after {sealed.attempt} retries"
        error = type(exc)(f"{msg}: {exc}")
        self._finish(sealed, error=error)

    def _finish(self, sealed: _Sealed, base_offset: int = -1, error: RilletError | None = None) -> None:
        sealed.result.resolve(base_offset, error)
        with self.lock:
            self.queued[sealed.partition] -= 1
            self.unresolved.discard(sealed.result)
            self.cond.notify_all()


_LIVE_PRODUCERS: "weakref.WeakSet[TopicProducer]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """On a normal interpreter exit, open producers send what they hold (bounded wait)."""
    for producer in list(_LIVE_PRODUCERS):
        try:
            producer.close(timeout=5.0)
        except Exception:
            pass


def _to_bytes(value, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, list):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


class TopicProducer:
    """Sends records to one topic. Thread-safe; close() (or a with block) flushes."""

    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig | None = None) -> None:
        self._core = _ProducerCore(meta, topic, config or TopicProducerConfig())
        self.topic = topic
        self.config = self._core.config
        _LIVE_PRODUCERS.add(self)

    def send(self, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        k = None if key is None else _to_bytes(key, "key")
        return self._core.send(k, _to_bytes(value, "value"), None)

    def send_string(self, value: str) -> ProduceOutput:
        """Send a keyless record with a str value (Fluvio sends an empty key; rillet sends none)."""
        return self._core.send(None, _to_bytes(value, "value"), None)

    def send_to_partition(self, partition: int, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        if not 0 <= partition < self._core.partition_count:
            raise InvalidArgument(f"partition {partition} does not exist: topic {self.topic!r} has {self._core.partition_count}")
        k = None if key is None else _to_bytes(key, "key")
        return self._core.send(k, _to_bytes(value, "value"), partition)

    def send_all(self, records) -> list[ProduceOutput]:
        send = self._core.send
        return [send(None if k is None else _to_bytes(k, "key"), _to_bytes(v, "value"), None) for k, v in records]

    def flush(self, timeout: float | None = None) -> None:
        """Send every buffered record and wait for the answers; raises the first failure."""
        self._core.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        self._core.close(timeout)

    # asyncio flavour: the same core, awaited without blocking the event loop
    async def async_send(self, key, value) -> ProduceOutput:
        return self.send(key, value)

    async def async_send_string(self, value: str) -> ProduceOutput:
        return self.send_string(value)

    async def async_send_all(self, records) -> list[ProduceOutput]:
        return self.send_all(records)

    async def async_flush(self) -> None:
        import asyncio
        await asyncio.to_thread(self.flush)

    def __enter__(self) -> "TopicProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._core.close(timeout_s=5.0)
        except Exception:
            pass
