"""The producer: per-partition batching, a sender thread, pipelined acks, retries.

Threads and ownership:

* the caller's thread runs ``send`` / ``send_all``: choose the partition, append
  the record to that partition's open batch (a records.BatchBuilder), seal the
  batch when it is full (or at once with ``linger(0)``). A batch it seals usually
  leaves from this thread too (the fast path below).
* one sender thread seals batches whose ``linger`` expired and sends every batch
  the fast path did not: it encodes it (and compresses), finds the leader in the
  shared-memory table, opens links and hands the request to that SPU's link
  (client/_spu_link.py), several in flight per SPU; retries go through it.
* one thread per SPU link writes requests, reads answers and enforces the
  request deadline; it resolves each batch, or hands a failure back here.

Backpressure. A partition holds at most ``batch_queue_size`` sealed batches that
have no answer yet; a full batch waits open (taking no more records) until one is
answered, and ``send`` waits (at most 30 s, then Timeout) only when the open batch
is full too. So memory per partition is bounded by ``batch_queue_size + 1``
batches, and ``send`` never waits while there is room in the open batch.

Delivery. AtMostOnce sends each batch once; its outputs still report the answer
or the error. AtLeastOnce retries a batch that failed with a *retriable* error
(the error's flag, never its text) on the retry policy's schedule, re-reading the
metadata table first. A retried batch goes back in front of the partition's
unsent batches and the partition pauses for the delay, so batches not yet sent
never overtake it; batches already in flight behind it are refused by the leader
(idempotence, below), so they cannot overtake it either.

Idempotence (at-least-once, as Kafka since 3.0). The producer has a random producer id
and numbers the records of each partition: a batch carries the sequence of its first
record, fixed when its bytes are built (in send order), so a retry sends the same bytes
and the leader answers a batch it already stored with its original offsets instead of
storing it twice. A batch that arrives after a hole (an earlier one failed and is being
retried) is refused with OutOfOrderSequence, which is not stored: it goes back in the
queue behind the earlier one. When nothing before it is still unanswered, the hole is
for good (a batch failed for good, or the leader lost an unreplicated one): the
partition's sequence restarts at 0 under a new producer id, and refused batches are
rebuilt there. An idempotent producer keeps at most ``_IDEMPOTENT_MAX_QUEUE`` batches
unanswered per partition, fewer than the SPU remembers per producer.

Cost per record. ``send_all`` takes records in chunks: the lock, the clock and
the config are read once per chunk, the partition once per run of records that
share a batch (keyed records: one cached hash lookup each), a run's fit in the
batch is one bisect over cumulative sizes, and its outputs are made by one ``map``.
What is left per record is BatchBuilder.append and a ProduceOutput.

Fast path. Handing a sealed batch to the sender thread costs thread wake-ups and,
under the GIL, often a wait for the switch interval (5 ms); with ``linger(0)`` that
capped the producer at about 5,000 records/s. So when the caller seals a batch
(full, or linger 0) and its partition has no sealed batch waiting for the sender
thread (``unsent``: in its queue, in its hands, or back for a retry), the caller
encodes it and queues its frame on the leader's link under the producer lock (so
concurrent callers keep seal order), then writes it once the lock is released
(``SpuLink.write_out``; the link orders frames as queued). Every batch of the
partition sealed before it was already on a link, so the order is the sender
thread's; the link thread completes it as usual. No open link yet, a broken
link, a paused partition, a build error: the batch goes to the sender thread,
which handles and reports it.

The public ``TopicProducer`` is a thin shell over ``_ProducerCore`` so that
garbage-collecting it flushes and stops the threads (the threads hold the core,
never the shell).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import threading
import time
import weakref
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import accumulate, islice, repeat
from operator import add, itemgetter, sub

from rillet.ipc import messages as m
from rillet.ipc.compression import Codec
from rillet.ipc.errors import (
    BrokenConnection, Closed, CompressionError, InternalError, InvalidArgument, MessageTooLarge,
    OutOfOrderSequence, ProtocolError, RilletError, Timeout, error_from_code,
)
from rillet.ipc.metadata_table import PartitionStatus
from rillet.ipc.records import (
    DEFAULT_MAX_BATCH_BYTES, IDEMPOTENT_WINDOW, RECORD_OVERHEAD, SEQUENCE_MODULUS, BatchBuilder,
)

from ._enums import Compression, DeliverySemantic, Isolation
from ._metadata import MetadataView
from ._partitioner import Partitioner
from ._produce_output import ProduceOutput, RecordMetadata, _BatchResult
from ._retry import RetryPolicy, RetryStrategy
from ._spu_link import SpuLink

__all__ = ["TopicProducer", "TopicProducerConfig", "TopicProducerConfigBuilder", "ProducerStatistics",
           "ProduceOutput", "RecordMetadata"]

log = logging.getLogger("rillet.producer")

_EMPTY_BATCH = BatchBuilder().estimated_size   # header plus the records block's array header
_QUEUE_WAIT_S = 30.0            # Fluvio's BatchQueueWaitTimeout: longest wait of send() for room
_DEADLINE_MARGIN_S = 1.0        # request deadline = timeout_ms + this (queueing and scheduling slack)
_EXIT_FLUSH_S = 5.0             # bounded flush of open producers at interpreter exit
_SEND_ALL_CHUNK = 1024          # send_all holds the lock for this many records at most (~0.5 ms)
# The fast path trusts a partition's leader link this long before reading the table again
# (a read costs 3-8 us); a leader change inside it fails the batch as it would any: retried.
_ROUTE_TTL_S = 0.005
# Idempotence: unanswered batches per partition at most (a flush may seal one more), fewer than
# the IDEMPOTENT_WINDOW batches an SPU remembers per producer, so a retry is always recognised.
_IDEMPOTENT_MAX_QUEUE = IDEMPOTENT_WINDOW - 8
_OUT_OF_ORDER_PAUSE_S = 0.01    # a batch refused for a hole waits this long for the batch before it


def _new_producer_id() -> int:
    """63 random bits (the header field is a signed int64; >= 0 means idempotent). Random, not
    assigned by the SC: no round trip, and unique across processes and cluster restarts (a
    million producers share an id with probability ~5e-8)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


