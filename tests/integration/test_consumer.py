"""Consumers through real SC and SPU processes: named offsets, strategies, every way to read."""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time

import pytest

from rillet import (
    ConsumerConfig, ConsumerConfigExtBuilder, ConsumerOffsetNotFound, InvalidArgument, Isolation, Offset,
    OffsetManagementStrategy, PartitionNotFound, PartitionSelectionStrategy, TopicNotFound,
    TopicProducerConfigBuilder,
)

AUTO, MANUAL, NONE = OffsetManagementStrategy.AUTO, OffsetManagementStrategy.MANUAL, OffsetManagementStrategy.NONE


def produce(fluvio, topic, values, key=None):
    with fluvio.topic_producer_with_config(topic, TopicProducerConfigBuilder().linger(0).build()) as producer:
        for v in values:
            producer.send(key if key is None else f"{key}-{v}", str(v))
        producer.flush()


def config(topic, consumer=None, strategy=NONE, start=None, partition=0, continuous=False, **more):
    b = ConsumerConfigExtBuilder(topic)
    if partition is not None:
        b.partition(partition)
    if start is not None:
        b.offset_start(start)
    if consumer is not None:
        b.offset_consumer(consumer)
    b.offset_strategy(strategy)
    if not continuous:
        b.disable_continuous()
    for name, value in more.items():
        getattr(b, name)(value)
    return b.build()


def stored(fluvio, consumer, topic):
    return {(o.partition): o.offset for o in fluvio.consumer_offsets() if (o.consumer_id, o.topic) == (consumer, topic)}


def values(records):
    return [r.value_string() for r in records]


def test_manual_stores_nothing_until_commit_and_flush(cluster):
    cluster.create_topic("c-manual")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-manual", range(10))
    stream = fluvio.consumer_with_config(config("c-manual", "m1", MANUAL))
    assert values(next(stream) for _ in range(5)) == ["0", "1", "2", "3", "4"]
    assert stored(fluvio, "m1", "c-manual") == {}
    stream.offset_commit()
    assert stored(fluvio, "m1", "c-manual") == {}          # commit is local
    stream.offset_flush()
    assert stored(fluvio, "m1", "c-manual") == {0: 4}      # the last record seen
    next(stream)
    stream.close()                                          # MANUAL: closing stores nothing more
    assert stored(fluvio, "m1", "c-manual") == {0: 4}
    with fluvio.consumer_with_config(config("c-manual", "m1", MANUAL)) as again:
        assert values(again) == ["5", "6", "7", "8", "9"]


def test_auto_resumes_after_the_last_record_read(cluster):
    cluster.create_topic("c-auto")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-auto", range(6))
    with fluvio.consumer_with_config(config("c-auto", "a1", AUTO)) as stream:
        assert values([next(stream), next(stream), next(stream)]) == ["0", "1", "2"]
    assert stored(fluvio, "a1", "c-auto") == {0: 2}        # close commits and flushes the last record read
    with fluvio.consumer_with_config(config("c-auto", "a1", AUTO)) as stream:
        assert values(stream) == ["3", "4", "5"]           # end of stream commits and flushes too
    assert stored(fluvio, "a1", "c-auto") == {0: 5}
    produce(fluvio, "c-auto", [6, 7])
    stream = fluvio.consumer_with_config(config("c-auto", "a1", AUTO))
    assert next(stream).value_string() == "6"
    del stream                                             # garbage collection flushes as well
    gc.collect()
    assert stored(fluvio, "a1", "c-auto") == {0: 6}


def test_auto_flushes_periodically_while_waiting(cluster):
    cluster.create_topic("c-period")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-period", range(5))
    stream = fluvio.consumer_with_config(config("c-period", "p1", AUTO, continuous=True, offset_flush=50))
    assert values(next(stream) for _ in range(5)) == ["0", "1", "2", "3", "4"]
    got = []
    reader = threading.Thread(target=lambda: got.append(next(stream)))
    reader.start()                                         # waits for record 5
    # Record 4 is handed out but not committed until the next read (Fluvio's AUTO rule);
    # everything before it is flushed by the periodic flush while the reader waits.
    deadline = time.monotonic() + 5
    while stored(fluvio, "p1", "c-period") != {0: 3} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored(fluvio, "p1", "c-period") == {0: 3}
    produce(fluvio, "c-period", [5])
    reader.join(5)
    assert values(got) == ["5"]
    stream.close()
    assert stored(fluvio, "p1", "c-period") == {0: 5}


