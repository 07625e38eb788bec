"""The live view's pure model (tools/view.py): lag, rates, events, from tables of snapshots."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from rillet.ipc import messages as m
from rillet.tools.view import ClusterView, Snapshot, rate_from


class P(NamedTuple):
    topic: str
    partition: int
    leader: int = 5001
    leader_epoch: int = 1
    replicas: tuple = (5001, 5002)
    in_sync: tuple = (5001, 5002)
    status: str = "Online"
    hw: int = 0
    leo: int = 0


class S(NamedTuple):
    id: int
    status: str = "Online"
    pid: int = 100
    leaders: int = 1
    replicas: int = 1


class O(NamedTuple):
    consumer: str
    topic: str
    partition: int
    offset: int


def snap(t, parts=(), spus=(S(5001), S(5002)), offsets=(), error=None):
    return Snapshot(t=t, wall_ms=int(1_000_000 + t * 1000), partitions=tuple(parts), spus=tuple(spus),
                    offsets=tuple(offsets), error=error)


@pytest.mark.parametrize("samples, window, rate", [
    ([], 1.0, None),
    ([(0.0, 10)], 1.0, None),
    ([(0.0, 0), (1.0, 500)], 1.0, 500.0),
    ([(0.0, 0), (0.5, 100), (1.0, 300)], 1.0, 300.0),          # anchored a full window back
    ([(0.0, 0), (0.5, 100), (1.6, 300)], 1.0, 200 / 1.1),      # newest sample a window old is the anchor
    ([(0.0, 0), (0.25, 100)], 1.0, 400.0),                     # less than a window: what there is
    ([(1.0, 5), (1.0, 9)], 1.0, None),                         # no time between them
])
def test_rate_from(samples, window, rate):
    got = rate_from(samples, window)
    assert got == (None if rate is None else pytest.approx(rate))


def test_first_snapshot_is_the_baseline_without_events():
    frame = ClusterView().update(snap(0.0, [P("t", 0)]))
    assert frame.events == []
    assert frame.partitions[0]["rate"] is None


@pytest.mark.parametrize("before, after, texts", [
    (P("t", 0, 5001, 3), P("t", 0, 5002, 4), ["leader changed t/0: 5001 -> 5002 epoch 3 -> 4"]),
    (P("t", 0, 5001, 3), P("t", 0, 5001, 4), ["leader changed t/0: 5001 -> 5001 epoch 3 -> 4"]),
    (P("t", 0, 5001, 3), P("t", 0, -1, 3, status="LeaderOffline"),
     ["leader changed t/0: 5001 -> none epoch 3 -> 3", "t/0: Online -> LeaderOffline"]),
    (P("t", 0, 5001, 3, status="Online"), P("t", 0, 5001, 3, status="LeaderOffline"), ["t/0: Online -> LeaderOffline"]),
    (P("t", 0, hw=5, leo=9), P("t", 0, hw=9, leo=12), []),      # offsets moving is no event
    (P("t", 0, in_sync=(5001, 5002)), P("t", 0, in_sync=(5001,)), ["t/0: in-sync [5001, 5002] -> [5001]"]),
    (P("t", 0, in_sync=(5002, 5001)), P("t", 0, in_sync=(5001, 5002)), []),    # the same set in another order
])
def test_partition_events(before, after, texts):
    view = ClusterView()
    view.update(snap(0.0, [before]))
    frame = view.update(snap(1.0, [after]))
    assert [e.text for e in frame.events] == texts
    assert list(view.events) == frame.events


@pytest.mark.parametrize("before, after, texts", [
    ([S(5001), S(5002)], [S(5001), S(5002, "Offline", 0)], ["SPU 5002 offline"]),
    ([S(5001), S(5002, "Offline", 0)], [S(5001), S(5002, pid=777)], ["SPU 5002 online (pid 777)"]),
    ([S(5001, pid=1)], [S(5001, pid=2)], ["SPU 5001 restarted (pid 1 -> 2)"]),
    ([S(5001)], [S(5001), S(5003)], ["SPU 5003 added (online)"]),
    ([S(5001), S(5002)], [S(5001)], ["SPU 5002 removed"]),
    ([S(5001)], [S(5001)], []),
])
def test_spu_events(before, after, texts):
    view = ClusterView()
    view.update(snap(0.0, spus=before))
    assert [e.text for e in view.update(snap(1.0, spus=after)).events] == texts


def test_topic_events():
    view = ClusterView()
    view.update(snap(0.0, [P("a", 0)]))
    frame = view.update(snap(1.0, [P("b", 0), P("b", 1)]))
    assert [e.text for e in frame.events] == ["topic b created (2 partitions)", "topic a deleted"]


def test_sc_unreachable_once_then_back():
    view = ClusterView()
    assert view.update(snap(0.0, error="ClusterNotRunning: gone")).partitions == []     # nothing seen yet
    view = ClusterView()
    view.update(snap(0.0, [P("t", 0)]))
    down = view.update(snap(1.0, error="ScUnavailable: no SC"))
    again = view.update(snap(2.0, error="ScUnavailable: no SC"))
    back = view.update(snap(3.0, [P("t", 0, 5002, 2)]))
    assert [e.text for e in down.events] == ["SC unreachable: ScUnavailable: no SC"]
    assert down.error and again.events == []
    assert [p["leader"] for p in down.partitions] == [5001] and len(down.spus) == 2     # the last rows stay
    # The lists of an error frame are not "every partition gone": no topic events on return.
    assert [e.text for e in back.events] == ["SC reachable again", "leader changed t/0: 5001 -> 5002 epoch 1 -> 2"]


def test_rates_from_leo_deltas_reset_when_the_log_goes_back():
    view = ClusterView(rate_window_s=1.0)
    rates = [view.update(snap(t, [P("t", 0, leo=leo)])).partitions[0]["rate"]
             for t, leo in [(0.0, 0), (0.5, 100), (1.0, 300), (1.5, 300), (2.0, 50), (2.5, 150)]]
    assert rates == [None, 200.0, 300.0, 200.0, None, 200.0]
    assert view.history()["t/0"] == [[1_000_500, 200.0], [1_001_000, 300.0], [1_001_500, 200.0],
                                     [1_002_500, 200.0]]


def test_rate_unknown_without_a_leader_report():
    view = ClusterView()
    view.update(snap(0.0, [P("t", 0, hw=-1, leo=-1)]))
    assert view.update(snap(1.0, [P("t", 0, hw=-1, leo=-1)])).partitions[0]["rate"] is None


def test_history_keeps_the_last_minute_and_forgets_deleted_partitions():
    view = ClusterView(history_s=60)
    for t in range(0, 100):
        view.update(snap(float(t), [P("t", 0, leo=t * 10), P("u", 0)]))
    points = view.history()["t/0"]
    assert points[0][0] == 1_000_000 + 39_000 and points[-1] == [1_099_000, 10.0]
    view.update(snap(100.0, [P("u", 0)]))
    assert set(view.history()) == {"u/0"}


def test_consumer_lag_rows_and_the_worst_per_partition():
    view = ClusterView()
    frame = view.update(snap(0.0, [P("t", 0, hw=10, leo=12), P("t", 1, hw=-1, leo=-1), P("t", 2, hw=3)],
                             offsets=[O("a", "t", 0, 9), O("b", "t", 0, 4), O("a", "t", 1, 0), O("a", "gone", 0, 5)]))
    assert [(c["consumer"], c["topic"], c["partition"], c["lag"]) for c in frame.consumers] == [
        ("a", "t", 0, 0), ("b", "t", 0, 5), ("a", "t", 1, None), ("a", "gone", 0, None)]
    assert [p["lag"] for p in frame.partitions] == [5, None, None]      # no consumer on t/2: no lag


def test_frames_take_the_admin_api_objects():
    """The sampler passes PartitionInfo, SpuInfo and ConsumerOffsetInfo as they come."""
    part = m.PartitionInfo(topic="t", partition=0, leader=5001, leader_epoch=2, replicas=[5001], in_sync=[5001],
                           status="Online", hw=7, leo=7, log_start=0, size_bytes=100)
    spu = m.SpuInfo(5001, "spu-5001", "Online", 42, "/tmp/s", 1, 1)
    off = m.ConsumerOffsetInfo("c", "t", 0, 3, 0)
    frame = ClusterView().update(snap(0.0, [part], [spu], [off]))
    assert frame.partitions[0] | {} == dict(topic="t", partition=0, leader=5001, leader_epoch=2, replicas=[5001],
                                            in_sync=[5001], status="Online", hw=7, leo=7, rate=None, lag=3)
    assert frame.spus == [dict(id=5001, status="Online", online=True, pid=42, leaders=1, replicas=1)]
    assert frame.to_json()["consumers"] == [dict(consumer="c", topic="t", partition=0, offset=3, lag=3)]
