"""Clients across `cluster stop` + `cluster start` (a new SC, a new shared-memory
table): following consumers resume exactly where they were, producers ride through
within their retry policy, a stream that does not follow fails with one error."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rillet import (
    ClusterNotRunning, ConsumerConfig, ConsumerConfigExtBuilder, Fluvio, Isolation, Offset,
    OffsetManagementStrategy, TopicProducerConfigBuilder,
)
from rillet import _consumer
from rillet.broker import launcher
from rillet.ipc.errors import ClusterUnavailable
from rillet.testing import LocalCluster

WAIT_S = 20.0


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as c:
        c.create_topic("t", partitions=2)
        yield c
    assert not c.leftovers()


def connect(cluster) -> Fluvio:
    """A handle of our own: LocalCluster.stop() closes the ones cluster.fluvio() made."""
    return Fluvio.connect(cluster.name, home=str(cluster.home))


def produce(cluster, values, partition=0):
    with connect(cluster) as fluvio:
        config = TopicProducerConfigBuilder().linger(0).set_specific_partitioner(partition).build()
        with fluvio.topic_producer_with_config("t", config) as producer:
            for v in values:
                producer.send(None, v)


class Collector:
    """Records a reader hands out, from a thread; ``wait_for(n)`` until n arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, str]] = []
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def add(self, record) -> None:
        with self.cond:
            self.seen.append((record.partition(), record.offset(), record.value_string()))
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.error = exc
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT_S) -> list:
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen) >= n or self.error is not None, timeout)
            assert self.error is None, f"reader failed: {self.error!r}"
            assert len(self.seen) >= n, f"only {self.seen} after {timeout} s"
            return list(self.seen)


def follow(collector: Collector, records) -> None:
    try:
        for record in records:
            collector.add(record)
    except BaseException as exc:
        collector.fail(exc)


def follow_async(collector: Collector, fluvio: Fluvio, stop: threading.Event) -> None:
    async def main():
        config = (ConsumerConfigExtBuilder("t").partition(0).offset_start(Offset.beginning())
                  .offset_strategy(OffsetManagementStrategy.NONE).build())
        async with await fluvio.async_consumer_with_config(config) as stream:
            async for record in stream:
                collector.add(record)
                if stop.is_set():
                    return
    try:
        asyncio.run(main())
    except BaseException as exc:
        collector.fail(exc)


def test_following_consumers_resume_exactly_after_stop_and_start(cluster):
    produce(cluster, ["a0", "a1", "a2"])
    produce(cluster, ["b0"], partition=1)
    fluvio = connect(cluster)
    stop = threading.Event()
    try:
        partition_stream = fluvio.partition_consumer("t", 0).stream(Offset.beginning())
        merged = fluvio.multi_partition_consumer("t").stream(Offset.beginning())
        iterator = fluvio.consumer_with_config(ConsumerConfigExtBuilder("t").offset_start(Offset.beginning()).build())
        readers = {"stream": Collector(), "merged": Collector(), "iterator": Collector(), "async": Collector()}
        threads = [threading.Thread(target=follow, args=(readers["stream"], partition_stream), daemon=True),
                   threading.Thread(target=follow, args=(readers["merged"], merged), daemon=True),
                   threading.Thread(target=follow, args=(readers["iterator"], iterator), daemon=True),
                   threading.Thread(target=follow_async, args=(readers["async"], fluvio, stop), daemon=True)]
        for t in threads:
            t.start()
        before = {"stream": 3, "merged": 4, "iterator": 4, "async": 3}
        for name, n in before.items():
            readers[name].wait_for(n)

        cluster.stop()
        time.sleep(0.5)              # readers now find no table: they wait
        cluster.start()
        produce(cluster, ["a3", "a4"])
        produce(cluster, ["b1"], partition=1)

        for name, n in before.items():
            seen = readers[name].wait_for(n + (2 if name in ("stream", "async") else 3))
            by_partition = {}
            for p, offset, value in seen:
                by_partition.setdefault(p, []).append((offset, value))
            # every committed offset exactly once, in order, across the restart
            assert by_partition[0] == [(i, f"a{i}") for i in range(5)], (name, seen)
            if name not in ("stream", "async"):
                assert by_partition[1] == [(0, "b0"), (1, "b1")], (name, seen)
        stop.set()
        produce(cluster, ["a5"])     # wakes the async reader so it can return
    finally:
        stop.set()
        for reader in (partition_stream, merged, iterator):
            reader.close()
        fluvio.close()
        for t in threads:
            t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_producer_rides_through_a_restart_within_its_retry_policy(cluster):
    fluvio = connect(cluster)
    config = (TopicProducerConfigBuilder().linger(0).set_specific_partitioner(0)
              .retry_policy(max_retries=100, initial_delay_ms=100, max_delay_ms=500, timeout_ms=30_000,
                            strategy="fixed").build())
    try:
        producer = fluvio.topic_producer_with_config("t", config)
        before = [producer.send(None, f"r{i}") for i in range(3)]
        producer.flush()
        cluster.stop()
        during = [producer.send(None, f"r{i}") for i in range(3, 6)]   # queued while the cluster is away
        time.sleep(1.0)
        cluster.start()
        producer.flush(timeout=WAIT_S)
        offsets = [out.wait().offset() for out in before + during]
        assert offsets == list(range(6))
        assert producer.statistics().retries > 0
        producer.close()
    finally:
        fluvio.close()
    config = ConsumerConfig().disable_continuous()
    with connect(cluster) as reader:
        records = list(reader.partition_consumer("t", 0).stream_with_config(Offset.beginning(), config))
    assert [(r.offset(), r.value_string()) for r in records] == [(i, f"r{i}") for i in range(6)]


