"""Leader-side replication decisions (broker/spu/isr.py) as tables of cases."""

from __future__ import annotations

import pytest

from rillet.broker.spu.isr import LeaderState

L, F1, F2 = 1, 2, 3


def state(in_sync=(L, F1, F2), hw=0, now=0.0, lag=2.0):
    return LeaderState(L, [L, F1, F2], list(in_sync), lag_max_s=lag, now=now, hw=hw)


@pytest.mark.parametrize("fetches, leader_leo, expected_hw", [
    ([], 10, 0),                              # followers' LEOs unknown: HW holds
    ([(F1, 10)], 10, 0),                      # F2 still unknown
    ([(F1, 10), (F2, 4)], 10, 4),             # min over the ISR
    ([(F1, 10), (F2, 10)], 10, 10),
    ([(F1, 3), (F2, 7)], 10, 3),
])
def test_high_watermark_is_the_smallest_leo_in_sync(fetches, leader_leo, expected_hw):
    s = state()
    for f, off in fetches:
        s.on_fetch(f, off, leader_leo, now=1.0)
    assert s.high_watermark(leader_leo) == expected_hw


def test_high_watermark_never_moves_back():
    s = state()
    s.on_fetch(F1, 10, 10, 1.0)
    s.on_fetch(F2, 10, 10, 1.0)
    assert s.high_watermark(10) == 10
    s.on_fetch(F2, 5, 20, 1.1)                # a follower that truncated reports less
    assert s.high_watermark(20) == 10


def test_leader_alone_commits_at_its_leo():
    s = state(in_sync=(L,))
    assert s.high_watermark(42) == 42


@pytest.mark.parametrize("in_sync, event, expected_isr, changed", [
    ((L, F1, F2), ("disconnect", F1), {L, F2}, True),
    ((L, F2), ("disconnect", F1), {L, F2}, False),      # not a member: nothing changes
    ((L, F1, F2), ("disconnect", L), {L, F1, F2}, False),  # the leader never leaves its own ISR
    ((L, F1, F2), ("expire", 2.5), {L}, True),           # nobody caught up since t=0, lag 2 s
    ((L, F1, F2), ("expire", 1.5), {L, F1, F2}, False),
])
def test_isr_membership(in_sync, event, expected_isr, changed):
    s = state(in_sync=in_sync)
    kind, arg = event
    result = s.on_disconnect(arg) if kind == "disconnect" else s.expire(arg)
    assert (s.isr, result) == (expected_isr, changed)


def test_a_follower_rejoins_once_caught_up():
    s = state(in_sync=(L,), hw=10)
    s.hw = 10
    assert not s.on_fetch(F1, 5, 10, now=1.0)            # behind: stays out
    s.on_answer(F1, 10)
    assert s.on_fetch(F1, 10, 12, now=1.1)               # reached the LEO it was last answered at: joins
    assert s.isr == {L, F1}


def test_keeping_pace_under_load_counts_as_caught_up():
    s = state(in_sync=(L, F1), hw=0)
    s.on_answer(F1, 100)                                  # answered while the leader's LEO was 100
    s.on_fetch(F1, 100, 150, now=5.0)                     # the LEO moved on to 150 meanwhile
    assert not s.expire(6.0)                              # caught up at t=5: still in sync at t=6
    assert s.expire(7.5)                                  # no catch-up for 2.5 s: out
    assert s.isr == {L}


def test_a_rejoining_follower_must_reach_the_high_watermark():
    s = state(in_sync=(L,), hw=50)
    s.on_answer(F1, 40)
    assert not s.on_fetch(F1, 40, 60, now=1.0)           # caught up to its last answer, but below HW
    assert s.isr == {L}
