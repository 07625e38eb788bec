"""Retention: sealed segments past a topic's time or size limit are deleted; offsets are never reused."""

from __future__ import annotations

import time

import pytest

from rillet import ConsumerConfig, Isolation, Offset, OffsetOutOfRange, TopicProducerConfigBuilder
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.records import BatchBuilder
from rillet.testing import LocalCluster

from .test_failover import partition, wait_for

SEGMENT = 1024


@pytest.fixture
def fast_retention(monkeypatch):
    monkeypatch.setenv("RILLET_RETENTION_CHECK_S", "0.1")


def read_all(cluster, topic, start=Offset.beginning()):
    config = ConsumerConfig()
    config.disable_continuous()
    config.isolation(Isolation.ReadCommitted)
    return [(r.offset(), r.value()) for r in cluster.fluvio().partition_consumer(topic, 0).stream_with_config(start, config)]


def test_size_limit_deletes_the_oldest_segments(tmp_path, fast_retention):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("sized", segment_size=SEGMENT, max_partition_size=4 * SEGMENT)
        config = TopicProducerConfigBuilder().linger(0).build()
        with cluster.fluvio().topic_producer_with_config("sized", config) as producer:
            for i in range(100):
                producer.send(None, b"%03d" % i + b"x" * 200).wait(timeout=10)
        def trimmed():                               # the listing comes from reports, 50 ms behind
            q = partition(cluster, "sized")
            return q.leo == 100 and q.log_start > 0 and q.size_bytes <= 5 * SEGMENT
        wait_for(trimmed, what="retention to bring the partition under its size limit")
        p = partition(cluster, "sized")
        records = read_all(cluster, "sized")
        assert [o for o, _v in records] == list(range(p.log_start, 100))     # what is left, in order
        with pytest.raises(OffsetOutOfRange, match=str(p.log_start)):
            read_all(cluster, "sized", Offset.absolute(0))
        with cluster.fluvio().topic_producer_with_config("sized", config) as producer:
            assert producer.send(None, "next").wait(timeout=10).offset() == 100   # offsets are never reused
        cluster.restart()
        assert partition(cluster, "sized").log_start == read_all(cluster, "sized")[0][0]


def test_time_limit_deletes_segments_of_old_records(tmp_path, fast_retention):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("timed", segment_size=SEGMENT, retention_time="10s")
        conn = Connection(cluster.paths.spu_socket(5001))
        hour_ago = int(time.time() * 1000) - 3_600_000
        for i in range(6):                                   # each batch fills most of a segment
            b = BatchBuilder()
            b.append(None, b"old-%d" % i + b"o" * 600, hour_ago + i)
            conn.call(m.ProduceRequest(conn.next_cid(), "timed", 0, 0, 1000, memoryview(b.build())))
        conn.close()
        with cluster.fluvio().topic_producer_with_config("timed", TopicProducerConfigBuilder().linger(0).build()) as producer:
            for i in range(3):
                producer.send(None, b"new-%d" % i + b"n" * 600).wait(timeout=10)
        wait_for(lambda: partition(cluster, "timed").log_start >= 6, what="old segments to go")
        values = [v[:5] for _o, v in read_all(cluster, "timed")]
        assert values == [b"new-0", b"new-1", b"new-2"]


def test_a_follower_behind_the_leaders_log_start_starts_over(tmp_path, fast_retention):
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        cluster.create_topic("kept", replication=3, segment_size=SEGMENT, max_partition_size=3 * SEGMENT)
        p = partition(cluster, "kept")
        follower = [s for s in p.replicas if s != p.leader][0]
        config = TopicProducerConfigBuilder().linger(0).isolation(Isolation.ReadCommitted).build()
        with cluster.fluvio().topic_producer_with_config("kept", config) as producer:
            producer.send(None, b"first").wait(timeout=10)
            cluster.kill_spu(follower)
            for i in range(60):
                producer.send(None, b"%03d" % i + b"x" * 300).wait(timeout=10)
            wait_for(lambda: partition(cluster, "kept").log_start > 1, what="the leader to delete")
            cluster.start_spu(follower)
            wait_for(lambda: follower in partition(cluster, "kept").in_sync, what="the follower to rejoin")
            producer.send(None, b"last").wait(timeout=10)
        leader = partition(cluster, "kept").leader
        wait_for(lambda: last_record(cluster, follower, "kept") == last_record(cluster, leader, "kept") == b"last",
                 what="the follower to hold the leader's last record")


def last_record(cluster, spu, topic):
    """The last record in the newest segment of a replica, read from the file."""
    from rillet.ipc.record_decoding import iter_records
    from rillet.ipc.records import iter_batches
    newest = max((cluster.paths.replica_dir(spu, topic, 0)).glob("*.log"))
    data = newest.read_bytes()
    end = 0
    for pos, header in iter_batches(data):
        end = pos + header.total_size
    records = list(iter_records(data[:end]))
    return records[-1].value if records else None
