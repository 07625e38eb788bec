"""The SC's decisions for `topic update` and `topic add-partition` (broker/sc/reconcile.py),
and a log whose segment size changes while it runs (broker/storage/log.py)."""

from __future__ import annotations

import pytest

from rillet.broker.sc import reconcile
from rillet.broker.sc.state import ClusterState
from rillet.broker.storage import PartitionLog
from rillet.ipc import messages as m
from rillet.ipc.errors import InsufficientResources, InvalidArgument
from rillet.ipc.records import BatchBuilder


def _config(**kw):
    return reconcile.validate_config(m.TopicConfig(**{"partitions": 2, "replication": 2, **kw}), 3)


def test_update_changes_only_what_is_given():
    old = _config(retention_time_s=3600)
    new = reconcile.updated_config(old, m.TopicChanges(segment_size=4096, compression_type="LZ4",
                                                       min_in_sync_replicas=1), 3)
    assert (new.segment_size, new.compression_type, new.min_in_sync_replicas) == (4096, "lz4", 1)
    assert (new.partitions, new.replication, new.retention_time_s, new.flush) == (2, 2, 3600, "none")
    assert reconcile.updated_config(old, m.TopicChanges(flush_interval_ms=200), 3).flush == "interval"
    assert reconcile.updated_config(old, m.TopicChanges(flush="every-batch"), 3).flush == "every-batch"


