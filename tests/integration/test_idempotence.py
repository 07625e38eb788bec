"""Idempotent producer with real processes: a retried batch is stored once, also after the
leader's answer was lost, an SPU restart and a leader failover; a sequence gap is refused.

Raw requests go over ipc.connection.Connection, so "the same batch again" is byte for byte
what a producer's retry sends.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from rillet import ConsumerConfig, Offset, TopicProducerConfigBuilder
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import OutOfOrderSequence, RilletError
from rillet.ipc.records import BatchBuilder
from rillet.testing import LocalCluster

from ._traffic import KeyedSender, assert_stored_once_in_key_order, exactly_once_config

SPU = 5001
PID = 424242


def batch(*values: bytes, pid: int = PID, sequence: int = 0) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, 1000)
    return builder.build(producer_id=pid, producer_epoch=0, first_sequence=sequence)


def produce(cluster, spu: int, topic: str, payload: bytes, isolation: int = m.ISOLATION_READ_UNCOMMITTED):
    with Connection(cluster.paths.spu_socket(spu), timeout_s=10) as conn:
        return conn.call(m.ProduceRequest(conn.next_cid(), topic, 0, isolation, 5000, memoryview(payload)))


def produce_when_ready(cluster, spu: int, topic: str, payload: bytes, isolation: int = m.ISOLATION_READ_UNCOMMITTED,
                       timeout: float = 15.0):
    """As produce, retrying what a producer retries (the SPU still starting, not leader yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return produce(cluster, spu, topic, payload, isolation)
        except RilletError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def values(cluster, topic: str) -> list[tuple[int, bytes]]:
    config = ConsumerConfig()
    config.disable_continuous()
    stream = cluster.fluvio().partition_consumer(topic, 0).stream_with_config(Offset.beginning(), config)
    return [(r.offset(), r.value()) for r in stream]


def wait_leader(cluster, topic: str, not_spu: int | None = None, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cluster.admin() as admin:
            row = admin.list_partitions([topic])[0]
        if row.status == "Online" and row.leader != not_spu and row.leader >= 0:
            return row.leader
        time.sleep(0.02)
    raise AssertionError(f"{topic}/0 has no new Online leader within {timeout} s")


def test_the_same_batch_twice_is_stored_once_and_answered_with_its_first_offset(cluster):
    cluster.create_topic("idem-raw")
    wait_leader(cluster, "idem-raw")
    assert produce(cluster, SPU, "idem-raw", batch(b"other", pid=-1, sequence=-1)).base_offset == 0
    first = batch(b"a", b"b")
    assert produce(cluster, SPU, "idem-raw", first).base_offset == 1
    again = produce(cluster, SPU, "idem-raw", first)
    assert (again.base_offset, again.leo) == (1, 3)                 # the original offset; nothing appended
    assert produce(cluster, SPU, "idem-raw", batch(b"c", sequence=2)).base_offset == 3
    assert produce(cluster, SPU, "idem-raw", first, m.ISOLATION_READ_COMMITTED).base_offset == 1
    both = produce(cluster, SPU, "idem-raw", first + batch(b"d", sequence=3))    # one request, two batches
    assert (both.base_offset, both.leo) == (1, 5)                               # the first's offset; "d" stored
    assert values(cluster, "idem-raw") == [(0, b"other"), (1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]


def test_a_sequence_gap_is_refused_with_a_typed_error_and_nothing_is_written(cluster):
    cluster.create_topic("idem-gap")
    wait_leader(cluster, "idem-gap")
    produce(cluster, SPU, "idem-gap", batch(b"a", b"b"))
    with pytest.raises(OutOfOrderSequence, match=r"idem-gap/0: producer 424242 sent sequence 5, expected 2"):
        produce(cluster, SPU, "idem-gap", batch(b"late", sequence=5))
    with pytest.raises(OutOfOrderSequence, match="sent sequence 3, expected 0"):
        produce(cluster, SPU, "idem-gap", batch(b"x", pid=PID + 1, sequence=3))   # a new producer starts at 0
    assert values(cluster, "idem-gap") == [(0, b"a"), (1, b"b")]


def test_the_producer_state_is_rebuilt_from_the_log_when_the_spu_restarts(cluster):
    cluster.create_topic("idem-restart")
    wait_leader(cluster, "idem-restart")
    first = batch(b"a")
    produce(cluster, SPU, "idem-restart", first)
    produce(cluster, SPU, "idem-restart", batch(b"b", sequence=1))
    old = cluster.kill_spu(SPU)
    while cluster.spu_pid(SPU) == old:            # the SC noticed
        time.sleep(0.02)
    cluster.start_spu(SPU)
    assert produce_when_ready(cluster, SPU, "idem-restart", first).base_offset == 0
    with pytest.raises(OutOfOrderSequence, match="expected 2"):
        produce(cluster, SPU, "idem-restart", batch(b"c", sequence=3))
    assert values(cluster, "idem-restart") == [(0, b"a"), (1, b"b")]


def test_a_retry_after_a_lost_answer_is_stored_once(cluster):
    """The SPU is stopped with the request in its socket; the producer's deadline passes, it
    gives up on the connection and retries on a new one; the SPU, resumed, stores the first
    copy, and answers the retry with that copy's offset."""
    cluster.create_topic("idem-lost")
    wait_leader(cluster, "idem-lost")
    config = (TopicProducerConfigBuilder().linger(0).timeout(100)             # deadline: 0.1 s + 1 s margin
              .retry_policy(max_retries=50, initial_delay_ms=100, strategy="fixed", timeout_ms=20_000).build())
    producer = cluster.fluvio().topic_producer_with_config("idem-lost", config)
    producer.send(None, "warm-up").wait(timeout=10)
    pid = cluster.kill_spu(SPU, signal.SIGSTOP)
    try:
        out = producer.send(None, "once")
        time.sleep(1.25)                      # past the deadline; under the SC's 1.5 s liveness limit
    finally:
        os.kill(pid, signal.SIGCONT)
    assert out.wait(timeout=15).offset() == 1
    assert producer.statistics().retries >= 1
    producer.close()
    assert values(cluster, "idem-lost") == [(0, b"warm-up"), (1, b"once")]


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory):
    with LocalCluster(spus=3, home=tmp_path_factory.mktemp("rillet")) as c:
        yield c
    assert not c.leftovers()


def test_a_duplicate_after_leader_failover_is_recognised_by_the_new_leader(cluster3):
    cluster3.create_topic("idem-failover", replication=3)
    leader = wait_leader(cluster3, "idem-failover")
    first = batch(b"a", b"b")
    produce(cluster3, leader, "idem-failover", first, m.ISOLATION_READ_COMMITTED)     # on every replica
    cluster3.kill_spu(leader)
    new = wait_leader(cluster3, "idem-failover", not_spu=leader)
    again = produce_when_ready(cluster3, new, "idem-failover", first, m.ISOLATION_READ_COMMITTED)
    assert (again.base_offset, again.leo) == (0, 2)
    with pytest.raises(OutOfOrderSequence, match="expected 2"):
        produce(cluster3, new, "idem-failover", batch(b"gap", sequence=4))
    assert produce(cluster3, new, "idem-failover", batch(b"c", sequence=2)).base_offset == 2
    cluster3.start_spu(leader)
    assert values(cluster3, "idem-failover") == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_records_streamed_through_leader_kills_are_stored_exactly_once_and_in_order(cluster3):
    """Many batches in flight (linger 2 ms, keyed, 2 partitions, ReadCommitted) while the leader of
    partition 0 is killed twice: retries after lost answers and batches behind a failed one all
    end stored once, each key's records in send order."""
    topic = "idem-stream"
    cluster3.create_topic(topic, partitions=2, replication=3)
    wait_leader(cluster3, topic)
    producer = cluster3.fluvio().topic_producer_with_config(topic, exactly_once_config())
    sender = KeyedSender(producer)
    try:
        for _ in range(2):
            time.sleep(0.4)
            leader = wait_leader(cluster3, topic)
            cluster3.kill_spu(leader)
            wait_leader(cluster3, topic, not_spu=leader)
            cluster3.start_spu(leader)
    finally:
        sender.stop()
    producer.flush(timeout=40)                     # raises if any record failed
    producer.close()
    assert_stored_once_in_key_order(cluster3.fluvio(), topic, 2, sender.sent)
