"""The consumer's outage bookkeeping, as a table of clock readings (no sleeping)."""

from __future__ import annotations

import pytest

from rillet._outage import CAP_DELAY_S, FIRST_DELAY_S, LOG_AFTER_S, Failover, Outage
from rillet.ipc.errors import BrokenConnection, ClusterUnavailable, PartitionOffline


def test_backoff_doubles_up_to_the_cap():
    outage = Outage("t/0", 100.0, None)
    delays = []
    for _ in range(10):
        outage.failed(BrokenConnection("gone"), 100.0)
        delays.append(round(outage.retry_at - 100.0, 3))
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
    assert delays[0] == FIRST_DELAY_S and max(delays) == CAP_DELAY_S
    assert outage.wait_s(100.5) == pytest.approx(0.5) and outage.wait_s(102.0) == 0.0


@pytest.mark.parametrize("failures, logged_at", [
    # (seconds after the start, error) ... -> the index of the failure that is logged, or None
    ([(0.0, NotImplemented), (0.02, NotImplemented)], None),                 # a leader change: quiet
    ([(0.0, NotImplemented), (LOG_AFTER_S, NotImplemented), (2.0, NotImplemented)], 1),   # once, not again
    ([(0.0, "away"), (LOG_AFTER_S + 1, NotImplemented)], None),             # the metadata view said it
])
def test_an_outage_is_logged_once_and_only_when_long(failures, logged_at):
    outage = Outage("t/0", 0.0, None)
    logged = [i for i, (at, kind) in enumerate(failures)
              if outage.failed(ClusterUnavailable("away") if kind == "away" else PartitionOffline("offline"), at)]
    assert logged == ([] if logged_at is None else [logged_at])


def test_a_following_stream_never_gives_up():
    outage = Outage("t/0", 0.0, None)
    outage.failed(ClusterUnavailable("cluster 'c' is not running"), 86_400.0)
    assert outage.attempts == 1


def test_a_stream_with_a_window_raises_one_clear_error_of_the_cause_type():
    outage = Outage("t/0", 10.0, 30.0)
    outage.delay_s = CAP_DELAY_S
    outage.failed(ClusterUnavailable("cluster 'c' is not running"), 39.9)
    assert outage.retry_at == 40.0                 # the last try is at the window's end, not 40.9
    with pytest.raises(ClusterUnavailable) as raised:
        outage.failed(ClusterUnavailable("cluster 'c' is not running"), 40.0)
    assert str(raised.value) == ("t/0 unreachable for 30.0 s (a stream that does not follow waits at most 30 s): "
                                 "cluster 'c' is not running")


def test_failover_tracks_one_outage_at_a_time():
    failover = Failover("t/0", None)
    assert not failover.active and failover.wait_s() == 0.0
    failover.failed(BrokenConnection("gone"), 7)
    assert failover.active and 0 < failover.wait_s() <= FIRST_DELAY_S
    failover.recovered(7)
    assert not failover.active and failover.wait_s() == 0.0


def test_failover_with_a_window_ends_the_outage_when_it_raises():
    failover = Failover("t/0", 0.0)
    with pytest.raises(BrokenConnection, match=r"^t/0 unreachable for 0\.0 s .*: gone$"):
        failover.failed(BrokenConnection("gone"), None)
    assert not failover.active
