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
  request deadline; it resolves each batch, or hands a failure back here. While
  the caller keeps sending, the caller reads the answers already in after each
  send instead (client/_spu_link.py, lazy reading): no wake-up per answer.

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
batch is one bisect over cumulative sizes (no sums made when the values are all one
size), and its outputs are made by one ``map``. What is left per record is a ProduceOutput
and, for keyed records, a wire tuple: a keyless record is kept as its value itself, and the
build encodes a batch's keyless values with one ``bytes.join`` per millisecond mark
(ipc/record_runs.py). ``send`` itself, when a keyless record joins the hot batch (the open
batch keyless records go to, in the same millisecond) and leaves it below the limit (most
records), does that in its own frame: one lock, one clock read, one append, no other
Python call; a value of the batch's one length is counted against the batch's room instead
of sized. A keyed record the same way to its partition's open batch, as a wire tuple (on
several partitions after the partitioner's cached hash lookup).

Fast path. Handing a sealed batch to the sender thread costs thread wake-ups and,
under the GIL, often a wait for the switch interval (5 ms); with ``linger(0)`` that
capped the producer at about 5,000 records/s. So when the caller seals a batch
(full, or linger 0) and its partition has no sealed batch waiting for the sender
thread (``unsent``: in its queue, in its hands, or back for a retry), the caller
encodes it and queues its frame on the leader's link under the producer lock (so
concurrent callers keep seal order), then writes it once the lock is released
(``SpuLink.write_out``; the link orders frames as queued), and takes the answers
already in (``SpuLink.reap``). Every batch of the
partition sealed before it was already on a link, so the order is the sender
thread's; the link thread completes it as usual. No open link yet, a broken
link, a paused partition, a build error: the batch goes to the sender thread,
which handles and reports it.

Modules. The caller side is client/_accumulator.py, the sender thread and the
answers client/_sender.py, the configuration client/_producer_config.py; this
module holds the state they share (``_ProducerCore``) and the public shell.

The public ``TopicProducer`` is a thin shell over ``_ProducerCore`` so that
garbage-collecting it flushes and stops the threads (the threads hold the core,
never the shell).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from itertools import islice
from time import time_ns as _time_ns

from rillet.ipc.compression import Codec
from rillet.ipc.errors import Closed, InvalidArgument, RilletError, Timeout
from rillet.ipc.heap import keep_freed_heap
from rillet.ipc.records import KEYLESS_OVERHEAD, RECORD_OVERHEAD, keyless_overhead

from ._accumulator import SEND_ALL_CHUNK, _Accumulator, _Batch, _split_pairs, to_bytes
from ._enums import DeliverySemantic
from ._metadata import MetadataView
from ._partitioner import Partitioner
from ._produce_output import ProduceOutput, RecordMetadata, _BatchResult
from ._producer_config import EMPTY_BATCH, TopicProducerConfig, TopicProducerConfigBuilder
from ._ring_channel import ring_capacity, ring_min_bytes, ring_wanted
from ._spu_link import RING_MIN_BYTES
from ._sender import IDEMPOTENT_MAX_QUEUE, _new_producer_id, _Sender
from ._spu_link import SpuLink

__all__ = ["TopicProducer", "TopicProducerConfig", "TopicProducerConfigBuilder", "ProducerStatistics",
           "ProduceOutput", "RecordMetadata"]

log = logging.getLogger("rillet.producer")

_EXIT_FLUSH_S = 5.0             # bounded flush of open producers at interpreter exit


@dataclass(frozen=True)
class ProducerStatistics:
    """Counts since the producer was made (``TopicProducer.statistics()``)."""

    records_sent: int        # acknowledged by the leader
    records_failed: int      # ended with an error (their outputs raise it)
    records_pending: int     # buffered or awaiting an answer
    batches_sent: int
    retries: int
    first_error: str | None  # the first failure, for a one-line report


class _ProducerCore(_Accumulator, _Sender):
    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig) -> None:
        self.meta = meta
        self.topic = topic
        self.config = config
        n = self.partition_count = meta.partition_count(topic)
        if config.partition is not None and config.partition >= n:
            raise InvalidArgument(f"partition {config.partition} does not exist: topic {topic!r} has {n}")
        self.fixed = config.partition
        self.partitioner = Partitioner()
        # Its links' produce rings (client/_ring_channel.py), from the environment once: a bad
        # value is refused here, when the producer is made, not when its first link opens.
        self.ring_capacity = ring_capacity(config.max_request_size) if ring_wanted() else 0
        self.ring_min_bytes = ring_min_bytes(RING_MIN_BYTES)
        self.batch_limit = min(config.batch_size, config.max_request_size)
        # TopicProducer.send appends in place while a batch stays below this (0: never, since
        # at linger 0 every record is sealed at once).
        self.fast_limit = 0 if config.linger_ms == 0 else self.batch_limit
        self.max_record = config.max_request_size - EMPTY_BATCH
        self.queue_limit = config.batch_queue_size
        self.codec = Codec(int(config.compression))     # a Codec: records.build_batch takes it as is
        self.linger_s = config.linger_ms / 1000
        self.linger0 = config.linger_ms == 0
        self.at_least_once = config.delivery_semantic == DeliverySemantic.AtLeastOnce
        self.idempotent = self.at_least_once
        if self.idempotent:
            self.queue_limit = min(self.queue_limit, IDEMPOTENT_MAX_QUEUE)
        # Per partition: the producer id and next sequence of the batch built next, and the
        # built batches not yet answered (to tell a hole still being filled from one for good).
        self.producer_ids = [_new_producer_id() if self.idempotent else -1] * n
        self.next_sequence = [0] * n
        self.built: list[set[_Batch]] = [set() for _ in range(n)]
        self._built_no = itertools.count()
        self.policy = config.retry_policy
        self.isolation, self.timeout_ms = int(config.isolation), config.timeout_ms
        self.where = [f"{topic}/{p}" for p in range(n)]
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)      # the sender thread waits here
        self.room = threading.Condition(self.lock)      # send() waits here for queue room
        self.open: dict[int, _Batch] = {}
        # The open batch a keyless record goes to now, once send's slow path put one there
        # (None after any seal): TopicProducer.send appends to it without routing.
        self.hot: _Batch | None = None
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
                batch.result.records = len(batch.records)
                self.queued[batch.partition] += 1
                left.append(batch)
            self._unhot()
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
            pending = sum(r.records for r in self.unresolved) + sum(len(b.records) for b in self.open.values())
            return ProducerStatistics(records_pending=pending, first_error=None if self.first_error is None
                                      else str(self.first_error), **self.stats)


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