@pytest.mark.parametrize("changes, message", [
    (m.TopicChanges(), "nothing to update"),
    (m.TopicChanges(min_in_sync_replicas=3), "min in-sync replicas must be between 1 and 2, got 3"),
    (m.TopicChanges(retention_time_s=5), "at least 10 seconds"),
    (m.TopicChanges(segment_size=10), "segment size must be between"),
    (m.TopicChanges(max_partition_size=1000), "smaller than the segment size"),
    (m.TopicChanges(compression_type="brotli"), "brotli"),
    (m.TopicChanges(flush="sometimes"), "unknown flush policy"),
])
def test_update_refuses_what_create_refuses(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        reconcile.updated_config(_config(), changes, 3)


def test_added_partitions_are_numbered_after_the_last_and_spread():
    st = ClusterState(spus=[1, 2, 3])
    st.topics["t"] = reconcile.new_topic(st, "t", _config(), 0)
    new = reconcile.added_partitions(st, "t", 2, 4096)
    assert [p.partition for p in new] == [2, 3]
    assert all(len(p.replicas) == 2 and p.leader == p.replicas[0] and p.leader_epoch == 1 for p in new)
    leaders = [p.replicas[0] for p in st.topics["t"].partitions + new]
    assert sorted(leaders) == sorted(set(leaders)) or len(set(leaders)) == 3     # leaders spread over the SPUs


def test_added_partitions_limits():
    st = ClusterState(spus=[1])
    st.topics["t"] = reconcile.new_topic(st, "t", reconcile.validate_config(m.TopicConfig(partitions=1000), 1), 0)
    with pytest.raises(InvalidArgument, match="has 1000 partitions; 25 more would make 1025, over the limit of 1024"):
        reconcile.added_partitions(st, "t", 25, 4096)
    with pytest.raises(InvalidArgument, match="at least 1"):
        reconcile.added_partitions(st, "t", 0, 4096)
    with pytest.raises(InsufficientResources, match="metadata table holds 1010"):
        reconcile.added_partitions(st, "t", 20, 1010)


def _batch(n: int, size: int) -> bytes:
    builder = BatchBuilder()
    for i in range(n):
        builder.append(None, b"x" * size, 0)
    return builder.build()


def test_a_new_segment_size_applies_to_the_segments_made_after_it(tmp_path):
    log = PartitionLog.open(tmp_path, segment_size=64 * 1024)
    try:
        log.append(_batch(1, 1000), leader_epoch=1)
        log.set_segment_size(4096)
        for _ in range(8):
            log.append(_batch(1, 1000), leader_epoch=1)
        sizes = sorted(p.stat().st_size for p in tmp_path.glob("*.log"))
        assert len(sizes) >= 3 and max(sizes[:-1]) <= 4096          # rolled at the new size, none past it
        with pytest.raises(InvalidArgument, match="out of range"):
            log.set_segment_size(10)
    finally:
        log.close()


def test_a_larger_segment_size_never_writes_past_the_active_segment(tmp_path):
    log = PartitionLog.open(tmp_path, segment_size=4096)
    try:
        for _ in range(3):
            log.append(_batch(1, 1000), leader_epoch=1)
        log.set_segment_size(64 * 1024)
        for _ in range(8):
            log.append(_batch(1, 1000), leader_epoch=1)          # the 4 KiB active segment rolls first
        assert log.leo == 11
        assert len(list(tmp_path.glob("*.log"))) == 2
    finally:
        log.close()
    reopened = PartitionLog.open(tmp_path, segment_size=64 * 1024)
    try:
        assert reopened.leo == 11
    finally:
        reopened.close()


# --- SPUs removed: where their replicas go ---

def _cluster(spus, topics):
    """topics: name -> list of replica lists (the first leads)."""
    from rillet.broker.sc.state import PartitionAssignment, TopicState
    st = ClusterState(spus=list(spus))
    for name, parts in topics.items():
        st.topics[name] = TopicState(name=name, config=m.TopicConfig(replication=len(parts[0])), created_ms=0,
                                     partitions=[PartitionAssignment(partition=i, replicas=list(r), leader=r[0],
                                                                     leader_epoch=3, in_sync=list(r))
                                                 for i, r in enumerate(parts)])
    return st


def _rf(st):
    return {n: t.config.replication for n, t in st.topics.items()}


def test_replica_moves_spread_over_the_least_loaded():
    st = _cluster([1, 2, 3, 4], {"a": [[1, 2], [2, 1], [3, 4]], "b": [[1], [4]]})
    assert reconcile.replica_moves(st, _rf(st), 1) == [("a", 0, 3), ("a", 1, 3), ("b", 0, 2)]
    assert reconcile.next_spu_id(st) == 5
    assert reconcile.next_spu_id(ClusterState()) == reconcile.FIRST_SPU_ID


def test_replica_moves_refusals_and_a_second_attempt():
    st = _cluster([1, 2], {"a": [[1, 2]]})
    with pytest.raises(InsufficientResources, match="removing SPU 1 leaves 1 SPU.*replication factor 2"):
        reconcile.replica_moves(st, _rf(st), 1)
    with pytest.raises(InvalidArgument, match="last SPU"):
        reconcile.replica_moves(ClusterState(spus=[1]), {}, 1)
    st = _cluster([1, 2, 3], {"a": [[1, 2]]})
    p = st.topics["a"].partitions[0] = reconcile.with_replica_added(st.topics["a"].partitions[0], 3)
    assert (p.replicas, p.in_sync) == ([1, 2, 3], [1, 2])          # the copy is not in sync yet
    assert reconcile.replica_moves(st, _rf(st), 1) == [("a", 0, 3)]  # a timed-out removal's copy is reused


def test_hand_over_a_led_and_a_followed_partition():
    from rillet.broker.sc.state import PartitionAssignment
    led = PartitionAssignment(partition=0, replicas=[1, 2, 3], leader=1, leader_epoch=3, in_sync=[1, 2, 3])
    after = reconcile.handed_over(led, 1, 3)
    assert (after.replicas, after.leader, after.leader_epoch, after.in_sync) == ([3, 2], 3, 4, [2, 3])
    followed = PartitionAssignment(partition=0, replicas=[2, 1, 3], leader=2, leader_epoch=3, in_sync=[2, 1, 3])
    after = reconcile.handed_over(followed, 1, 3)
    assert (after.replicas, after.leader, after.leader_epoch, after.in_sync) == ([2, 3], 2, 3, [2, 3])


def test_a_new_topic_must_fit_the_metadata_table():
    st = ClusterState(spus=[1])
    st.topics["t"] = reconcile.new_topic(st, "t", reconcile.validate_config(m.TopicConfig(partitions=1000), 1), 0)
    reconcile.check_table_room(st, 24, 1024)
    with pytest.raises(InsufficientResources, match="would have 1025 partitions; its metadata table holds 1024"):
        reconcile.check_table_room(st, 25, 1024)


def test_stranded_partitions_of_a_dead_spu():
    st = _cluster([1, 2, 3], {"a": [[1, 2]], "b": [[1], [2]]})
    st.topics["a"].partitions[0].leader, st.topics["a"].partitions[0].in_sync = 2, [2]    # failed over
    st.topics["b"].partitions[0].leader = -1                                               # LeaderOffline
    assert reconcile.stranded(st, 1) == ["b/0"]
    assert reconcile.stranded(st, 3) == []
