"""broker/spu/replica.py on a real log in a temp directory: the high-watermark checkpoint's
throttle (the clock passed in) and the waiters of long polls and ReadCommitted produces.

The SPU calls ``save_hw`` on every status report to the SC (up to ~20 a second); each write
is a file write plus two fsyncs on the event loop, so at most one a second may happen.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import pytest

from rillet.broker.spu.replica import HW_CHECKPOINT_INTERVAL_S, Replica
from rillet.broker.storage.checkpoint import read_checkpoint
from rillet.broker.storage.log import HIGH_WATERMARK_FILE, PartitionLog
from rillet.ipc import messages as m
from rillet.ipc.errors import NotLeader, RequestTimedOut
from rillet.ipc.records import BatchBuilder

LOGGER = logging.getLogger("rillet.test.replica")
LEADER = 1


def make_replica(tmp_path, replicas=(LEADER, 2, 3)):
    spec = m.ReplicaSpec(topic="t", partition=0, replicas=list(replicas), leader=LEADER, leader_epoch=1,
                         segment_size=1 << 20, compression_type="any", min_in_sync_replicas=min(2, len(replicas)),
                         in_sync=list(replicas))
    return Replica(LEADER, spec, PartitionLog.open(tmp_path / "t-0", segment_size=1 << 20, logger=LOGGER), LOGGER)


@pytest.fixture
def replica(tmp_path):
    r = make_replica(tmp_path)
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


def test_an_spus_checkpoints_are_written_off_the_calling_thread_and_closing_drains_them(tmp_path):
    """The SPU hands checkpoints to a worker thread (two fsyncs are not a stall of its event
    loop); a replica that closes first waits for what is queued, then writes its last one."""
    import threading
    from rillet.broker.spu.hw_checkpoints import HwCheckpoints
    checkpoints = HwCheckpoints(LOGGER)
    r = make_replica(tmp_path)
    r.checkpoints = checkpoints
    writers, real_write = [], r.log.write_high_watermark

    def slow_write(value):
        time.sleep(0.2)
        writers.append(threading.current_thread())
        real_write(value)
    r.log.write_high_watermark = slow_write
    try:
        r.hw = 7
        start = time.monotonic()
        assert r.save_hw(now=1.0)
        assert time.monotonic() - start < 0.1          # queued, not written on this thread
        r.hw = 8
        r.close()                                      # drains the queued 7, then writes 8 itself
        assert writers[0] is not threading.current_thread() and writers[1] is threading.current_thread()
        assert read_checkpoint(tmp_path / "t-0" / HIGH_WATERMARK_FILE, -1) == 8
    finally:
        checkpoints.close()


# --- waiters: long-poll fetches and ReadCommitted produces ---------------------------------------

def one_batch() -> memoryview:
    builder = BatchBuilder()
    builder.append(None, b"v", 1)
    return memoryview(builder.build())


def test_waiters_wake_on_append_and_time_out_quietly_or_loudly(tmp_path):
    single = make_replica(tmp_path, replicas=(LEADER,))

    async def scenario():
        fetch = asyncio.ensure_future(single.wait_for_data(0, committed=True, timeout_s=5))
        await asyncio.sleep(0)
        assert not fetch.done()
        single.append(one_batch())                     # RF=1: the HW moves with the append
        await asyncio.wait_for(fetch, 1)               # woken, long before its 5 s
        t = time.monotonic()
        await single.wait_for_data(1, committed=True, timeout_s=0.05)      # nothing new: returns at the timeout
        assert time.monotonic() - t >= 0.04
        for _ in range(3):                             # an idle consumer's long polls leave nothing behind
            await single.wait_for_data(1, committed=True, timeout_s=0.001)
        assert single._waiters == []
        waiting = asyncio.ensure_future(single.wait_for_data(1, committed=False, timeout_s=5))
        await asyncio.sleep(0)
        single._fail_waiters(NotLeader("moved"))
        with pytest.raises(NotLeader):
            await waiting
        return asyncio.all_tasks()

    try:
        left = asyncio.run(scenario())
        assert len(left) == 1                          # only the scenario itself: no timer task outlives a wait
    finally:
        single.close()


def test_the_positions_row_follows_appends_and_a_role_change(tmp_path):
    """Appends rewrite only the row's offsets; a new epoch or a role change rewrites it whole."""
    import uuid
    from rillet.broker.spu.positions import PositionsPublisher
    from rillet.ipc.names import ClusterPaths
    from rillet.ipc.positions import Positions, Role
    from rillet.ipc.positions_shm import PositionsReader

    paths = ClusterPaths.for_cluster(f"pos{uuid.uuid4().hex[:8]}", tmp_path / "home")
    publisher = PositionsPublisher(paths, LEADER, LOGGER)
    r = make_replica(tmp_path, replicas=(LEADER,))
    reader = None
    try:
        r.on_positions = publisher.publish
        publisher.publish(r)
        reader = PositionsReader.open(paths.positions_shm_name(LEADER))
        index = reader.find("t", 0)
        builder = BatchBuilder()
        builder.append(None, b"v", 0)
        for _ in range(3):
            r.append(memoryview(builder.build()))
        used = r.log.active_used
        assert reader.row(index) == Positions("t", 0, 1, Role.LEADER, 0, 3, 3, 0, used)
        assert reader.wake_word(index)[1] == 4                     # the first publish and one per append
        r.update_spec(msgspec.structs.replace(r.spec, leader=2, leader_epoch=2))
        assert reader.row(index) == Positions("t", 0, 2, Role.FOLLOWER, -1, -1, -1, -1, -1)
        r.update_spec(msgspec.structs.replace(r.spec, leader=LEADER, leader_epoch=3))
        assert reader.row(index) == Positions("t", 0, 3, Role.LEADER, 0, 3, 3, 0, used)
    finally:
        if reader is not None:
            reader.close()
        r.close()
        publisher.close()


