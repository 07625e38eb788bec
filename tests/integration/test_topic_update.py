"""`topic update` and `topic add-partition` on live topics (issue 11): a producer and a
consumer keep running through the change, and every record sent is read once, in order
per partition. The SPUs must apply the new settings: the new segment size shows in the
segment files, the new flush policy in the fsync count, keys in the new partition count."""

from __future__ import annotations

import pytest

from rillet import ConsumerConfig, Offset, TopicProducerConfigBuilder, Compression
from rillet.ipc.errors import InvalidArgument
from rillet._partitioner import Partitioner

from tests.integration._traffic import Traffic


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from rillet.testing import LocalCluster
    with LocalCluster(spus=2, home=tmp_path_factory.mktemp("rillet")) as c:
        yield c
    assert not c.leftovers()


def _partition(admin, topic, p):
    return next(x for x in admin.list_partitions([topic]) if x.partition == p)


def test_update_under_a_running_producer_and_consumer(cluster):
    cluster.create_topic("upd", partitions=2, replication=2, segment_size="64KiB")
    fluvio, admin = cluster.fluvio(), cluster.admin()
    traffic = Traffic(fluvio, "upd", 2, Compression.Lz4)
    traffic.wait_sent(200)
    flushes_before = _partition(admin, "upd", 0).flushes
    admin.update_topic("upd", retention_time="1h", segment_size="8KiB", max_partition_size="100MiB",
                       compression_type="lz4", flush="every-batch", min_in_sync_replicas=1)
    traffic.wait_sent(len(traffic.sent) + 600)
    traffic.finish()

    spec = admin.list_topics(["upd"])[0].spec
    assert (spec.retention_time_s, spec.segment_size, spec.max_partition_size, spec.compression_type, spec.flush,
            spec.min_in_sync_replicas) == (3600, 8192, 100 * 1024 * 1024, "lz4", "every-batch", 1)
    part = _partition(admin, "upd", 0)
    assert part.flushes > flushes_before                          # the leader fsyncs every batch now
    for spu in part.replicas:                                     # leader and follower roll at 8 KiB now
        files = sorted(cluster.paths.replica_dir(spu, "upd", 0).glob("*.log"))
        assert len(files) >= 3 and max(f.stat().st_size for f in files[1:-1]) <= 8192, files

    # A producer whose codec the topic no longer takes is told so; nothing of it is stored.
    other = TopicProducerConfigBuilder().compression(Compression.Gzip).linger(0).build()
    with pytest.raises(Exception, match="compression"):
        with fluvio.topic_producer_with_config("upd", other) as producer:
            producer.send("k", "v").wait(10)


def test_update_refuses_bad_values(cluster):
    cluster.create_topic("upd-bad", partitions=1)
    with cluster.admin() as admin:
        with pytest.raises(InvalidArgument, match="min in-sync replicas must be between 1 and 1, got 2"):
            admin.update_topic("upd-bad", min_in_sync_replicas=2)
        with pytest.raises(InvalidArgument, match="nothing to update"):
            admin.update_topic("upd-bad")
        with pytest.raises(InvalidArgument, match="at least 1"):
            admin.add_partitions("upd-bad", 0)
        assert admin.list_topics(["upd-bad"])[0].spec.min_in_sync_replicas == 1


def test_add_partition_under_a_running_producer_and_consumer(cluster):
    cluster.create_topic("grow", partitions=2, replication=2)
    fluvio, admin = cluster.fluvio(), cluster.admin()
    traffic = Traffic(fluvio, "grow", 2)
    traffic.wait_sent(200)
    admin.add_partitions("grow", 2)
    assert admin.list_topics(["grow"])[0].spec.partitions == 4
    traffic.wait_sent(len(traffic.sent) + 300)
    traffic.finish()                                  # the producer made before keeps the 2 it knew

    assert sorted(p.status for p in admin.list_partitions(["grow"])) == ["Online"] * 4
    keys = [f"key-{i}" for i in range(40)]
    with fluvio.topic_producer("grow") as producer:   # a producer made after: keys hash over 4
        outs = [producer.send(k, "after") for k in keys]
        producer.flush()
        placed = [o.wait().partition_id() for o in outs]
    assert placed == [Partitioner().for_key(k.encode(), 4) for k in keys]
    assert max(placed) >= 2

    config = ConsumerConfig()
    config.disable_continuous()
    everything = list(fluvio.multi_partition_consumer("grow").stream_with_config(Offset.beginning(), config))
    assert len(everything) == len(traffic.sent) + 2 + len(keys)      # + the two END records
