"""The idempotent-producer table (broker/spu/producer_state.py): tables of batches in, decisions out."""

from __future__ import annotations

import pytest

from rillet.broker.spu.producer_state import Duplicate, ProducerStateTable, SEQUENCE_MODULUS
from rillet.ipc.errors import OutOfOrderSequence
from rillet.ipc.records import BatchBuilder, iter_batches, stamp_batch

P = 7                    # a producer id


def table(*stored, complete=True, **kw) -> ProducerStateTable:
    """A table that has seen ``stored``: (producer_id, first_sequence, count, base_offset) tuples."""
    t = ProducerStateTable("t", 0, complete=complete, **kw)
    for batch in stored:
        t.apply(*batch)
    return t


@pytest.mark.parametrize("stored, batch, expected", [
    # (what the partition holds, the batch (pid, first_sequence, count), None = append | Duplicate | "gap")
    ([], (-1, -1, 5), None),                                   # not idempotent: always appended
    ([(-1, -1, 5, 0)], (-1, -1, 5), None),                     # ... even the same bytes again
    ([], (P, 0, 3), None),                                     # a new producer starts at 0
    ([], (P, 3, 3), "gap"),                                    # ... a new one at 3: its first batch is missing
    ([(P, 0, 3, 0)], (P, 3, 2), None),                         # the next sequence
    ([(P, 0, 3, 0)], (P, 0, 3), Duplicate(0, 3)),              # a retry of the stored batch
    ([(P, 0, 3, 0), (P, 3, 2, 10)], (P, 0, 3), Duplicate(0, 3)),   # an older retry, still in the window
    ([(P, 0, 3, 0), (P, 3, 2, 10)], (P, 3, 2), Duplicate(10, 12)),
    ([(P, 0, 3, 0)], (P, 0, 2), "gap"),                        # same start, another length: not that batch
    ([(P, 0, 3, 0)], (P, 5, 1), "gap"),                        # a hole of two records
    ([(P, 0, 3, 0)], (P, 1, 1), "gap"),                        # inside a stored batch: never valid
    ([(P, 0, 3, 0)], (8, 0, 1), None),                         # other producers are independent
    ([(P, SEQUENCE_MODULUS - 2, 2, 0)], (P, 0, 1), None),      # int32 wrap, as Kafka
    ([(P, SEQUENCE_MODULUS - 1, 2, 0)], (P, 1, 1), None),      # a batch that wraps inside
])
def test_check(stored, batch, expected):
    t = table(*stored)
    if expected == "gap":
        with pytest.raises(OutOfOrderSequence) as info:
            t.check(*batch)
        assert info.value.expected == (t.next_sequence(batch[0]) or 0) and info.value.got == batch[1]
        assert (info.value.topic, info.value.partition, info.value.producer_id) == ("t", 0, batch[0])
        assert f"producer {batch[0]} sent sequence {batch[1]}" in str(info.value)
    else:
        assert t.check(*batch) == expected


def test_an_unknown_producer_is_taken_at_any_sequence_when_the_table_may_have_forgotten_it():
    assert table(complete=False).check(P, 40, 1) is None


def test_the_window_bounds_what_is_remembered():
    t = table(*[(P, i, 1, i) for i in range(5)], window=3)
    assert t.check(P, 4, 1) == Duplicate(4, 5) and t.check(P, 2, 1) == Duplicate(2, 3)
    with pytest.raises(OutOfOrderSequence):
        t.check(P, 1, 1)                                        # older than the window


def test_the_least_recently_active_producer_is_forgotten_and_the_table_says_so():
    t = table((1, 0, 1, 0), (2, 0, 1, 1), (1, 1, 1, 2), max_producers=2)
    t.apply(3, 0, 1, 3)
    assert (t.next_sequence(1), t.next_sequence(2), t.next_sequence(3)) == (2, None, 1)
    assert not t.complete and t.check(2, 1, 1) is None          # producer 2 was forgotten: taken as it comes


@pytest.mark.parametrize("offset, next_seqs, complete", [
    (20, {1: 5, 2: 3}, True),                                   # past everything: nothing changes
    (12, {1: 4, 2: 3}, True),                                   # producer 1's last batch goes
    (10, {1: 4, 2: None}, True),                                # producer 2 had nothing before 10: unknown again
    (2, {1: 2, 2: None}, True),
    (0, {1: None, 2: None}, True),
])
def test_truncation_forgets_the_batches_it_removed(offset, next_seqs, complete):
    t = table((1, 0, 2, 0), (2, 0, 3, 10), (1, 2, 2, 2), (1, 4, 1, 12))
    t.truncate_from(offset)
    assert {p: t.next_sequence(p) for p in (1, 2)} == next_seqs and t.complete is complete


def test_truncating_an_overflowed_window_empty_marks_the_table_incomplete():
    t = table(*[(P, i, 1, i) for i in range(4)], window=2)
    t.truncate_from(2)
    assert t.next_sequence(P) is None and not t.complete


def test_rebuilt_from_batch_headers_as_a_replica_does():
    log = bytearray()
    for pid, seq, n in [(P, 0, 2), (-1, -1, 1), (P, 2, 3)]:
        builder = BatchBuilder()
        for i in range(n):
            builder.append(None, b"v%d" % i, 1000)
        batch = bytearray(builder.build(producer_id=pid, producer_epoch=0, first_sequence=seq))
        stamp_batch(batch, 0, sum(h.record_count for _p, h in iter_batches(log)), 1)
        log += batch
    t = ProducerStateTable("t", 0)
    for _pos, header in iter_batches(log):
        t.apply_header(header)
    assert t.next_sequence(P) == 5 and len(t) == 1
    assert t.check(P, 2, 3) == Duplicate(3, 6) and t.check(P, 5, 1) is None
