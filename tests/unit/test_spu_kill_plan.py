"""spu-kill's decisions, as tables: which partitions are waited for, and when each is settled."""

from __future__ import annotations

import pytest

from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, TableSnapshot
from rillet.tools.spu_kill import settle, split_led

ONLINE, OFFLINE = PartitionStatus.ONLINE, PartitionStatus.LEADER_OFFLINE
VICTIM = 5001


def row(partition, leader=VICTIM, epoch=1, replicas=(VICTIM,), in_sync=None, status=ONLINE, topic="t"):
    return PartitionRow(topic, partition, leader, epoch, status, tuple(replicas),
                        tuple(replicas if in_sync is None else in_sync))


def snapshot(*rows):
    return TableSnapshot(generation=1, sc_pid=1, spus=(), partitions=tuple(rows))


def test_split_led_waits_only_for_partitions_that_can_fail_over():
    pending, stuck = split_led([
        row(0),                                                    # RF 1
        row(1, replicas=(VICTIM, 5002), in_sync=(VICTIM,)),        # the follower is out of sync
        row(2, epoch=4, replicas=(VICTIM, 5002), in_sync=(VICTIM, 5002)),
    ], VICTIM)
    assert pending == {("t", 2): 4}
    assert [(s["partition"], s["cannot_fail_over"]) for s in stuck] == [
        (0, "replication factor 1: no other replica"), (1, "no other in-sync replica")]
    assert all(s["new_leader"] is None and "error" not in s for s in stuck)


@pytest.mark.parametrize("now, restarted, settled", [
    (row(0, leader=VICTIM, epoch=1), False, None),                 # nothing happened yet
    (row(0, leader=-1, epoch=1, status=OFFLINE), True, None),      # restarted, not online yet
    (row(0, leader=5002, epoch=2), False, {"new_leader": 5002}),   # failed over
    (row(0, leader=5002, epoch=1), False, None),                   # an old epoch: not the election
    (row(0, leader=VICTIM, epoch=1), True, {"new_leader": None, "leader": VICTIM, "back_after_restart": True}),
])
def test_settle(now, restarted, settled):
    pending = {("t", 0): 1}
    done = settle(pending, snapshot(now), VICTIM, restarted, 12.345)
    if settled is None:
        assert done == [] and pending == {("t", 0): 1}
    else:
        assert pending == {}
        assert done == [{"topic": "t", "partition": 0, **settled, "leader_epoch": now.leader_epoch,
                         "elected_ms": 12.35}]


def test_settle_drops_a_deleted_partition():
    pending = {("gone", 0): 1}
    assert settle(pending, snapshot(), VICTIM, False, 1.0) == [] and pending == {}
