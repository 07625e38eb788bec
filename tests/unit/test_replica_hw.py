"""The high-watermark checkpoint's throttle (broker/spu/replica.py), with the clock passed in.

The SPU calls ``save_hw`` on every status report to the SC (up to ~20 a second); each write
is a file write plus two fsyncs on the event loop, so at most one a second may happen.
"""

from __future__ import annotations

import logging

import pytest

from rillet.broker.spu.replica import HW_CHECKPOINT_INTERVAL_S, Replica
from rillet.broker.storage.checkpoint import read_checkpoint
from rillet.broker.storage.log import HIGH_WATERMARK_FILE, PartitionLog
from rillet.ipc import messages as m

LOGGER = logging.getLogger("rillet.test.replica")
LEADER = 1


@pytest.fixture
def replica(tmp_path):
    spec = m.ReplicaSpec(topic="t", partition=0, replicas=[LEADER, 2, 3], leader=LEADER, leader_epoch=1,
                         segment_size=1 << 20, compression_type="any", min_in_sync_replicas=2,
                         in_sync=[LEADER, 2, 3])
    r = Replica(LEADER, spec, PartitionLog.open(tmp_path / "t-0", segment_size=1 << 20, logger=LOGGER), LOGGER)
    yield r
    r.close()


def _saved(r: Replica) -> int:
    return read_checkpoint(r.log.directory / HIGH_WATERMARK_FILE, -1)


def test_a_changing_hw_is_checkpointed_at_most_once_a_second(replica):
    writes, seen = 0, []
    for i in range(200):                      # 20 reports a second for 10 s, the HW moving each time
        replica.hw = i + 1
        now = 100.0 + i * 0.05
        if replica.save_hw(now=now):
            writes += 1
        seen.append(_saved(replica))
    assert 10 <= writes <= 11, writes
    assert len(set(seen)) == writes           # what save_hw says it wrote is what the file holds
    assert seen[0] == 1                       # the first change is written at once


def test_the_last_hw_is_written_once_the_interval_has_passed(replica):
    replica.hw = 5
    assert replica.save_hw(now=10.0) and _saved(replica) == 5
    replica.hw = 9
    assert not replica.save_hw(now=10.0 + HW_CHECKPOINT_INTERVAL_S / 2)
    assert _saved(replica) == 5
    assert replica.save_hw(now=10.0 + HW_CHECKPOINT_INTERVAL_S)
    assert _saved(replica) == 9
    assert not replica.save_hw(now=50.0)      # unchanged: nothing to write


def test_force_writes_at_once(replica):
    replica.hw = 3
    assert replica.save_hw(now=1.0)
    replica.hw = 4
    assert replica.save_hw(force=True, now=1.01)
    assert _saved(replica) == 4
