"""The producer's caller side: ``send`` / ``send_all`` append records to each
partition's open batch, seal full batches (or every batch with ``linger(0)``) and
take the fast path (client/_producer.py's docstring describes it: the caller
encodes a sealed batch and writes it on the leader's link itself).

``_Accumulator`` is a part of ``_ProducerCore`` (client/_producer.py), which owns
the state these methods share with the sender thread (client/_sender.py), all of
it guarded by ``self.lock``.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from functools import partial
from itertools import accumulate, repeat
from operator import add, itemgetter, sub

from rillet.ipc.errors import Closed, MessageTooLarge, RilletError, Timeout
from rillet.ipc.metadata_table import PartitionStatus
from rillet.ipc.records import KEYLESS_OVERHEAD, RECORD_OVERHEAD, coerce_bytes, keyless_overhead

from ._produce_output import ProduceOutput, _BatchResult
from ._producer_config import EMPTY_BATCH
from ._spu_link import SpuLink

_QUEUE_WAIT_S = 30.0            # Fluvio's BatchQueueWaitTimeout: longest wait of send() for room
SEND_ALL_CHUNK = 1024           # send_all holds the lock for this many records at most (~0.5 ms)
# The fast path trusts a partition's leader link this long before reading the table again
# (a read costs 3-8 us); a leader change inside it fails the batch as it would any: retried.
_ROUTE_TTL_S = 0.005


class _Batch:
    """One batch from its first record to its answer: open, then sealed (queued,
    in flight, maybe retried), then finished."""

    __slots__ = ("partition", "records", "marks", "ts", "t_lo", "t_hi", "plain", "loose", "lengths", "vlen",
                 "unit", "sized", "room", "first_ts", "last_ts", "result", "deadline", "size", "attempt",
                 "first_sent", "payload", "finished", "producer_id", "sequence", "built")

    def __init__(self, partition: int, deadline: float, where: str) -> None:
        self.partition = partition
        # The records, appended here by send itself (a BatchBuilder.append per record was a
        # third Python call per send): a keyless record as its value alone (bytes), a keyed one
        # as its wire tuple (timestamp_ms - first_ts, key, value, None). ``marks`` give the
        # keyless values their deltas: (index, delta) for the values from index on, one mark
        # each time the millisecond changes (ipc/record_runs.py encodes them, one join a mark).
        self.records: list = []
        self.marks: list[tuple[int, int]] = []
        self.ts = -1                     # the last mark's timestamp: send appends a value at it alone
        self.t_lo = self.t_hi = 0        # ts as a window of time_ns() values: [t_lo, t_hi)
        self.plain = True                # keyless values only: built by record_runs.build_keyless_batch
        self.loose = False               # some keyless values: built through record_runs.wire_records
        self.lengths = -2                # the one length of its keyless values (-2: none yet, -1: several)
        # While the batch is the producer's ``hot`` one (see TopicProducer.send), send appends
        # keyless values of length ``vlen`` without adding up their sizes: ``size`` counts
        # records[:sized], each one after it counts ``unit`` bytes (``settle`` adds them), and
        # ``room`` is the record count up to which they stay below the limit. ``vlen`` -1:
        # values of any length, their sizes added up one by one.
        self.vlen = -1
        self.unit = 0
        self.sized = 0
        self.room = 0
        self.first_ts = 0
        # The greatest timestamp in it, kept as records come (one comparison each; a clock
        # read, so never out of range): the build then does not scan the records for it.
        self.last_ts = 0
        self.result = _BatchResult(partition, where)
        self.deadline = deadline         # linger expiry (monotonic)
        self.size = EMPTY_BATCH         # uncompressed estimate, bytes (BatchBuilder.estimated_size's)
        self.attempt = 0                 # retries made
        self.first_sent = 0.0
        self.payload: bytes | None = None
        self.finished = False
        self.producer_id = -1            # idempotence: its producer id and first sequence, once built
        self.sequence = -1
        self.built = -1                  # build order within the producer

    def settle(self) -> None:
        """Count send's appends since the batch became hot into ``size``."""
        n = len(self.records)
        if n != self.sized:
            self.size += (n - self.sized) * self.unit
            self.sized = n

    def heat(self, limit: int) -> None:
        """Make the batch (its size exact) hot: send appends a keyless value to it while the
        batch stays below ``limit``, by count when its keyless values are all one length."""
        length = self.lengths
        if length >= 0:
            self.vlen, self.unit, self.sized = length, length + keyless_overhead(length), len(self.records)
            self.room = self.sized + (limit - 1 - self.size) // self.unit
        else:                            # sized one by one: settle must add nothing
            self.vlen, self.unit = -1, 0

    def note_lengths(self, length: int) -> None:
        """Keyless values of ``length`` (-1: of several lengths) were appended."""
        if self.lengths != length:
            self.lengths = length if self.lengths == -2 else -1

    def stamp(self, ts: int) -> None:
        """Make ``ts`` the timestamp of the records appended next (a record's timestamp is
        the time of its send): a mark, and the batch's first and greatest timestamps."""
        if not self.records:
            self.first_ts = ts
        self.marks.append((len(self.records), ts - self.first_ts))
        self.ts = ts
        self.t_lo = ts * 1_000_000
        self.t_hi = self.t_lo + 1_000_000
        if ts > self.last_ts:
            self.last_ts = ts