@dataclass(frozen=True, kw_only=True)
class TopicProducerConfig:
    batch_size: int = 16_384                 # bytes of records per batch (Fluvio's default)
    linger_ms: int = 100                     # Fluvio's documented default; linger(0) sends at once
    max_request_size: int = 1_048_576        # largest batch, so largest record (Fluvio's default)
    batch_queue_size: int = 100              # unanswered batches per partition before sending waits (Fluvio's);
                                             # at-least-once keeps at most _IDEMPOTENT_MAX_QUEUE (the SPU's memory)
    compression: Compression = Compression.None_   # the topic's compression_type must allow it
    timeout_ms: int = 1_500                  # SPU's wait for the HW (ReadCommitted); base of the request deadline
    isolation: Isolation = Isolation.ReadUncommitted   # Fluvio's default: ack once the leader stored it
    delivery_semantic: DeliverySemantic = DeliverySemantic.AtLeastOnce   # Fluvio's default
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    partition: int | None = None             # set_specific_partitioner: every record to this partition

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_request_size", "batch_queue_size", "timeout_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_request_size > DEFAULT_MAX_BATCH_BYTES:
            raise InvalidArgument(f"max_request_size={self.max_request_size} exceeds the largest batch an SPU "
                                  f"accepts ({DEFAULT_MAX_BATCH_BYTES} bytes)")
        if self.max_request_size <= _EMPTY_BATCH + RECORD_OVERHEAD:
            raise InvalidArgument(f"max_request_size={self.max_request_size} leaves no room for a record")
        if self.linger_ms < 0:
            raise InvalidArgument(f"linger must not be negative, got {self.linger_ms}")
        if self.partition is not None and self.partition < 0:
            raise InvalidArgument(f"partition must not be negative, got {self.partition}")
        for name, kind in (("compression", Compression), ("isolation", Isolation),
                           ("delivery_semantic", DeliverySemantic), ("retry_policy", RetryPolicy)):
            if not isinstance(getattr(self, name), kind):
                raise InvalidArgument(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")


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

    def retry_policy(self, policy: RetryPolicy | None = None, *, max_retries: int | None = None,
                     initial_delay_ms: int | None = None, max_delay_ms: int | None = None,
                     timeout_ms: int | None = None,
                     strategy: RetryStrategy | str | None = None) -> "TopicProducerConfigBuilder":
        """Set the at-least-once retry policy: a RetryPolicy, or fields changed on the current one."""
        base = policy or self._fields.get("retry_policy", RetryPolicy())
        changes = {k: v for k, v in dict(max_retries=max_retries, initial_delay_ms=initial_delay_ms,
                                         max_delay_ms=max_delay_ms, timeout_ms=timeout_ms,
                                         strategy=strategy).items() if v is not None}
        return self._set(retry_policy=replace(base, **changes))

    def build(self) -> TopicProducerConfig:
        return TopicProducerConfig(**self._fields)


class _Batch:
    """One batch from its first record to its answer: open, then sealed (queued,
    in flight, maybe retried), then finished."""

    __slots__ = ("partition", "builder", "result", "deadline", "size", "attempt", "first_sent", "payload",
                 "finished", "producer_id", "sequence", "built")

    def __init__(self, partition: int, codec: int, deadline: float, where: str) -> None:
        self.partition = partition
        self.builder = BatchBuilder(codec)
        self.result = _BatchResult(partition, where)
        self.deadline = deadline         # linger expiry (monotonic)
        self.size = _EMPTY_BATCH         # uncompressed estimate, bytes
        self.attempt = 0                 # retries made
        self.first_sent = 0.0
        self.payload: bytes | None = None
        self.finished = False
        self.producer_id = -1            # idempotence: its producer id and first sequence, once built
        self.sequence = -1
        self.built = -1                  # build order within the producer


@dataclass(frozen=True)
class ProducerStatistics:
    """Counts since the producer was made (``TopicProducer.statistics()``)."""

    records_sent: int        # acknowledged by the leader
    records_failed: int      # ended with an error (their outputs raise it)
    records_pending: int     # buffered or awaiting an answer
    batches_sent: int
    retries: int
    first_error: str | None  # the first failure, for a one-line report


class _ProducerCore:
    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig) -> None:
        self.meta = meta
        self.topic = topic
        self.config = config
        n = self.partition_count = meta.partition_count(topic)
        if config.partition is not None and config.partition >= n:
            raise InvalidArgument(f"partition {config.partition} does not exist: topic {topic!r} has {n}")
        self.fixed = config.partition
        self.partitioner = Partitioner()
        self.batch_limit = min(config.batch_size, config.max_request_size)
        self.max_record = config.max_request_size - _EMPTY_BATCH
        self.queue_limit = config.batch_queue_size
        self.codec = Codec(int(config.compression))     # a Codec: BatchBuilder takes it as is
        self.linger_s = config.linger_ms / 1000
        self.linger0 = config.linger_ms == 0
        self.at_least_once = config.delivery_semantic == DeliverySemantic.AtLeastOnce
        self.idempotent = self.at_least_once
        if self.idempotent:
            self.queue_limit = min(self.queue_limit, _IDEMPOTENT_MAX_QUEUE)
        # Per partition: the producer id and next sequence of the batch built next, and the
        # built batches not yet answered (to tell a hole still being filled from one for good).
        self.producer_ids = [_new_producer_id() if self.idempotent else -1] * n
        self.next_sequence = [0] * n
        self.built: list[set[_Batch]] = [set() for _ in range(n)]
        self._built_no = itertools.count()
        self.policy = config.retry_policy
        self.request_timeout_s = config.timeout_ms / 1000 + _DEADLINE_MARGIN_S
        self.isolation, self.timeout_ms = int(config.isolation), config.timeout_ms
        self.where = [f"{topic}/{p}" for p in range(n)]
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)      # the sender thread waits here
        self.room = threading.Condition(self.lock)      # send() waits here for queue room
        self.open: dict[int, _Batch] = {}
        self.ready: list[deque[_Batch]] = [deque() for _ in range(n)]   # sealed, to send, in seal order
        self.ready_parts: set[int] = set()
        self.paused_until = [0.0] * n                   # retry backoff per partition (monotonic)
        self.queued = [0] * n                           # sealed and not yet answered, per partition
        self.unsent = [0] * n                           # sealed, not yet handed to a link by the sender thread
        self.sender_wake_at = 0.0                       # when the sleeping sender thread wakes (0.0: it is awake)
        self.to_write: list[SpuLink] = []               # links the fast path queued frames on, to write out
        self.routes: list[tuple[SpuLink, float] | None] = [None] * n   # fast path: (leader's link, valid until)
        self.unresolved: set[_BatchResult] = set()
        self.unreported: list[_BatchResult] = []        # failed since the last flush
        self.links: dict[int, SpuLink] = {}
        self.closing = False
        self.closed = False
        self._seq = itertools.count()
        self._online_cache: tuple[object, frozenset[int] | None] = (None, None)
        self.stats = {"records_sent": 0, "records_failed": 0, "batches_sent": 0, "retries": 0}
        self.first_error: RilletError | None = None
        self.sender = threading.Thread(target=self.send_loop, daemon=True, name=f"rillet-producer-{topic}")
        self.sender.start()

    # --- caller side -------------------------------------------------------------------
    def send(self, key: bytes | None, value: bytes, partition: int | None, block: bool = True) -> ProduceOutput | None:
        """Append one record; None only when ``block`` is False and send would wait."""
        size = len(value) + RECORD_OVERHEAD if key is None else len(key) + len(value) + RECORD_OVERHEAD
        if size > self.max_record:
            raise self._too_large(size)
        ts = time.time_ns() // 1_000_000
        links = ()
        try:
            with self.lock:
                try:
                    if self.closing:
                        raise Closed(f"producer for topic {self.topic!r} is closed")
                    keyless = False
                    if partition is None:
                        if self.fixed is not None:
                            partition = self.fixed
                        elif key is not None:
                            partition = self.partitioner.for_key(key, self.partition_count)
                        else:
                            keyless = True
                            partition = self.partitioner.keyless
                    batch = self.open.get(partition)
                    if batch is None or batch.size + size > self.batch_limit:
                        batch = self._batch_for(partition, size, keyless, block)
                        if batch is None:
                            return None
                        partition = batch.partition
                    index = batch.builder.append(key, value, ts)
                    batch.size += size
                    if (self.linger0 or batch.size >= self.batch_limit) and self.queued[partition] < self.queue_limit:
                        self._seal(batch, direct=True)
                    return ProduceOutput(batch.result, index)
                finally:
                    if self.to_write:
                        links, self.to_write = self.to_write, []
        finally:
            for link in links:          # the fast path's frames, written once the lock is released
                link.write_out()

    def send_many(self, keys: list | None, values: list) -> list[ProduceOutput]:
        """Append records in order, as ``send`` one by one would (``keys`` None: all keyless).

        Records of one partition keep their order; a record too large fails as in
        ``send``, after the records before it were queued (their outputs are lost
        with the raise, as with a loop of ``send``).
        """
        lens = map(len, values)
        if keys is not None:
            lens = map(add, lens, [0 if k is None else len(k) for k in keys])
        cum = list(accumulate(map(add, lens, repeat(RECORD_OVERHEAD))))   # bytes up to each record
        too_large = None
        if cum[-1] > self.max_record:            # some record may be too large: find the first
            first = next((i for i, size in enumerate(map(sub, cum, [0, *cum[:-1]])) if size > self.max_record), None)
            if first is not None:
                too_large = self._too_large(cum[first] - (cum[first - 1] if first else 0))
                keys, values, cum = None if keys is None else keys[:first], values[:first], cum[:first]
        outputs: list[ProduceOutput] = []
        links = ()
        try:
            if values:
                ts = time.time_ns() // 1_000_000
                with self.lock:
                    if self.closing:
                        raise Closed(f"producer for topic {self.topic!r} is closed")
                    try:
                        outputs = self._append_routed(keys, values, cum, ts)
                    finally:
                        links = self._take_writes()
        finally:
            for link in links:
                link.write_out()
        if too_large is not None:
            raise too_large
        return outputs

    def _append_routed(self, keys, values, cum: list[int], ts: int) -> list[ProduceOutput]:
        """Split records into per-partition runs, in order, and append each (lock held)."""
        if self.fixed is not None:
            return self._append_run(self.fixed, False, keys, values, cum, ts)
        if keys is None:
            return self._append_run(0, True, None, values, cum, ts)
        n, count = len(values), self.partition_count
        keyless = keys.count(None)
        if keyless:
            keyed = [i for i, k in enumerate(keys) if k is not None]
            parts = [-1] * n
            for i, p in zip(keyed, self.partitioner.for_keys([keys[i] for i in keyed], count)):
                parts[i] = p
        else:
            parts = self.partitioner.for_keys(keys, count)
        if parts.count(parts[0]) == n:
            return self._append_run(parts[0], keyless == n, keys, values, cum, ts)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            groups.setdefault(p, []).append(i)
        sizes = list(map(sub, cum, [0, *cum[:-1]]))
        outputs: list = [None] * n
        for p, picked in groups.items():
            run = self._append_run(p, p < 0, [keys[i] for i in picked], [values[i] for i in picked],
                                   list(accumulate(sizes[i] for i in picked)), ts)
            for i, out in zip(picked, run):
                outputs[i] = out
        return outputs

    def _append_run(self, partition: int, keyless: bool, keys, values, cum: list[int], ts: int) -> list[ProduceOutput]:
        """Append records of one partition (or keyless ones) batch by batch (lock held).

        ``cum``: the records' sizes (RECORD_OVERHEAD included), accumulated. Each batch
        takes the longest prefix that fits (a bisect), then is sealed or waited for
        as in ``send``.
        """
        limit, n, j, before = self.batch_limit, len(values), 0, 0
        outputs: list[ProduceOutput] = []
        while j < n:
            if keyless:
                partition = self.partitioner.keyless
            batch = self.open.get(partition)
            if batch is None or batch.size + cum[j] - before > limit:
                batch = self._batch_for(partition, cum[j] - before, keyless, True)
                partition = batch.partition
            end = bisect_right(cum, before + limit - batch.size, j + 1)
            index = batch.builder.extend(None if keys is None else keys[j:end], values[j:end], ts,
                                         cum[end - 1] - before)
            outputs += map(ProduceOutput, repeat(batch.result), range(index, index + end - j))
            batch.size += cum[end - 1] - before
            before, j = cum[end - 1], end
            if batch.size >= limit and self.queued[partition] < self.queue_limit:
                self._seal(batch, direct=True)
        return outputs

    def _too_large(self, size: int) -> MessageTooLarge:
        return MessageTooLarge(f"record of {size} bytes for topic {self.topic!r} exceeds max_request_size="
                               f"{self.config.max_request_size} (with {_EMPTY_BATCH} bytes of batch header); "
                               f"records are never split")

    def _batch_for(self, partition: int, size: int, keyless: bool, block: bool) -> _Batch | None:
        """The open batch that takes a record of ``size`` bytes (lock held); waits for room."""
        deadline = None
        while True:
            batch = self.open.get(partition)
            if batch is None:
                deadline = time.monotonic() + self.linger_s
                batch = self.open[partition] = _Batch(partition, self.codec, deadline, self.where[partition])
                if deadline < self.sender_wake_at and not self.linger0:
                    self.work.notify()   # the sender thread sleeps past this batch's linger
                return batch
            if batch.size + size <= self.batch_limit:
                return batch
            if self.queued[partition] < self.queue_limit:
                self._seal(batch, direct=True)
            elif not block:
                return None
            else:
                now = time.monotonic()
                deadline = deadline or now + _QUEUE_WAIT_S
                if now >= deadline:
                    raise Timeout(f"send to {self.where[partition]} waited {_QUEUE_WAIT_S:g} s for room: "
                                  f"batch_queue_size={self.queue_limit} batches still unanswered")
                for link in self._take_writes():     # nothing queued by this call may wait with it
                    link.write_out()
                self.room.wait(deadline - now)
                if self.closing:
                    raise Closed(f"producer for topic {self.topic!r} closed while send waited for room")
            if keyless:
                partition = self.partitioner.keyless

    def _seal(self, batch: _Batch, direct: bool = False) -> None:
        """Move an open batch to its partition's send queue (lock held); with ``direct``,
        write it on its link from this thread when nothing of its partition waits."""
        p = batch.partition
        del self.open[p]
        batch.result.records = len(batch.builder)
        batch.result.seq = next(self._seq)
        self.queued[p] += 1
        self.unresolved.add(batch.result)
        if self.fixed is None and self.partition_count > 1 and p == self.partitioner.keyless:
            self.partitioner.next_keyless(self.partition_count, self._online())
        if direct and not self.unsent[p] and self._submit_now(batch):     # the fast path
            return
        self.unsent[p] += 1
        self.ready[p].append(batch)
        self.ready_parts.add(p)
        self.work.notify()

    def _submit_now(self, batch: _Batch) -> bool:
        """The fast path (lock held): encode ``batch`` and queue it on its leader's open
        link, for the caller to write out; False (nothing queued) when that needs the
        sender thread."""
        p, now = batch.partition, time.monotonic()
        if self.paused_until[p] > now:
            return False
        try:
            link = self._route(p, now)
            if link is None:
                return False
            self._build(batch)
            batch.first_sent = now
            if not link.submit(batch, partial(self._request, batch), write=False):
                return False
        except Exception:        # no leader, a build error, ...: the sender thread retries and reports
            return False
        self.to_write.append(link)       # written by the caller once it released the lock
        return True

    def _route(self, p: int, now: float) -> SpuLink | None:
        """The open link to ``p``'s leader, for the fast path (lock held). The table is
        read again after _ROUTE_TTL_S, and at once after any failure of the partition."""
        route = self.routes[p]
        if route is not None and now < route[1] and not route[0].broken:
            return route[0]
        link = self.links.get(self.meta.leader(self.topic, p).leader)
        if link is None or link.broken:
            self.routes[p] = None
            return None
        self.routes[p] = (link, now + _ROUTE_TTL_S)
        return link

    def _take_writes(self) -> list[SpuLink] | tuple:
        """Links with frames the fast path queued (lock held); the caller calls write_out on
        each after releasing the lock, so no socket call happens under it."""
        links = self.to_write
        if not links:
            return ()
        self.to_write = []
        return links

    def _online(self) -> frozenset[int] | None:
        """Partitions with an online leader, cached per metadata snapshot; None if unknown."""
        try:
            snap = self.meta.snapshot()
            if self._online_cache[0] is not snap:
                rows = snap.partitions_of(self.topic)
                self._online_cache = (snap, frozenset(r.partition for r in rows
                                                      if r.status == PartitionStatus.ONLINE and r.leader >= 0))
        except RilletError:
            return None
        return self._online_cache[1]

    def flush(self, timeout_s: float | None = None) -> None:
        """Seal every open batch and wait for all answers.

        Raises if any record failed since the previous flush (also records whose
        failure came before this call), naming how many and the first cause.
        """
        with self.lock:
            for batch in list(self.open.values()):
                self._seal(batch)        # may pass batch_queue_size by one batch per partition
            pending = sorted(self.unresolved, key=lambda r: r.seq)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for result in pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not result.wait_done(remaining):
                left = sum(r.records for r in pending if not r.done)
                raise Timeout(f"flush of topic {self.topic!r} did not finish within timeout={timeout_s} s: "
                              f"{_records(left)} still unanswered")
        with self.lock:
            failed, self.unreported = self.unreported, []
        if failed:
            first = min(failed, key=lambda r: r.seq).error
            count = sum(r.records for r in failed)
            raise type(first)(f"{_records(count)} failed since the last flush; first: {first}") from first

    def close(self, timeout_s: float | None = 30.0) -> None:
        if self.closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closing = self.closed = True
            left = [b for q in self.ready for b in q]
            for q in self.ready:
                q.clear()
            for batch in self.open.values():     # never sealed: count it like a sealed batch
                batch.result.records = len(batch.builder)
                self.queued[batch.partition] += 1
                left.append(batch)
            self.open.clear()
            links = list(self.links.values())
            self.work.notify_all()
            self.room.notify_all()
        for batch in left:
            self._finish(batch, error=Closed(f"producer for {batch.result.where} closed before the batch was sent"))
        for link in links:
            link.close()

    def statistics(self) -> ProducerStatistics:
        with self.lock:
            pending = sum(r.records for r in self.unresolved) + sum(len(b.builder) for b in self.open.values())
            return ProducerStatistics(records_pending=pending, first_error=None if self.first_error is None
                                      else str(self.first_error), **self.stats)

    # --- sender thread ---------------------------------------------------------------------
    def send_loop(self) -> None:
        while True:
            with self.lock:
                batches = self._collect()
            if batches is None:
                return
            for batch in batches:
                if self.paused_until[batch.partition] > time.monotonic():
                    self._hold(batch)        # an earlier batch of its partition failed meanwhile
                else:
                    self._dispatch(batch)
            with self.lock:              # handed on (or back in a queue, counted again)
                for batch in batches:
                    self.unsent[batch.partition] -= 1

    def _collect(self) -> list[_Batch] | None:
        """Wait (lock held) for batches to send; None once the producer is closed."""
        while not self.closed:
            now = time.monotonic()
            wake_at = None
            for batch in list(self.open.values()):
                if batch.deadline > now:
                    wake_at = batch.deadline if wake_at is None else min(wake_at, batch.deadline)
                elif self.queued[batch.partition] < self.queue_limit:
                    self._seal(batch)
                # else: linger expired but the queue is full; an answer will notify us
            out: list[_Batch] = []
            for p in list(self.ready_parts):
                if self.paused_until[p] > now:
                    wake_at = self.paused_until[p] if wake_at is None else min(wake_at, self.paused_until[p])
                    continue
                out.extend(self.ready[p])
                self.ready[p].clear()
                self.ready_parts.discard(p)
            if out:
                return out
            self.sender_wake_at = math.inf if wake_at is None else wake_at
            self.work.wait(None if wake_at is None else wake_at - now)
            self.sender_wake_at = 0.0        # awake: it looks at every open batch before sleeping again
        return None

    def _dispatch(self, batch: _Batch) -> None:
        try:
            if batch.payload is None:
                if self.idempotent:
                    with self.lock:
                        self._build(batch, sequence_only=True)
                self._build(batch)
                batch.first_sent = batch.first_sent or time.monotonic()
            row = self.meta.leader(self.topic, batch.partition, refresh=batch.attempt > 0)
            make = partial(self._request, batch)
            link = self.links.get(row.leader)
            if link is None or not link.submit(batch, make):
                if not self._new_link(row.leader).submit(batch, make):
                    raise BrokenConnection(f"cannot reach SPU {row.leader}: its connection failed at once")
        except RilletError as exc:
            self._failed(batch, exc)
        except Exception as exc:      # a bug must fail the batch, not kill the sender thread
            log.exception("sending a batch to %s failed", batch.result.where)
            self._finish(batch, error=InternalError(f"produce to {batch.result.where} failed: {exc!r}"))

    def _build(self, batch: _Batch, sequence_only: bool = False) -> None:
        """Fix the batch's producer id and sequence (lock held, unless done already) and
        build its bytes; a retry sends the same bytes."""
        if self.idempotent and batch.sequence < 0:
            p = batch.partition
            batch.producer_id, batch.sequence = self.producer_ids[p], self.next_sequence[p]
            self.next_sequence[p] = (batch.sequence + len(batch.builder)) % SEQUENCE_MODULUS
            batch.built = next(self._built_no)
            self.built[p].add(batch)
        if not sequence_only:
            epoch = 0 if self.idempotent else -1
            batch.payload = batch.builder.build(producer_id=batch.producer_id, producer_epoch=epoch,
                                                first_sequence=batch.sequence)

    def _request(self, batch: _Batch, cid: int) -> m.ProduceRequest:
        return m.ProduceRequest(cid, self.topic, batch.partition, self.isolation, self.timeout_ms,
                                memoryview(batch.payload))

    def _new_link(self, spu_id: int) -> SpuLink:
        link = SpuLink(spu_id, self.meta.spu_socket(spu_id), request_timeout_s=self.request_timeout_s,
                       timeout_note=f"timeout_ms={self.config.timeout_ms} plus a {_DEADLINE_MARGIN_S:g} s margin",
                       on_answer=self._on_answer, on_error=self._failed)
        with self.lock:
            if self.closed:
                link.close()
                raise Closed(f"producer for topic {self.topic!r} is closed")
            old = self.links.get(spu_id)
            self.links[spu_id] = link
        if old is not None:
            old.close()
        return link

    # --- answers (link threads) -------------------------------------------------------------
    def _on_answer(self, batch: _Batch, reply: m.Message) -> None:
        if isinstance(reply, m.ProduceResponse):
            self._finish(batch, base_offset=reply.base_offset)
        elif isinstance(reply, m.ErrorResponse):
            self._failed(batch, error_from_code(reply.code, reply.message))
        else:
            self._failed(batch, ProtocolError(f"unexpected {type(reply).__name__} answering a produce request"))

    def _failed(self, batch: _Batch, exc: RilletError) -> None:
        """Retry a retriable failure under the policy (at-least-once), else end the batch."""
        self.routes[batch.partition] = None      # the fast path reads the table again
        if isinstance(exc, OutOfOrderSequence) and self.idempotent:
            with self.lock:
                if not self.closed:
                    self._out_of_order(batch)
                    return
        if self.at_least_once and exc.retriable and not self.closed:
            elapsed_ms = (time.monotonic() - batch.first_sent) * 1000
            delay_ms = self.policy.next_delay_ms(batch.attempt, elapsed_ms)
            if delay_ms is not None:
                with self.lock:
                    if not self.closed:
                        self._requeue(batch, time.monotonic() + delay_ms / 1000)
                        return
        self._finish(batch, error=self._describe(batch, exc))

    def _requeue(self, batch: _Batch, due: float) -> None:
        """Put a failed batch back in seal order in front of later ones; pause the partition (lock held)."""
        batch.attempt += 1
        self.stats["retries"] += 1
        self.paused_until[batch.partition] = max(self.paused_until[batch.partition], due)
        self._enqueue(batch)

    def _out_of_order(self, batch: _Batch) -> None:
        """The leader refused ``batch`` for a hole before it, so it is not stored (lock held).
        While a batch before it in its sequence is unanswered, send it again after that one.
        Otherwise the hole is for good: rebuild it in a new sequence (a new producer id for
        the partition, from 0, unless an earlier refused batch started one already)."""
        p = batch.partition
        if not any(b.producer_id == batch.producer_id and b.built < batch.built for b in self.built[p]):
            if batch.producer_id == self.producer_ids[p]:
                self.producer_ids[p], self.next_sequence[p] = _new_producer_id(), 0
                log.warning("%s: sequence %d of producer %d follows a batch that failed for good or was lost; "
                            "the partition's sequence restarts under producer %d", batch.result.where,
                            batch.sequence, batch.producer_id, self.producer_ids[p])
            self.built[p].discard(batch)
            batch.payload, batch.sequence = None, -1
        self.stats["retries"] += 1
        self.paused_until[p] = max(self.paused_until[p], time.monotonic() + _OUT_OF_ORDER_PAUSE_S)
        self._enqueue(batch)

    def _hold(self, batch: _Batch) -> None:
        """Send ``batch`` after the retry its partition waits for (not an attempt of its own)."""
        with self.lock:
            if not self.closed:
                self._enqueue(batch)
                return
        self._finish(batch, error=Closed(f"producer for {batch.result.where} closed before the batch was sent"))

    def _enqueue(self, batch: _Batch) -> None:
        p = batch.partition
        queue = self.ready[p]
        at = next((i for i, b in enumerate(queue) if b.result.seq > batch.result.seq), len(queue))
        queue.insert(at, batch)
        self.unsent[p] += 1
        self.ready_parts.add(p)
        self.work.notify()

    def _describe(self, batch: _Batch, exc: RilletError) -> RilletError:
        msg = f"produce to {batch.result.where} failed"
        if batch.attempt:
            msg += f" after {batch.attempt} retries"
        msg += f": {exc}"
        if isinstance(exc, CompressionError):
            msg += f" (this producer compresses with {Compression(self.codec).name.rstrip('_').lower()})"
        error = type(exc)(msg)
        error.__cause__ = exc
        return error

    def _finish(self, batch: _Batch, base_offset: int = -1, error: RilletError | None = None) -> None:
        """End a batch exactly once: free its queue slot and resolve its outputs."""
        result = batch.result
        with self.lock:
            if batch.finished:
                return
            batch.finished = True
            p = batch.partition
            was_full = self.queued[p] >= self.queue_limit
            self.queued[p] -= 1
            self.built[p].discard(batch)
            self.unresolved.discard(result)
            if error is None:
                self.stats["records_sent"] += result.records
                self.stats["batches_sent"] += 1
            else:
                self.stats["records_failed"] += result.records
                self.first_error = self.first_error or error
                result.error = error             # set before flush may read it
                self.unreported.append(result)
            if was_full:
                self.room.notify_all()
                self.work.notify()
        batch.builder = batch.payload = None
        result.resolve(base_offset, error)


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


