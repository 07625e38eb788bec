"""broker/sc/stats.py: the SC's counters, with the clock passed in."""

from rillet.broker.sc.stats import Histogram, ScStats


def test_time_to_new_leader_counts_from_the_loss():
    stats = ScStats()
    stats.spu_lost(5001, since=10.0)
    stats.elected(5001, now=10.004)          # two partitions it led
    stats.elected(5001, now=10.02)
    stats.elected(-1, now=11.0)              # no leader before (offline partition): counted, not timed
    assert (stats.spu_deaths, stats.elections) == (1, 3)
    h = stats.time_to_new_leader
    assert h.count == 2 and abs(h.total - 0.024) < 1e-9
    buckets = dict(h.cumulative())
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1 and buckets["0.025"] == 2 and buckets["+Inf"] == 2


def test_an_spu_back_is_not_timed_again():
    stats = ScStats()
    stats.spu_lost(5002, since=1.0)
    stats.spu_back(5002)
    stats.elected(5002, now=3.0)
    assert stats.time_to_new_leader.count == 0


def test_histogram_overflow_bucket():
    h = Histogram()
    h.observe(60.0)
    assert h.cumulative()[-1] == ("+Inf", 1) and h.cumulative()[-2][1] == 0


def test_a_removed_spu_is_not_a_death():
    stats = ScStats()
    stats.spu_leaving(5003)
    stats.spu_lost(5003, since=1.0)
    assert stats.spu_deaths == 0
    stats.spu_lost(5003, since=2.0)          # a later death of a new process with that id counts
    assert stats.spu_deaths == 1