def test_two_consumer_names_keep_separate_offsets(cluster):
    cluster.create_topic("c-two")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-two", range(4))
    with fluvio.consumer_with_config(config("c-two", "first", AUTO)) as s:
        assert values(s) == ["0", "1", "2", "3"]
    with fluvio.consumer_with_config(config("c-two", "second", AUTO)) as s:
        assert values([next(s)]) == ["0"]
    assert stored(fluvio, "first", "c-two") == {0: 3}
    assert stored(fluvio, "second", "c-two") == {0: 0}
    with fluvio.consumer_with_config(config("c-two", "second", AUTO)) as s:
        assert values(s) == ["1", "2", "3"]


def test_start_offsets_and_stored_offsets(cluster):
    cluster.create_topic("c-start")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-start", range(10))
    read = lambda start, name=None, strategy=NONE: values(fluvio.consumer_with_config(config("c-start", name, strategy, start)))
    assert read(Offset.from_end(3)) == ["7", "8", "9"]
    assert values(fluvio.partition_consumer("c-start", 0).stream_with_config(
        Offset.from_end(3), ConsumerConfig().disable_continuous())) == ["7", "8", "9"]
    assert read(Offset.from_beginning(8)) == ["8", "9"]
    assert read(Offset.absolute(9)) == ["9"]
    assert read(Offset.end()) == []
    with fluvio.consumer_with_config(config("c-start", "s1", AUTO)) as s:
        [next(s) for _ in range(4)]                        # seen 0..3
    assert read(Offset.end(), "s1", AUTO) == ["4", "5", "6", "7", "8", "9"][:6]   # end() resumes after 3
    assert read(Offset.absolute(8), "s1", MANUAL) == ["8", "9"]                    # absolute ignores it


def test_offsets_survive_a_cluster_restart(rillet_cluster):
    rillet_cluster.create_topic("durable", partitions=2)
    fluvio = rillet_cluster.fluvio()
    produce(fluvio, "durable", range(20), key="k")
    with fluvio.consumer_with_config(config("durable", "keeper", AUTO, partition=None)) as s:
        first = [next(s) for _ in range(7)]
    before = sorted((o.consumer_id, o.topic, o.partition, o.offset) for o in fluvio.consumer_offsets())
    assert sum(1 + o for *_x, o in before) == 7
    rillet_cluster.restart()
    fluvio = rillet_cluster.fluvio()
    assert sorted((o.consumer_id, o.topic, o.partition, o.offset) for o in fluvio.consumer_offsets()) == before
    with fluvio.consumer_with_config(config("durable", "keeper", AUTO, partition=None)) as s:
        rest = list(s)
    assert len(first) + len(rest) == 20
    assert {(r.partition(), r.offset()) for r in first}.isdisjoint({(r.partition(), r.offset()) for r in rest})


def test_every_record_of_three_partitions(cluster):
    cluster.create_topic("c-three", partitions=3)
    fluvio = cluster.fluvio()
    produce(fluvio, "c-three", range(300), key="k")
    records = list(fluvio.consumer_with_config(config("c-three", partition=None)))
    assert sorted(int(r.value_string()) for r in records) == list(range(300))
    assert {r.partition() for r in records} == {0, 1, 2}
    for p in range(3):
        offsets = [r.offset() for r in records if r.partition() == p]
        assert offsets == list(range(len(offsets)))         # each partition in order
    multi = fluvio.multi_partition_consumer("c-three").stream_with_config(
        Offset.beginning(), ConsumerConfig().disable_continuous())
    assert sorted(int(v) for v in values(multi)) == list(range(300))
    pairs = fluvio.multi_topic_partition_consumer([("c-three", 0), ("c-three", 2)]).stream_with_config(
        Offset.beginning(), ConsumerConfig().disable_continuous())
    assert {r.partition() for r in pairs} == {0, 2}
    assert PartitionSelectionStrategy.with_all("c-three").topic == "c-three"


def test_batches_and_many_readers_on_one_partition(cluster):
    cluster.create_topic("c-many")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-many", range(500))
    stream = fluvio.consumer_with_config(config("c-many", max_bytes=2048))
    batches = list(iter(stream.next_batch, []))
    assert len(batches) > 1 and sum(len(b) for b in batches) == 500
    assert [r.offset() for b in batches for r in b] == list(range(500))
    results = [None] * 6

    def reader(i):
        with cluster.fluvio().consumer_with_config(config("c-many", f"reader-{i}", AUTO)) as s:
            results[i] = [r.offset() for r in s]
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert results == [list(range(500))] * 6
    assert all(stored(fluvio, f"reader-{i}", "c-many") == {0: 499} for i in range(6))