_LIVE_PRODUCERS: "weakref.WeakSet[TopicProducer]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """On a normal interpreter exit, open producers send what they hold (bounded wait).

    Nothing runs on SIGKILL or os._exit: records still buffered or unanswered then
    are lost, and at-most-once records in flight may or may not have been stored.
    """
    for producer in list(_LIVE_PRODUCERS):
        try:
            producer.close(timeout=_EXIT_FLUSH_S)
        except RilletError as exc:
            log.warning("producer for topic %r at exit: %s", producer.topic, exc)
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


_KEY_TYPES = frozenset((bytes, type(None)))
_VALUE_TYPES = frozenset((bytes,))
_PAIR = frozenset((2,))
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def _split_pairs(chunk: list) -> tuple[list | None, list, Exception | None]:
    """Keys (None when all are None) and values of (key, value) pairs, as bytes.

    When a pair is bad (not a pair, a type ``_to_bytes`` refuses), the pairs before
    it and its error, for the caller to send and then raise. The common case (bytes
    values, None or bytes keys) costs a few C-level passes over the chunk.
    """
    try:
        if not _PAIR.issuperset(map(len, chunk)):
            return _split_slowly(chunk)
        keys, values = list(map(_FIRST, chunk)), list(map(_SECOND, chunk))
    except (TypeError, LookupError):       # not a sequence, a mapping, ...: as ``for k, v in`` would say
        return _split_slowly(chunk)
    if not _VALUE_TYPES.issuperset(map(type, values)):
        return _split_slowly(chunk)
    if keys.count(None) == len(keys):
        return None, values, None
    if not _KEY_TYPES.issuperset(map(type, keys)):
        return _split_slowly(chunk)
    return keys, values, None


def _split_slowly(chunk: list) -> tuple[list | None, list, Exception | None]:
    keys: list = []
    values: list = []
    error = None
    try:
        for k, v in chunk:
            key, value = None if k is None else _to_bytes(k, "key"), _to_bytes(v, "value")
            keys.append(key)
            values.append(value)
    except Exception as exc:      # what a loop of send would have raised at this record
        error = exc
    return None if keys.count(None) == len(keys) else keys, values, error


class TopicProducer:
    """Sends records to one topic. Thread-safe; close() (or a with block) flushes."""

    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig | None = None) -> None:
        self._core = _ProducerCore(meta, topic, config or TopicProducerConfig())
        self.topic = topic
        self.config = self._core.config
        _LIVE_PRODUCERS.add(self)

    def send(self, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        """Queue one record (key None: keyless). Returns at once unless the partition's
        batch queue is full (backpressure; Timeout after 30 s). MessageTooLarge if the
        record cannot fit in ``max_request_size``."""
        if key is not None and key.__class__ is not bytes:
            key = _to_bytes(key, "key")
        if value.__class__ is not bytes:
            value = _to_bytes(value, "value")
        return self._core.send(key, value, None)

    def send_string(self, value: str) -> ProduceOutput:
        """Send a keyless record with a str value (Fluvio sends an empty key; rillet sends none)."""
        return self._core.send(None, _to_bytes(value, "value"), None)

    def send_to_partition(self, partition: int, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        """Send one record to ``partition``, whatever its key."""
        if not 0 <= partition < self._core.partition_count:
            raise InvalidArgument(f"partition {partition} does not exist: topic {self.topic!r} has {self._core.partition_count}")
        k = None if key is None else _to_bytes(key, "key")
        return self._core.send(k, _to_bytes(value, "value"), partition)

    def send_all(self, records) -> list[ProduceOutput]:
        """Send (key, value) pairs in order, as a loop of ``send`` would, at a fraction of
        the cost per record; returns their outputs. A bad record (wrong type, too large)
        raises after the records before it were queued."""
        core = self._core
        if core.linger0:          # every record is its own batch: send's fast path
            send = core.send
            return [send(None if k is None else _to_bytes(k, "key"), _to_bytes(v, "value"), None) for k, v in records]
        outputs: list[ProduceOutput] = []
        it = iter(records)
        while chunk := list(islice(it, _SEND_ALL_CHUNK)):
            keys, values, error = _split_pairs(chunk)
            if values:
                outputs += core.send_many(keys, values)
            if error is not None:
                raise error
        return outputs

    def flush(self, timeout: float | None = None) -> None:
        """Send every buffered record and wait for the answers; raises if any failed
        (the error names how many records failed and the first cause)."""
        self._core.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (at most ``timeout`` seconds), then stop; unsent records fail with Closed."""
        self._core.close(timeout)

    def statistics(self) -> ProducerStatistics:
        return self._core.statistics()

    # asyncio flavour: the same core. A send that would wait for room waits in a worker
    # thread, so the event loop never blocks on backpressure.
    async def async_send(self, key, value) -> ProduceOutput:
        k, v = None if key is None else _to_bytes(key, "key"), _to_bytes(value, "value")
        out = self._core.send(k, v, None, block=False)
        if out is None:
            import asyncio
            out = await asyncio.to_thread(self._core.send, k, v, None)
        return out

    async def async_send_string(self, value: str) -> ProduceOutput:
        return await self.async_send(None, value)

    async def async_send_all(self, records) -> list[ProduceOutput]:
        return [await self.async_send(k, v) for k, v in records]

    async def async_flush(self) -> None:
        import asyncio
        await asyncio.to_thread(self.flush)

    def __enter__(self) -> "TopicProducer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:                      # do not hide the exception that ended the block
            self.close()
        except RilletError as close_error:
            log.warning("closing the producer for topic %r: %s", self.topic, close_error)

    def __del__(self) -> None:
        try:
            self._core.close(timeout_s=_EXIT_FLUSH_S)
        except Exception:
            pass