# --- ReadCommitted produces answered by a callback (broker/spu/commit_waiter.py) -----------------

def test_commit_waiters_answer_by_callback_in_order_without_a_task(replica):
    from rillet.broker.spu.commit_waiter import CommitWaiter

    async def scenario():
        answers = []
        for cid in (1, 2):
            replica.append(one_batch())               # RF=3, no follower yet: the HW stays at 0
        first = CommitWaiter(replica, 1, 0, 1, 5.0)
        second = CommitWaiter(replica, 2, 1, 2, 5.0)
        for w in (second, first):                     # parked in the order the connection started them
            w.start(answers.append)
        assert answers == [] and asyncio.all_tasks() == {asyncio.current_task()}
        replica.hw = 1
        replica._wake()
        assert [(a.cid, a.base_offset, a.hw) for a in answers] == [(1, 0, 1)]    # at once, no loop turn
        replica.hw = 2
        replica._wake()
        assert [a.cid for a in answers] == [1, 2] and replica._waiters == []
        late = CommitWaiter(replica, 3, 0, 2, 5.0)    # the HW passed it before start: answered at once
        late.start(answers.append)
        assert answers[-1].cid == 3 and replica._waiters == []
        late.cancel()                                 # after the answer: nothing more
        assert len(answers) == 3

    asyncio.run(scenario())


def test_commit_waiters_time_out_fail_and_cancel_once(replica):
    from rillet.broker.spu.commit_waiter import CommitWaiter

    async def scenario():
        replica.append(one_batch())
        got = {name: [] for name in ("timeout", "fail", "cancel")}
        timeout = CommitWaiter(replica, 1, 0, 1, 0.02)
        timeout.start(got["timeout"].append)
        await asyncio.sleep(0.06)
        [exc] = got["timeout"]
        assert isinstance(exc, RequestTimedOut) and "did not reach 1 within timeout_ms=20" in str(exc)
        assert replica._waiters == []                 # a timed-out waiter leaves nothing behind
        fail, cancel = CommitWaiter(replica, 2, 0, 1, 5.0), CommitWaiter(replica, 3, 0, 1, 5.0)
        fail.start(got["fail"].append)
        cancel.start(got["cancel"].append)
        cancel.cancel()                               # the connection closed: no answer, unparked
        assert got["cancel"] == [None] and len(replica._waiters) == 1
        replica._fail_waiters(NotLeader("moved"))
        assert [type(e) for e in got["fail"]] == [NotLeader]
        replica.hw = 1
        replica._wake()                               # resolved waiters are never answered twice
        assert len(got["fail"]) == 1 and got["cancel"] == [None]
        closing = CommitWaiter(replica, 4, 0, 5, 5.0)
        closing.start(got["cancel"].append)
        replica.close()                               # closing the replica cancels every waiter
        assert got["cancel"] == [None, None]

    asyncio.run(scenario())