def test_isolation_levels_read_what_is_visible(cluster):
    cluster.create_topic("c-iso")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-iso", range(5))
    for isolation in (Isolation.ReadCommitted, Isolation.ReadUncommitted):
        assert values(fluvio.consumer_with_config(config("c-iso", isolation=isolation))) == ["0", "1", "2", "3", "4"]


def test_async_iteration(cluster):
    cluster.create_topic("c-async", partitions=2)
    fluvio = cluster.fluvio()
    produce(fluvio, "c-async", range(20), key="k")

    async def main():
        got = [r async for r in fluvio.consumer_with_config(config("c-async", "as1", AUTO, partition=None))]
        assert sorted(int(r.value_string()) for r in got) == list(range(20))
        async with await fluvio.async_consumer_with_config(
                config("c-async", partition=1, continuous=True, start=Offset.end())) as tail:
            waiter = asyncio.ensure_future(tail.__anext__())
            await asyncio.sleep(0.1)
            assert not waiter.done()
            await asyncio.to_thread(produce, fluvio, "c-async", ["late"], "k")
            record = await asyncio.wait_for(waiter, 5)
        assert record.value_string() == "late"
        legacy = await fluvio.partition_consumer("c-async", 0).async_stream_with_config(
            Offset.beginning(), ConsumerConfig().disable_continuous())
        return [r async for r in legacy]

    legacy = asyncio.run(main())
    assert [r.offset() for r in legacy] == list(range(len(legacy)))
    assert sum(stored(fluvio, "as1", "c-async").values()) + 2 == 20


def test_a_waiting_consumer_wakes_within_milliseconds(cluster):
    """Produce one record at a time (linger 0) to a consumer waiting at the end; measure receipt."""
    cluster.create_topic("c-wake")
    fluvio = cluster.fluvio()
    count, latencies_ms = 50, []
    stream = fluvio.consumer_with_config(config("c-wake", continuous=True, start=Offset.end()))

    def consume():
        for record in stream:
            if record.value_string() == "warm-up":           # the producer's first send opens its connection
                continue
            latencies_ms.append((time.time_ns() - int(record.value_string())) / 1e6)
            if len(latencies_ms) == count:
                return
    reader = threading.Thread(target=consume)
    reader.start()
    with fluvio.topic_producer_with_config("c-wake", TopicProducerConfigBuilder().linger(0).build()) as producer:
        producer.send(None, "warm-up").wait()
        time.sleep(0.1)
        for _ in range(count):
            producer.send(None, str(time.time_ns()))
            time.sleep(0.02)                               # the consumer is idle and waiting each time
    reader.join(10)
    stream.close()
    assert len(latencies_ms) == count
    p50, worst = statistics.median(latencies_ms), max(latencies_ms)
    print(f"wake-up latency over {count} records: p50 {p50:.2f} ms, max {worst:.2f} ms")
    assert worst < 200, latencies_ms


def test_bad_input_changes_nothing(cluster):
    cluster.create_topic("c-bad")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-bad", range(3))
    with fluvio.consumer_with_config(config("c-bad", "kept", AUTO)) as s:
        list(s)
    before = [vars_of(o) for o in fluvio.consumer_offsets()]
    with pytest.raises(ConsumerOffsetNotFound, match="'ghost'"):
        fluvio.delete_consumer_offset("ghost", "c-bad", 0)
    with pytest.raises(PartitionNotFound):
        fluvio.delete_consumer_offset("kept", "c-bad", 9)
    with pytest.raises(TopicNotFound, match="Topic not found: c-missing"):
        fluvio.delete_consumer_offset("kept", "c-missing", 0, missing_topic_ok=False)
    assert fluvio.delete_consumer_offset("kept", "c-missing", 0) == []     # Fluvio accepts it
    with pytest.raises(InvalidArgument):
        Offset.absolute(-1)
    with pytest.raises(PartitionNotFound):
        fluvio.consumer_with_config(config("c-bad", "kept", AUTO, partition=4))
    with pytest.raises(TopicNotFound):
        fluvio.consumer_with_config(config("c-missing", "kept", AUTO))
    plain = fluvio.consumer_with_config(config("c-bad"))
    with pytest.raises(InvalidArgument, match="disabled"):
        plain.offset_commit()
    plain.close()
    assert [vars_of(o) for o in fluvio.consumer_offsets()] == before
    deleted = fluvio.delete_consumer_offset("kept", "c-bad", 0)
    assert [(o.consumer_id, o.topic, o.partition, o.offset) for o in deleted] == [("kept", "c-bad", 0, 2)]


