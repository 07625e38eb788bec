"""A replica's idempotent-producer state over real segment files: kept by leader and follower
appends, cut by truncation, rebuilt from the headers of the newest segments on open."""

from __future__ import annotations

import pytest

from rillet.broker.spu.replica import Replica
from rillet.ipc import messages as m
from rillet.ipc.errors import OutOfOrderSequence
from rillet.ipc.records import BatchBuilder

from .conftest import LOGGER

LEADER, FOLLOWER = 1, 2


def spec(leader: int = LEADER, epoch: int = 1) -> m.ReplicaSpec:
    return m.ReplicaSpec("t", 0, [LEADER, FOLLOWER], leader, epoch, 4096, "any", 1)


def batch(sequence: int, count: int = 1, pid: int = 9) -> memoryview:
    builder = BatchBuilder()
    for i in range(count):
        builder.append(None, b"r%d" % (sequence + i) * 40, 1000)
    return memoryview(builder.build(producer_id=pid, producer_epoch=0, first_sequence=sequence))


@pytest.fixture
def replica(open_log):
    made = []

    def _make(name="p0", spu=LEADER) -> Replica:
        r = Replica(spu, spec(), open_log(name, segment_size=4096), LOGGER)
        made.append(r)
        return r

    yield _make
    for r in made:
        if not r.log.closed:
            r.close()


def test_a_leader_stores_a_batch_once_and_refuses_a_gap(replica):
    r = replica()
    assert r.append(batch(0, 2)) == (0, 2)
    assert r.append(batch(0, 2)) == (0, 2) and r.leo == 2           # the retry: original offsets, not stored
    with pytest.raises(OutOfOrderSequence, match="expected 2"):
        r.append(batch(5))
    assert r.append(batch(2)) == (2, 3)


def test_truncation_forgets_what_it_removed(replica):
    r = replica()
    for seq in range(4):
        r.append(batch(seq))
    r.truncate_to(2)                                                 # as a follower does after a leader change
    assert r.producers.next_sequence(9) == 2
    assert r.append(batch(2)) == (2, 3)                              # stored again: the first copy is gone


def test_the_state_is_rebuilt_from_the_newest_segments_on_open(replica, tmp_path):
    r = replica()
    for seq in range(0, 60, 3):                                      # 4 KiB segments: this rolls several
        r.append(batch(seq, 3))
    assert r.log.segment_count > 2
    r.close()
    again = replica()
    assert again.producers.next_sequence(9) == 60
    assert again.append(batch(57, 3)) == (57, 60)                    # the last batch: still a duplicate
    assert not again.producers.complete                              # older segments were not read:
    assert again.append(batch(7, pid=10)) == (60, 61)                # an unknown producer is taken as it comes


def test_a_follower_keeps_the_state_its_leader_built(replica):
    leader, follower = replica("leader"), replica("follower", spu=FOLLOWER)
    assert leader.is_leader and not follower.is_leader
    for seq in range(3):
        leader.append(batch(seq))
    follower.append_replicated(leader.read(0, 1 << 20, committed=False), leader_hw=3)
    assert follower.producers.next_sequence(9) == 3
    follower.update_spec(spec(leader=FOLLOWER, epoch=2))
    assert follower.is_leader and follower.append(batch(1)) == (1, 2)   # elected: knows the old leader's batches
