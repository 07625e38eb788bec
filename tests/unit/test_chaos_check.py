"""The CHAOS checker against hand-made histories: each kind of violation is found and counted."""

from __future__ import annotations

import pytest

from rillet.tools.chaos_check import KINDS, PartitionHistory, check, decode_value, encode_value


def v(producer: int, seq: int) -> bytes:
    return encode_value(producer, seq, size=40)


def clean_history() -> dict[int, PartitionHistory]:
    log = [(0, v(0, 0)), (1, v(1, 0)), (2, v(0, 1)), (3, v(1, 1))]
    return {0: PartitionHistory(acked=[(v(0, 0), 0), (v(0, 1), 2), (v(1, 1), 3)], log=list(log),
                                replicas={5001: list(log), 5002: log[:3], 5003: log + [(4, v(0, 2))]},
                                consumed=[list(log), log[:2]])}


def test_values_round_trip_and_foreign_values_are_not_tags():
    assert decode_value(encode_value(7, 123456789012, size=100)) == (7, 123456789012)
    assert len(encode_value(1, 2, size=100)) == 100
    assert decode_value(b"hello world, not a chaos value") is None
    assert decode_value(b"short") is None


def test_a_clean_history_has_no_violation():
    report = check(clean_history())
    assert report.clean, report.examples
    assert set(report.counts) == set(KINDS)


@pytest.mark.parametrize("damage, kind", [
    # an acknowledged value missing from the log
    (lambda h: h.log.__setitem__(2, (2, v(9, 9))), "lost"),
    # the same value stored twice
    (lambda h: h.log.append((4, v(0, 0))), "duplicates"),
    # producer 0's seq 1 stored before its seq 0
    (lambda h: h.log.__setitem__(slice(0, 3), [(0, v(0, 1)), (1, v(1, 0)), (2, v(0, 0))]), "reordered"),
    # a hole in the offsets
    (lambda h: h.log.append((6, v(1, 2))), "offset_gaps"),
    # two replicas disagree below the committed end
    (lambda h: h.replicas[5002].__setitem__(1, (1, v(2, 0))), "divergent"),
    # a consumer jumps from 1 to 3
    (lambda h: h.consumed.append([(0, v(0, 0)), (1, v(1, 0)), (3, v(1, 1))]), "skips"),
    # a consumer hands out offset 1 twice
    (lambda h: h.consumed.append([(0, v(0, 0)), (1, v(1, 0)), (1, v(1, 0))]), "repeats"),
    # a consumer handed out a record the final log does not hold (truncated later)
    (lambda h: h.consumed.append([(0, v(0, 0)), (1, v(5, 5))]), "phantoms"),
])
def test_each_kind_of_violation_is_counted(damage, kind):
    history = clean_history()
    damage(history[0])
    report = check(history)
    assert report.counts[kind] >= 1, report.counts
    assert report.examples[kind] and "p0" in report.examples[kind][0]
    assert not report.clean


def test_an_uncommitted_tail_on_one_replica_is_not_divergence():
    history = clean_history()
    history[0].replicas[5003].append((5, v(3, 3)))   # beyond the committed log: may be truncated later
    assert check(history).clean


def test_examples_are_capped_but_counts_are_not():
    log = [(i, v(0, i)) for i in range(20)]
    history = {0: PartitionHistory(acked=[(v(1, i), i) for i in range(20)], log=log)}
    report = check(history)
    assert report.counts["lost"] == 20
    assert len(report.examples["lost"]) == 5