def test_deleting_a_topic_forgets_its_offsets(cluster):
    cluster.create_topic("c-gone")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-gone", range(2))
    with fluvio.consumer_with_config(config("c-gone", "g1", AUTO)) as s:
        list(s)
    assert stored(fluvio, "g1", "c-gone") == {0: 1}
    with cluster.admin() as admin:
        admin.delete_topic("c-gone")
    assert stored(fluvio, "g1", "c-gone") == {}


def test_closing_the_fluvio_handle_flushes_auto_consumers(cluster):
    cluster.create_topic("c-handle")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-handle", range(3))
    stream = fluvio.consumer_with_config(config("c-handle", "h1", AUTO))
    next(stream), next(stream)
    fluvio.close()
    assert stored(cluster.fluvio(), "h1", "c-handle") == {0: 1}


def vars_of(o):
    return (o.consumer_id, o.topic, o.partition, o.offset, o.modified_time)


def test_large_fetches_read_every_way_agree(cluster):
    # 1 MiB answers (read straight into their own buffer), start and end inside batches, and
    # next(), for, next_batch() and a second iterator mixed on one stream.
    cluster.create_topic("c-large")
    fluvio = cluster.fluvio()
    n = 30_000
    with fluvio.topic_producer_with_config("c-large", TopicProducerConfigBuilder().batch_size(16 * 1024).linger(5)
                                           .build()) as producer:
        producer.send_all((None, b"%06d" % i + bytes(94)) for i in range(n))
        producer.flush()
    cfg = ConsumerConfig().disable_continuous().max_bytes(1 << 20)
    assert [r.offset() for r in fluvio.partition_consumer("c-large", 0).stream_with_config(Offset.beginning(), cfg)] \
        == list(range(n))
    stream = fluvio.partition_consumer("c-large", 0).stream_with_config(Offset.absolute(1234), cfg)
    got, loop = [next(stream)], iter(stream)
    while len(got) < 20_000:
        got += [next(loop), next(stream)]
        if len(got) % 3001 < 2:
            got += stream.next_batch()
    got += list(loop)
    assert [r.offset() for r in got] == list(range(1234, n))
    assert all(r.value()[:6] == b"%06d" % r.offset() and r.partition() == 0 for r in got)
    with fluvio._consumer_with_config(config("c-large", start=Offset.absolute(777)), end_offset=25_001) as s:
        assert [r.offset() for r in s] == list(range(777, 25_002))


def _lags(fluvio, consumer, topic):
    return {o.partition: o.lag for o in fluvio.consumer_offsets() if (o.consumer_id, o.topic) == (consumer, topic)}


def _eventually(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_consumer_offsets_carry_lag(cluster):
    """lag = HW - (stored offset + 1): 20 produced, 7 seen -> 13; 5 more -> 18; all seen -> 0."""
    cluster.create_topic("c-lag")
    fluvio = cluster.fluvio()
    produce(fluvio, "c-lag", range(20))
    stream = fluvio.consumer_with_config(config("c-lag", "lg", MANUAL))
    assert values(next(stream) for _ in range(7)) == [str(i) for i in range(7)]
    stream.offset_commit()
    stream.offset_flush()
    assert _lags(fluvio, "lg", "c-lag") == {0: 13}, [(o.offset, o.lag) for o in fluvio.consumer_offsets()]
    (row,) = [o for o in fluvio.consumer_offsets() if o.consumer_id == "lg"]
    assert (row.offset, row.lag) == (6, 13) and "lag=13" in repr(row)
    produce(fluvio, "c-lag", range(5))
    assert _eventually(lambda: _lags(fluvio, "lg", "c-lag") == {0: 18}), _lags(fluvio, "lg", "c-lag")
    stream.close()
    with fluvio.consumer_with_config(config("c-lag", "lg", AUTO)) as rest:    # resumes after offset 6
        assert len(list(rest)) == 18
    assert _lags(fluvio, "lg", "c-lag") == {0: 0}
