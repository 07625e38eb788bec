"""Produce and consume through real SC and SPU processes."""

from __future__ import annotations

import time

import pytest

from rillet import (
    Compression, ConsumerConfig, Offset, OffsetOutOfRange, TopicNotFound, TopicProducerConfigBuilder,
)


def read_all(fluvio, topic, partition=0, start=None):
    consumer = fluvio.partition_consumer(topic, partition)
    config = ConsumerConfig()
    config.disable_continuous()
    return list(consumer.stream_with_config(start or Offset.beginning(), config))


def test_offsets_are_zero_to_n_minus_one_in_order(cluster):
    cluster.create_topic("ordered")
    fluvio = cluster.fluvio()
    producer = fluvio.topic_producer("ordered")
    outputs = [producer.send(None, f"record-{i}") for i in range(1000)]
    producer.flush()
    metas = [o.wait() for o in outputs]
    assert [m.offset() for m in metas] == list(range(1000))
    assert all(m.partition_id() == 0 for m in metas)
    assert outputs[0].wait() is None            # metadata is given once, then None
    records = read_all(fluvio, "ordered")
    assert [r.offset() for r in records] == list(range(1000))
    assert [r.value_string() for r in records] == [f"record-{i}" for i in range(1000)]
    producer.close()


def test_keys_and_timestamps_round_trip(cluster):
    cluster.create_topic("keyed")
    fluvio = cluster.fluvio()
    before = int(time.time() * 1000)
    with fluvio.topic_producer("keyed") as producer:
        producer.send(b"k-bytes", b"v1")
        producer.send("k-str", "v2")
        producer.send(None, b"v3")
        producer.send(b"", b"v4")
    after = int(time.time() * 1000)
    records = read_all(fluvio, "keyed")
    assert [(r.key(), r.value()) for r in records] == [(b"k-bytes", b"v1"), (b"k-str", b"v2"), (None, b"v3"), (b"", b"v4")]
    assert records[2].key_string() == ""
    assert all(before <= r.timestamp() <= after for r in records)


@pytest.mark.parametrize("codec", [Compression.None_, Compression.Gzip, Compression.Snappy, Compression.Lz4, Compression.Zstd])
def test_every_codec_round_trips(cluster, codec):
    topic = f"codec-{codec.name.lower().rstrip('_')}"
    cluster.create_topic(topic)
    fluvio = cluster.fluvio()
    config = TopicProducerConfigBuilder().compression(codec).batch_size(4096).linger(0).build()
    values = [(f"key-{i % 7}".encode(), (f"value {i} " * (i % 13 + 1)).encode()) for i in range(300)]
    with fluvio.topic_producer_with_config(topic, config) as producer:
        for k, v in values:
            producer.send(k, v)
    records = read_all(fluvio, topic)
    assert [(r.key(), r.value()) for r in records] == values


def test_start_positions(cluster):
    cluster.create_topic("positions")
    fluvio = cluster.fluvio()
    with fluvio.topic_producer("positions") as producer:
        for i in range(10):
            producer.send(None, str(i))
    values = lambda start: [r.value_string() for r in read_all(fluvio, "positions", start=start)]
    assert values(Offset.absolute(7)) == ["7", "8", "9"]
    assert values(Offset.from_end(3)) == ["7", "8", "9"]
    assert values(Offset.from_beginning(8)) == ["8", "9"]
    assert values(Offset.end()) == []
    with pytest.raises(OffsetOutOfRange):
        read_all(fluvio, "positions", start=Offset.absolute(11))


def test_continuous_stream_sees_new_records(cluster):
    cluster.create_topic("live")
    fluvio = cluster.fluvio()
    stream = fluvio.partition_consumer("live", 0).stream(Offset.end())
    with fluvio.topic_producer_with_config("live", TopicProducerConfigBuilder().linger(0).build()) as producer:
        producer.send(None, "first").wait()
        first = next(stream)
        producer.send(None, "second").wait()
        second = next(stream)
    stream.close()
    assert (first.offset(), first.value_string()) == (0, "first")
    assert (second.offset(), second.value_string()) == (1, "second")


def test_multi_partition_topic_accepts_records_on_every_partition(cluster):
    cluster.create_topic("spread", partitions=3)
    fluvio = cluster.fluvio()
    with fluvio.topic_producer("spread") as producer:
        outputs = [producer.send(f"key-{i}", f"v{i}") for i in range(300)]
        producer.flush()
        parts = {o.wait().partition_id() for o in outputs}
    assert parts == {0, 1, 2}
    total = sum(len(read_all(fluvio, "spread", p)) for p in range(3))
    assert total == 300


def test_missing_topic_is_a_clear_error(cluster):
    fluvio = cluster.fluvio()
    with pytest.raises(TopicNotFound, match="no-such-topic"):
        fluvio.topic_producer("no-such-topic")
    with pytest.raises(TopicNotFound, match="no-such-topic"):
        fluvio.partition_consumer("no-such-topic", 0)
