"""SC decisions (broker/sc/reconcile.py): placement, partition status and elections, as tables."""

from __future__ import annotations

import pytest

from rillet.broker.sc import reconcile
from rillet.broker.sc.reconcile import SpuObserved
from rillet.broker.sc.state import ClusterState, PartitionAssignment, TopicState
from rillet.ipc import messages as m
from rillet.ipc.errors import InsufficientResources, InvalidArgument
from rillet.ipc.metadata_table import PartitionStatus


def cluster(leader, in_sync, replicas=(1, 2, 3), epoch=4):
    p = PartitionAssignment(partition=0, replicas=list(replicas), leader=leader, leader_epoch=epoch, in_sync=list(in_sync))
    return ClusterState(spus=[1, 2, 3], topics={"t": TopicState(name="t", config=m.TopicConfig(), partitions=[p], created_ms=0)})


def observed(online, leos=None):
    out = {}
    for s in (1, 2, 3):
        o = SpuObserved(s, online=s in online)
        if leos and s in leos:
            o.replicas[("t", 0)] = m.ReplicaStatus("t", 0, 4, False, leos[s], 0, 0, 0, [])
        out[s] = o
    return out


@pytest.mark.parametrize("leader, in_sync, online, leos, expected", [
    (1, [1, 2, 3], {1, 2, 3}, None, None),               # leader alive: nothing to do
    (1, [1, 2, 3], {2, 3}, {2: 10, 3: 12}, 3),           # most data wins
    (1, [1, 2, 3], {2, 3}, {2: 12, 3: 12}, 2),           # tie: earlier in the assignment
    (1, [1, 3], {2, 3}, {2: 99, 3: 5}, 3),               # 2 is out of sync: never elected
    (1, [1], {2, 3}, {2: 10, 3: 10}, None),              # no in-sync replica left: LeaderOffline
    (1, [1, 2], {3}, None, None),                        # the only other ISR member is down too
    (1, [1, 2], {1, 3}, None, None),                     # the old leader is back: it leads again
    (2, [2, 3], {3}, {3: 7}, 3),
    (2, [2, 3], {3}, None, None),                        # 3 has not reported the replica yet (just registered,
                                                         # or could not open it): wait for its report
])
def test_elections(leader, in_sync, online, leos, expected):
    decided = reconcile.elections(cluster(leader, in_sync), observed(online, leos))
    assert [e.leader for e in decided] == ([] if expected is None else [expected])
    if decided:
        assert set(decided[0].in_sync) <= set(in_sync) & online


@pytest.mark.parametrize("leader_online, report_epoch, expected", [
    (False, 4, PartitionStatus.LEADER_OFFLINE),
    (True, None, PartitionStatus.OFFLINE),               # leader up but has not reported the partition yet
    (True, 3, PartitionStatus.OFFLINE),                  # reports an old epoch
    (True, 4, PartitionStatus.ONLINE),
])
def test_partition_status(leader_online, report_epoch, expected):
    state = cluster(1, [1, 2, 3])
    obs = observed({1, 2, 3} if leader_online else {2, 3})
    if report_epoch is not None:
        obs[1].replicas[("t", 0)] = m.ReplicaStatus("t", 0, report_epoch, True, 5, 5, 0, 0, [1])
    p = state.topics["t"].partitions[0]
    assert reconcile.partition_status("t", p, obs) == expected


def test_placement_spreads_leaders_and_replicas():
    state = ClusterState(spus=[5001, 5002, 5003])
    placement = reconcile.place_partitions(state, partitions=6, replication=3)
    assert [p[0] for p in placement].count(5001) == 2        # leaders evenly spread
    assert all(len(set(p)) == 3 for p in placement)          # replicas on distinct SPUs


@pytest.mark.parametrize("config, error", [
    (m.TopicConfig(replication=4), InsufficientResources),
    (m.TopicConfig(partitions=0), InvalidArgument),
    (m.TopicConfig(segment_size=10), InvalidArgument),
    (m.TopicConfig(replication=3, min_in_sync_replicas=4), InvalidArgument),
    (m.TopicConfig(compression_type="brotli"), InvalidArgument),
])
def test_invalid_topic_configs(config, error):
    with pytest.raises(error):
        reconcile.validate_config(config, spu_count=3)


def test_min_in_sync_defaults():
    assert reconcile.validate_config(m.TopicConfig(replication=1), 3).min_in_sync_replicas == 1
    assert reconcile.validate_config(m.TopicConfig(replication=3), 3).min_in_sync_replicas == 2