class TopicProducer:
    """Sends records to one topic. Thread-safe; close() (or a with block) flushes."""

    def __init__(self, meta: MetadataView, topic: str, config: TopicProducerConfig | None = None) -> None:
        keep_freed_heap()               # freed batches stay in the heap (ipc/heap.py says why)
        self._core = _ProducerCore(meta, topic, config or TopicProducerConfig())
        self.topic = topic
        self.config = self._core.config
        _LIVE_PRODUCERS.add(self)

    def send(self, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        """Queue one record (key None: keyless). Returns at once unless the partition's
        batch queue is full (backpressure; Timeout after 30 s). MessageTooLarge if the
        record cannot fit in ``max_request_size``."""
        core = self._core
        if key is None and value.__class__ is bytes:
            # The commonest case in this one call (each Python call costs ~70 ns of a ~0.4 us
            # send): a keyless record joins the open batch keyless records go to (core.hot,
            # set by core.send, None after any seal or close) in the same millisecond as the
            # record before it (so no mark: ipc/record_runs.py) and leaves it below the batch
            # limit (fast_limit is 0 at linger 0: every record seals). It goes in as its value.
            # A value of the batch's one length (vlen) is counted, not sized: the batch holds
            # ``room`` records of it (_accumulator._Batch.heat); any length is sized (vlen -1).
            # The millisecond is compared as a window of time_ns() values: no division.
            now = _time_ns()
            lock = core.lock
            lock.acquire()                      # not `with`: 50 ns less on this path
            try:
                batch = core.hot
                if batch is not None and batch.t_lo <= now < batch.t_hi:
                    records = batch.records
                    n = len(records)
                    if len(value) == batch.vlen:
                        if n < batch.room:
                            records.append(value)
                            return ProduceOutput(batch.result, n)
                    elif batch.vlen < 0:
                        size = batch.size + len(value) + (KEYLESS_OVERHEAD if len(value) < 0x100
                                                          else keyless_overhead(len(value)))
                        if size < core.fast_limit:
                            records.append(value)
                            batch.size = size
                            return ProduceOutput(batch.result, n)
            finally:
                lock.release()
            return core.send(None, value, None)
        if value.__class__ is bytes and key.__class__ is bytes:
            # A keyed record the same way, to its partition's open batch, as its wire tuple.
            # What core.send does besides is implied: a batch in `open` has a record (so
            # first_ts and a mark are set) and the producer is not closing (_shutdown empties
            # `open`), and a record that fits under the batch limit fits max_request_size.
            ts = _time_ns() // 1_000_000
            lock = core.lock
            lock.acquire()                      # not `with`: 50 ns less on this path
            try:
                p = core.fixed
                if p is None:
                    p = core.partitioner.for_key(key, core.partition_count)
                batch = core.open.get(p)
                if batch is not None and batch is not core.hot:      # the hot one's size is not exact
                    size = batch.size + len(value) + RECORD_OVERHEAD + len(key)
                    if size < core.fast_limit:
                        records = batch.records
                        records.append((ts - batch.first_ts, key, value, None))
                        batch.plain = False
                        batch.size = size
                        if ts > batch.last_ts:
                            batch.last_ts = ts
                        return ProduceOutput(batch.result, len(records) - 1)
            finally:
                lock.release()
            return core.send(key, value, None)
        if key is not None and key.__class__ is not bytes:
            key = to_bytes(key, "key")
        if value.__class__ is not bytes:
            value = to_bytes(value, "value")
        return core.send(key, value, None)

    def send_string(self, value: str) -> ProduceOutput:
        """Send a keyless record with a str value (Fluvio sends an empty key; rillet sends none)."""
        return self._core.send(None, to_bytes(value, "value"), None)

    def send_to_partition(self, partition: int, key: bytes | str | None, value: bytes | str) -> ProduceOutput:
        """Send one record to ``partition``, whatever its key."""
        if not 0 <= partition < self._core.partition_count:
            raise InvalidArgument(f"partition {partition} does not exist: topic {self.topic!r} has {self._core.partition_count}")
        k = None if key is None else to_bytes(key, "key")
        return self._core.send(k, to_bytes(value, "value"), partition)

    def send_all(self, records) -> list[ProduceOutput]:
        """Send (key, value) pairs in order, as a loop of ``send`` would, at a fraction of
        the cost per record; returns their outputs. A bad record (wrong type, too large)
        raises after the records before it were queued."""
        core = self._core
        if core.linger0:          # every record is its own batch: send's fast path
            send = core.send
            return [send(None if k is None else to_bytes(k, "key"), to_bytes(v, "value"), None) for k, v in records]
        outputs: list[ProduceOutput] = []
        it = iter(records)
        while chunk := list(islice(it, SEND_ALL_CHUNK)):
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
        k, v = None if key is None else to_bytes(key, "key"), to_bytes(value, "value")
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