class _Accumulator:
    """The caller-side methods of _ProducerCore (lock held where they say so)."""

    def send(self, key: bytes | None, value: bytes, partition: int | None, block: bool = True) -> ProduceOutput | None:
        """Append one record; None only when ``block`` is False and send would wait."""
        # Too large is judged with RECORD_OVERHEAD for every record (as it always was); a
        # keyless record then takes its smaller keyless_overhead in its batch.
        size = len(value) + RECORD_OVERHEAD if key is None else len(key) + len(value) + RECORD_OVERHEAD
        if size > self.max_record:
            raise self._too_large(size)
        if key is None:
            size = len(value) + keyless_overhead(len(value))
        ts = time.time_ns() // 1_000_000
        links = ()
        try:
            with self.lock:
                try:
                    if self.closing:
                        raise Closed(f"producer for topic {self.topic!r} is closed")
                    self._unhot()
                    keyless = False
                    routed = partition is None
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
                        self._unhot()            # another thread's send may have made one while it waited
                    records = batch.records
                    index = len(records)
                    if ts != batch.ts:
                        batch.stamp(ts)
                    if key is None:
                        records.append(value)
                        batch.loose = True
                        batch.note_lengths(len(value))
                    else:
                        records.append((ts - batch.first_ts, key, value, None))
                        batch.plain = False
                    batch.size += size
                    if (self.linger0 or batch.size >= self.batch_limit) and self.queued[partition] < self.queue_limit:
                        self._seal(batch, direct=True)
                    elif routed and key is None:
                        self.hot = batch         # TopicProducer.send appends the next keyless values to it
                        batch.heat(self.fast_limit)
                    return ProduceOutput(batch.result, index)
                finally:
                    if self.to_write:
                        links, self.to_write = self.to_write, []
        finally:
            for link in links:          # the fast path's frames, written once the lock is released
                link.write_out()
                link.reap()             # answers already in: delivered here, no link thread wake-up

    def send_many(self, keys: list | None, values: list) -> list[ProduceOutput]:
        """Append records in order, as ``send`` one by one would (``keys`` None: all keyless).

        Records of one partition keep their order; a record too large fails as in
        ``send``, after the records before it were queued (their outputs are lost
        with the raise, as with a loop of ``send``).
        """
        if not values:
            return []
        vlens = list(map(len, values))
        klens = None if keys is None else [0 if k is None else len(k) for k in keys]
        length = -1                              # the values' one length, if they have one
        # Each record's size as send sizes it: value and key plus RECORD_OVERHEAD, or for a
        # keyless one its value plus keyless_overhead (KEYLESS_OVERHEAD under 256 bytes).
        if keys is None and vlens.count(vlens[0]) == len(vlens):
            one = vlens[0] + keyless_overhead(vlens[0])
            cum = range(one, one * len(vlens) + 1, one)     # one size: the sums without making them
            length = vlens[0]
        elif keys is None:
            sizes = (map(add, vlens, repeat(KEYLESS_OVERHEAD)) if max(vlens) < 0x100
                     else [n + keyless_overhead(n) for n in vlens])
            cum = list(accumulate(sizes))        # bytes up to each record
        elif None not in keys:
            cum = list(accumulate(map(add, map(add, vlens, klens), repeat(RECORD_OVERHEAD))))
        else:
            cum = list(accumulate([n + keyless_overhead(n) if k is None else n + kn + RECORD_OVERHEAD
                                   for k, n, kn in zip(keys, vlens, klens)]))
        too_large = None
        # Too large as send judges it: value and key plus RECORD_OVERHEAD. Their sum bounds
        # each; only past it is each record looked at.
        if sum(vlens) + (0 if klens is None else sum(klens)) + RECORD_OVERHEAD * len(vlens) > self.max_record:
            judged = vlens if klens is None else list(map(add, vlens, klens))
            first = next((i for i, n in enumerate(judged) if n + RECORD_OVERHEAD > self.max_record), None)
            if first is not None:
                too_large = self._too_large(judged[first] + RECORD_OVERHEAD)
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
                        self._unhot()
                        outputs = self._append_routed(keys, values, cum, ts, length)
                    finally:
                        links = self._take_writes()
        finally:
            for link in links:
                link.write_out()
                link.reap()
        if too_large is not None:
            raise too_large
        return outputs

    def _append_routed(self, keys, values, cum, ts: int, length: int) -> list[ProduceOutput]:
        """Split records into per-partition runs, in order, and append each (lock held).
        ``length``: the values' one length, or -1."""
        if self.fixed is not None:
            return self._append_run(self.fixed, False, keys, values, cum, ts, length)
        if keys is None:
            return self._append_run(0, True, None, values, cum, ts, length)
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

    def _append_run(self, partition: int, keyless: bool, keys, values, cum, ts: int,
                    length: int = -1) -> list[ProduceOutput]:
        """Append records of one partition (or keyless ones) batch by batch (lock held).

        ``cum``: the records' sizes (their overhead included), accumulated (a list, or a
        range when they are all one size). Each batch takes the longest prefix that fits
        (a bisect), then is sealed or waited for as in ``send``. With ``keys`` None the
        values (of the one ``length``, or -1) go in as they are (the build encodes them in one
        join a mark, ipc/record_runs.py), else as wire tuples.
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
                self._unhot()                    # another thread's send may have made one while it waited
            end = bisect_right(cum, before + limit - batch.size, j + 1)
            records = batch.records
            index = len(records)
            if ts != batch.ts:
                batch.stamp(ts)
            if keys is None:
                records += values if j == 0 and end == n else values[j:end]
                batch.loose = True
                batch.note_lengths(length)
            else:
                records.extend(zip(repeat(ts - batch.first_ts), keys[j:end], values[j:end], repeat(None)))
                batch.plain = False
            outputs += map(ProduceOutput, repeat(batch.result), range(index, index + end - j))
            batch.size += cum[end - 1] - before
            before, j = cum[end - 1], end
            if batch.size >= limit and self.queued[partition] < self.queue_limit:
                self._seal(batch, direct=True)
        return outputs

    def _too_large(self, size: int) -> MessageTooLarge:
        return MessageTooLarge(f"record of {size} bytes for topic {self.topic!r} exceeds max_request_size="
                               f"{self.config.max_request_size} (with {EMPTY_BATCH} bytes of batch header); "
                               f"records are never split")

    def _batch_for(self, partition: int, size: int, keyless: bool, block: bool) -> _Batch | None:
        """The open batch that takes a record of ``size`` bytes (lock held); waits for room."""
        deadline = None
        while True:
            batch = self.open.get(partition)
            if batch is None:
                deadline = time.monotonic() + self.linger_s
                batch = self.open[partition] = _Batch(partition, deadline, self.where[partition])
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
                for link in self.links.values():     # answers free the room: have them read at once
                    link.urge()
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
        self._unhot()                    # the keyless partition may change: send's slow path sets it again
        batch.result.records = len(batch.records)
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
            _urge_on(batch, link)
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

    def _unhot(self) -> None:
        """No batch is hot any more (lock held): the one that was counts its records' sizes.
        Every path but TopicProducer.send's appends reads exact sizes after this."""
        batch = self.hot
        if batch is not None:
            self.hot = None
            batch.settle()

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
            key, value = None if k is None else to_bytes(k, "key"), to_bytes(v, "value")
            keys.append(key)
            values.append(value)
    except Exception as exc:      # what a loop of send would have raised at this record
        error = exc
    return None if keys.count(None) == len(keys) else keys, values, error



def _urge_on(batch: _Batch, link: SpuLink) -> None:
    """Waiters of ``batch`` urge ``link`` (it reads answers lazily otherwise); one waiting
    already urges it now."""
    result = batch.result
    result.urge, result.read_wait = link.urge, link.wait_answer
    if result.waited:
        link.urge()


def to_bytes(value, what: str) -> bytes:
    """A key or value the producer takes (bytes-like, str as UTF-8, a list of ints) as bytes;
    TypeError for anything else, as the producer always raised."""
    return coerce_bytes(value, what, text=True)
