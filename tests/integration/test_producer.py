"""Producer semantics against real SC and SPU processes: partitioning, batching,
limits, compression, isolation, flush at close / garbage collection / exit, asyncio."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from rillet import (
    Compression, CompressionError, ConsumerConfig, DeliverySemantic, InvalidArgument, Isolation, MessageTooLarge, Offset,
    Timeout, TopicProducerConfigBuilder,
)
from rillet._partitioner import key_hash


def read_all(fluvio, topic, partition=0):
    config = ConsumerConfig()
    config.disable_continuous()
    return list(fluvio.partition_consumer(topic, partition).stream_with_config(Offset.beginning(), config))


def config(**settings):
    builder = TopicProducerConfigBuilder()
    for name, value in settings.items():
        getattr(builder, name)(value)
    return builder.build()


# --- partitioning ---------------------------------------------------------------------------

def _produce_keyed(home: str, cluster: str, proc: int, records: int, keys: int) -> None:
    """Child process: ``records`` keyed records over ``keys`` keys, values "key:seq"."""
    from rillet import Fluvio
    with Fluvio.connect(cluster, home=home) as fluvio, fluvio.topic_producer("multi") as producer:
        for i in range(records):
            key = f"p{proc}-k{i % keys}"
            producer.send(key, f"{key}:{i // keys}")


def test_four_producer_processes_keep_keys_together_and_in_order(cluster):
    procs, records, keys = 4, 5_000, 50
    cluster.create_topic("multi", partitions=3)
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_produce_keyed, args=(str(cluster.home), cluster.name, i, records, keys))
                for i in range(procs)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    fluvio = cluster.fluvio()
    seqs, where = defaultdict(list), defaultdict(set)
    for p in range(3):
        for record in read_all(fluvio, "multi", p):
            key, seq = record.value_string().split(":")
            assert record.key_string() == key
            seqs[key].append(int(seq))
            where[key].add(p)
    assert sum(len(s) for s in seqs.values()) == procs * records
    assert len(seqs) == procs * keys
    for key, parts in where.items():
        assert parts == {key_hash(key.encode()) % 3}, key            # one partition: Fluvio's
        assert seqs[key] == list(range(records // keys)), key        # all there, once, in order
    assert set().union(*where.values()) == {0, 1, 2}


def test_keyless_records_go_round_robin(cluster):
    cluster.create_topic("keyless", partitions=3)
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("keyless", config(linger=0)) as producer:
        outputs = [producer.send(None, f"r{i}") for i in range(30)]
        assert [o.wait(timeout=10).partition_id() for o in outputs] == [i % 3 for i in range(30)]
    # With batching, the keyless partition moves on with each full batch.
    with fluvio.topic_producer_with_config("keyless", config(linger=500, batch_size=1024)) as producer:
        outputs = [producer.send_string("x" * 100) for _ in range(90)]
        producer.flush()
        counts = defaultdict(int)
        for o in outputs:
            counts[o.wait().partition_id()] += 1
    assert set(counts) == {0, 1, 2} and min(counts.values()) >= 20


def test_explicit_partitions(cluster):
    cluster.create_topic("explicit", partitions=3)
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("explicit", config(set_specific_partitioner=2, linger=0)) as producer:
        assert {producer.send(f"k{i}", "v").wait(timeout=10).partition_id() for i in range(20)} == {2}
        assert producer.send_to_partition(1, "k0", "to-one").wait(timeout=10).partition_id() == 1
        with pytest.raises(InvalidArgument, match="partition 3 does not exist"):
            producer.send_to_partition(3, None, "nowhere")
    with pytest.raises(InvalidArgument, match="partition 5 does not exist"):
        fluvio.topic_producer_with_config("explicit", config(set_specific_partitioner=5))
    assert [r.value_string() for r in read_all(fluvio, "explicit", 1)] == ["to-one"]
    assert len(read_all(fluvio, "explicit", 2)) == 20


# --- batching and limits -------------------------------------------------------------------------

def test_linger_zero_sends_at_once_and_a_long_linger_waits(cluster):
    cluster.create_topic("linger")
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("linger", config(linger=0)) as producer:
        producer.send(None, "warm-up").wait(timeout=10)
        start = time.monotonic()
        producer.send(None, "now").wait(timeout=10)
        assert time.monotonic() - start < 0.3
    with fluvio.topic_producer_with_config("linger", config(linger=500)) as producer:
        held = producer.send(None, "held")
        time.sleep(0.2)
        assert not held.is_done()                    # still inside its linger
        start = time.monotonic()
        producer.flush()
        assert held.is_done() and time.monotonic() - start < 0.4
        start = time.monotonic()
        producer.send(None, "expires").wait(timeout=10)     # no flush: the linger timer sends it
        assert 0.4 <= time.monotonic() - start < 2.0
    assert [r.value_string() for r in read_all(fluvio, "linger")] == ["warm-up", "now", "held", "expires"]


def test_a_record_too_large_is_refused_and_records_are_never_split(cluster):
    cluster.create_topic("sizes")
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("sizes", config(max_request_size=2048, batch_size=1000)) as producer:
        with pytest.raises(MessageTooLarge, match=r"record of 3021 bytes for topic 'sizes' exceeds max_request_size=2048"):
            producer.send(None, b"x" * 3000)
        values = [bytes([65 + i]) * 1500 for i in range(4)]       # each over batch_size: a batch of its own
        outputs = [producer.send(None, v) for v in values]
        producer.flush()
        assert [o.wait().offset() for o in outputs] == [0, 1, 2, 3]
    assert [r.value() for r in read_all(fluvio, "sizes")] == values
    with pytest.raises(InvalidArgument, match="max_request_size"):
        config(max_request_size=128 * 1024 * 1024)


def test_wait_with_a_timeout_names_it(cluster):
    cluster.create_topic("wait-timeout")
    with cluster.fluvio().topic_producer_with_config("wait-timeout", config(linger=5_000)) as producer:
        out = producer.send(None, "slow")
        with pytest.raises(Timeout, match=r"wait-timeout/0 not acknowledged within timeout=0.05 s"):
            out.wait(timeout=0.05)
        producer.flush()
        assert out.wait().offset() == 0


# --- compression and isolation ------------------------------------------------------------------------

def test_the_topic_compression_rule_is_a_clear_error(cluster):
    cluster.create_topic("lz4-only", compression="lz4")
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config("lz4-only", config(compression=Compression.Lz4, linger=0)) as producer:
        assert producer.send(None, "fits").wait(timeout=10).offset() == 0
    producer = fluvio.topic_producer_with_config("lz4-only", config(compression=Compression.Gzip, linger=0))
    out = producer.send(None, "refused")
    with pytest.raises(CompressionError, match=r"produce to lz4-only/0 failed: .*requires compression lz4.*gzip"):
        out.wait(timeout=10)
    with pytest.raises(CompressionError, match="1 record failed since the last flush"):
        producer.flush()
    stats = producer.statistics()
    assert (stats.records_failed, stats.retries) == (1, 0)            # not retriable: never retried
    producer.close()
    assert [r.value_string() for r in read_all(fluvio, "lz4-only")] == ["fits"]


@pytest.mark.parametrize("isolation", [Isolation.ReadUncommitted, Isolation.ReadCommitted])
def test_both_isolations_acknowledge(cluster, isolation):
    topic = f"iso-{int(isolation)}"
    cluster.create_topic(topic)
    fluvio = cluster.fluvio()
    with fluvio.topic_producer_with_config(topic, config(isolation=isolation, timeout=500, linger=0)) as producer:
        assert [producer.send(None, f"v{i}").wait(timeout=10).offset() for i in range(10)] == list(range(10))
    assert len(read_all(fluvio, topic)) == 10


# --- what is flushed when ----------------------------------------------------------------------------

def test_garbage_collection_flushes(cluster):
    cluster.create_topic("collected")
    fluvio = cluster.fluvio()
    producer = fluvio.topic_producer_with_config("collected", config(linger=60_000))
    for i in range(10):
        producer.send(None, f"r{i}")
    del producer
    gc.collect()
    assert [r.value_string() for r in read_all(fluvio, "collected")] == [f"r{i}" for i in range(10)]


EXIT_SCRIPT = """
import os, sys
from rillet import Fluvio, TopicProducerConfigBuilder
fluvio = Fluvio.connect(sys.argv[1], home=sys.argv[2])
producer = fluvio.topic_producer_with_config(sys.argv[3], TopicProducerConfigBuilder().linger(60_000).build())
for i in range(100):
    producer.send(None, f"r{i}")
