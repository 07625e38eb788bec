"""Idempotent producers: which batches a partition already stored, per producer id.

Kafka's KIP-98 rule, kept pure (no I/O, no clock). An idempotent producer stamps every
batch with its producer id and the sequence of its first record; sequences advance by
the record count, per partition, modulo 2**31 (Kafka's int32 wrap). For each producer
id the table keeps the next expected sequence and the last ``window`` batches stored
(first sequence, record count, base offset). Before the leader appends a batch it asks
:meth:`ProducerStateTable.check`:

* producer id < 0 (at-most-once, or a client without idempotence): append, no checks;
* the expected next sequence: append (the hot path: one dict lookup, one compare);
* the sequence range of a cached batch: a duplicate (a retry whose answer was lost),
  answered with the original offsets and not stored again;
* anything else: OutOfOrderSequence, never a silent hole.

A producer id the table does not know must start at sequence 0. When the table may have
forgotten producers (the log it was rebuilt from does not start at offset 0, a producer
was evicted, a truncation emptied an overflowed window) an unknown id is taken at any
sequence: its earlier batches may simply be out of sight.

The state is not stored anywhere: batch headers carry it, so the replica rebuilds the
table by :meth:`apply`-ing the headers of its log on open, and a follower applies every
batch it copies, so a new leader already knows what the old one stored.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from rillet.ipc.errors import OutOfOrderSequence
from rillet.ipc.records import IDEMPOTENT_WINDOW, SEQUENCE_MODULUS

# Batches remembered per producer id. The producer keeps fewer batches unanswered per
# partition (client/_producer.py); a retried batch is never older than that, so it is found.
DEFAULT_WINDOW = IDEMPOTENT_WINDOW
# Producer ids remembered per partition; the least recently active is forgotten first (every
# producer instance has its own id, so a partition written by many short-lived producers
# would otherwise keep them all).
DEFAULT_MAX_PRODUCERS = 512


class Duplicate(NamedTuple):
    """The batch was stored before: its records are at [base_offset, next_offset)."""

    base_offset: int
    next_offset: int


class _Producer:
    __slots__ = ("next_sequence", "batches", "overflowed")

    def __init__(self, window: int) -> None:
        self.next_sequence = 0
        self.batches: deque[tuple[int, int, int]] = deque(maxlen=window)   # (first_sequence, count, base)
        self.overflowed = False          # batches older than the window existed


class ProducerStateTable:
    """Per producer id, the next sequence and the last batches stored in one partition."""

    def __init__(self, topic: str, partition: int, *, complete: bool = True, window: int = DEFAULT_WINDOW,
                 max_producers: int = DEFAULT_MAX_PRODUCERS) -> None:
        self.topic, self.partition = topic, partition      # for error messages
        # True while the table has seen every batch of the log since offset 0.
        self.complete = complete
        self.window = window
        self.max_producers = max_producers
        self._producers: dict[int, _Producer] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def next_sequence(self, producer_id: int) -> int | None:
        entry = self._producers.get(producer_id)
        return None if entry is None else entry.next_sequence

    def check(self, producer_id: int, first_sequence: int, count: int) -> Duplicate | None:
        """None: append the batch. A Duplicate: answer with its offsets, store nothing.
        Raises OutOfOrderSequence when the batch does not continue the producer's sequence."""
        if producer_id < 0:
            return None
        entry = self._producers.get(producer_id)
        if entry is None:
            if first_sequence == 0 or not self.complete:
                return None
            raise self._gap(producer_id, 0, first_sequence)
        if first_sequence == entry.next_sequence:
            return None
        for seq, n, base in entry.batches:
            if seq == first_sequence and n == count:
                return Duplicate(base, base + n)
        raise self._gap(producer_id, entry.next_sequence, first_sequence)

    def apply(self, producer_id: int, first_sequence: int, count: int, base_offset: int) -> None:
        """Record a batch stored at ``base_offset`` (appended here, or copied from the leader)."""
        if producer_id < 0:
            return
        producers = self._producers
        entry = producers.pop(producer_id, None)     # re-inserted last: dict order is recency
        if entry is None:
            entry = _Producer(self.window)
            if len(producers) >= self.max_producers:
                del producers[next(iter(producers))]
                self.complete = False
        batches = entry.batches
        if len(batches) == batches.maxlen:
            entry.overflowed = True
        batches.append((first_sequence, count, base_offset))
        entry.next_sequence = (first_sequence + count) % SEQUENCE_MODULUS
        producers[producer_id] = entry

    def apply_header(self, header) -> None:
        """Apply a stored batch's header (ipc.records.BatchHeader); headers come in log order."""
        if header.producer_id >= 0:
            self.apply(header.producer_id, header.first_sequence, header.record_count, header.base_offset)

    def truncate_from(self, offset: int) -> None:
        """Forget batches at or after ``offset`` (the log was truncated there)."""
        for producer_id in list(self._producers):
            entry = self._producers[producer_id]
            batches = entry.batches
            while batches and batches[-1][2] >= offset:
                batches.pop()
            if batches:
                seq, n, _base = batches[-1]
                entry.next_sequence = (seq + n) % SEQUENCE_MODULUS
            else:
                del self._producers[producer_id]
                if entry.overflowed:     # it had batches before the window: now out of sight
                    self.complete = False

    def _gap(self, producer_id: int, expected: int, got: int) -> OutOfOrderSequence:
        return OutOfOrderSequence.of(self.topic, self.partition, producer_id, expected, got)