def test_stream_that_does_not_follow_fails_once_its_window_is_over(cluster, monkeypatch):
    monkeypatch.setattr(_consumer, "FAILOVER_WINDOW_S", 1.5)
    # The socket path: a direct reader would hand out v1 and v2 from the files (they are
    # committed, and readable with the cluster stopped) and end without needing the window.
    monkeypatch.setenv("RILLET_DIRECT_READS", "0")
    for i in range(3):
        produce(cluster, [f"v{i}"])          # three batches: the stream takes one per fetch
    fluvio = connect(cluster)
    try:
        config = ConsumerConfig().disable_continuous().max_bytes(1)
        stream = fluvio.partition_consumer("t", 0).stream_with_config(Offset.beginning(), config)
        assert next(stream).value_string() == "v0"
        cluster.stop()
        started = time.monotonic()
        got = []
        with pytest.raises(ClusterNotRunning) as failed:
            for record in stream:            # a fetch sent before the stop may still answer
                got.append(record.value_string())
        assert got in ([], ["v1"]), got
        elapsed = time.monotonic() - started
        assert 1.4 <= elapsed < 3.0, elapsed
        assert isinstance(failed.value, ClusterUnavailable)
        message = str(failed.value)
        assert "t/0 unreachable" in message and "not running" in message and "1.5 s" in message, message
    finally:
        fluvio.close()
    cluster.start()                           # the fixture's teardown expects a running cluster


def test_cli_consumer_follows_across_stop_and_start(cluster):
    produce(cluster, ["c0", "c1"])
    proc = subprocess.Popen([sys.executable, "-m", "rillet.tools.cli", "consume", "t", "-p", "0", "-B", "-c", "tail"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env, text=True)
    lines = Collector()

    def read():
        for line in proc.stdout:
            with lines.cond:
                lines.seen.append(line.rstrip("\n"))
                lines.cond.notify_all()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        lines.wait_for(2)
        cluster.stop()
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        cluster.start()
        produce(cluster, ["c2"])
        assert lines.wait_for(3) == ["c0", "c1", "c2"]
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        reader.join(5)
    assert "Traceback" not in err, err
    # the outage is said once, not once per retry
    assert err.count("waiting for it to come back") == 1, err
    with connect(cluster) as fluvio:           # SIGTERM flushed the position to the new SC
        assert [(o.consumer_id, o.offset) for o in fluvio.consumer_offsets()] == [("tail", 2)]


def test_cli_consume_d_against_a_stopped_cluster_fails_with_one_line(cluster):
    produce(cluster, ["x"])
    cluster.stop()
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "consume", "t", "-p", "0", "-B", "-d"],
                                capture_output=True, env=cluster.env, timeout=60, text=True)
        elapsed = time.monotonic() - started
    finally:
        cluster.start()
    assert result.returncode == 1
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "not running" in err, err
    assert elapsed < _consumer.FAILOVER_WINDOW_S, elapsed


def test_a_merged_reader_keeps_reading_while_one_partition_has_no_leader(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", partitions=2)          # replication 1: one partition per SPU
        with cluster.admin() as admin:
            leaders = {p.partition: p.leader for p in admin.list_partitions(["t"])}
        assert len(set(leaders.values())) == 2, leaders
        fluvio = connect(cluster)
        merged = fluvio.multi_partition_consumer("t").stream(Offset.beginning())
        seen = Collector()
        reader = threading.Thread(target=follow, args=(seen, merged), daemon=True)
        reader.start()
        try:
            cluster.kill_spu(leaders[0])                  # partition 0 cannot fail over
            time.sleep(0.3)
            started = time.monotonic()
            produce(cluster, ["p1-a"], partition=1)
            assert seen.wait_for(1) == [(1, 0, "p1-a")]
            assert time.monotonic() - started < 2.5       # not stuck behind partition 0's outage
            cluster.start_spu(leaders[0])
            produce(cluster, ["p0-a"], partition=0)
            assert sorted(seen.wait_for(2)) == [(0, 0, "p0-a"), (1, 0, "p1-a")]
        finally:
            merged.close()
            fluvio.close()
            reader.join(5)
        assert not reader.is_alive()
    assert not cluster.leftovers()


def test_a_following_consumer_rides_through_the_sigkill_of_the_sc(cluster):
    """The SC dies without unlinking its table: the object stays, frozen, until an SC
    (`cluster start`, or one that restarts itself) replaces it with a new one."""
    produce(cluster, ["k0"])
    fluvio = connect(cluster)
    stream = fluvio.partition_consumer("t", 0).stream(Offset.beginning())
    seen = Collector()
    reader = threading.Thread(target=follow, args=(seen, stream), daemon=True)
    reader.start()
    try:
        seen.wait_for(1)
        sc = launcher.sc_pid(cluster.paths)
        os.kill(sc, signal.SIGKILL)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and launcher.sc_pid(cluster.paths) in (None, sc):
            time.sleep(0.05)
        if launcher.sc_pid(cluster.paths) in (None, sc):    # nothing brought the SC back: start it
            cluster.start()
        produce(cluster, ["k1"])
        assert [(o, v) for _p, o, v in seen.wait_for(2)] == [(0, "k0"), (1, "k1")]
    finally:
        stream.close()
        fluvio.close()
        reader.join(5)
    assert not reader.is_alive()