if sys.argv[4] == "os._exit":
    os._exit(0)
"""


@pytest.mark.parametrize("ending,expected", [("normal", 100), ("os._exit", 0)])
def test_interpreter_exit_flushes_but_os_exit_loses(cluster, ending, expected):
    topic = "exit-normal" if ending == "normal" else "exit-abrupt"
    cluster.create_topic(topic)
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, cluster.name, str(cluster.home), topic, ending],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert len(read_all(cluster.fluvio(), topic)) == expected


def test_delivery_semantic_and_config_validation():
    assert config(delivery_semantic="at-most-once").delivery_semantic is DeliverySemantic.AtMostOnce
    with pytest.raises(InvalidArgument, match="batch_queue_size"):
        config(batch_queue_size=0)
    with pytest.raises(InvalidArgument, match="linger"):
        config(linger=-1)


# --- asyncio ---------------------------------------------------------------------------------------------

def test_the_async_api(cluster):
    cluster.create_topic("async")
    producer = cluster.fluvio().topic_producer_with_config("async", config(linger=20))

    async def main():
        first = await producer.async_send("k", "v0")
        second = await producer.async_send_string("v1")
        rest = await producer.async_send_all([(None, "v2"), (b"k", b"v3")])
        await producer.async_flush()
        metas = [await o.async_wait() for o in (first, second, *rest)]
        assert await first.async_wait() is None
        return [m.offset() for m in metas]

    assert asyncio.run(main()) == [0, 1, 2, 3]
    producer.close()
