"""Direct reads: consumers reading the leader's segment files, bounded by its published offsets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psutil
import pytest

from rillet import (
    Compression, ConsumerConfig, ConsumerConfigExtBuilder, InvalidArgument, Isolation, Offset,
    OffsetManagementStrategy, OffsetOutOfRange, TopicProducerConfigBuilder,
)
from rillet._direct import DirectPath, direct_reads_enabled
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.record_decoding import iter_records
from rillet.ipc.records import iter_batches
from rillet.ipc.shm import unlink_if_exists
from rillet.testing import LocalCluster
from rillet.tools.bench_idle import cpu_ns

from .test_failover import committed_producer, partition, spu_kill, wait_for

SEGMENT = 4096
CODECS = [Compression.None_, Compression.Gzip, Compression.Snappy, Compression.Lz4, Compression.Zstd]


@pytest.fixture
def direct(monkeypatch):
    """Set the switch for streams opened in this process."""
    return lambda on: monkeypatch.setenv("RILLET_DIRECT_READS", "1" if on else "0")


def stream(cluster, topic, start=Offset.beginning(), *, continuous=False, committed=True, max_bytes=None, p=0):
    config = ConsumerConfig()
    if not continuous:
        config.disable_continuous()
    if max_bytes is not None:
        config.max_bytes(max_bytes)
    config.isolation(Isolation.ReadCommitted if committed else Isolation.ReadUncommitted)
    return cluster.fluvio().partition_consumer(topic, p).stream_with_config(start, config)


def fill_with_every_codec(cluster, topic, per_codec=60):
    for n, codec in enumerate(CODECS):
        config = TopicProducerConfigBuilder().batch_size(700).linger(1).compression(codec).build()
        with cluster.fluvio().topic_producer_with_config(topic, config) as producer:
            for i in range(per_codec):
                producer.send(None if i % 3 == 0 else f"k{i}", f"{codec.name}-{i}-" + "v" * (i * 7 % 90))
            producer.flush()
    return per_codec * len(CODECS)


def raw_socket(cluster, topic, committed, max_bytes=1000) -> bytes:
    out, offset = bytearray(), 0
    isolation = m.ISOLATION_READ_COMMITTED if committed else m.ISOLATION_READ_UNCOMMITTED
    with Connection(cluster.paths.spu_socket(5001)) as conn:
        while True:
            data = conn.call(m.FetchRequest(conn.next_cid(), topic, 0, offset, max_bytes, isolation, 0)).batches
            if not len(data):
                return bytes(out)
            out += data
            offset = max(h.next_offset for _p, h in iter_batches(data))


@contextmanager
def direct_path(cluster, topic):
    """A client and its DirectPath to partition 0 of ``topic``; both closed afterwards."""
    fluvio = cluster.fluvio()
    path = DirectPath.open(fluvio._meta, topic, 0, time.monotonic() + 10)
    assert path is not None
    try:
        yield fluvio, path
    finally:
        path.close()
        fluvio.close()


def raw_direct(cluster, topic, committed, max_bytes=1000) -> bytes:
    out, offset = bytearray(), 0
    with direct_path(cluster, topic) as (_fluvio, path):
        while True:
            data = path.read(offset, max_bytes, committed, time.monotonic() + 10)
            if not len(data):
                return bytes(out)
            out += data
            offset = max(h.next_offset for _p, h in iter_batches(data))


def test_direct_and_socket_reads_are_byte_identical(tmp_path, direct):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("mixed", segment_size=SEGMENT)
        total = fill_with_every_codec(cluster, "mixed")
        assert len([n for n in os.listdir(cluster.paths.replica_dir(5001, "mixed", 0)) if n.endswith(".log")]) >= 3
        for committed in (True, False):
            via_socket = raw_socket(cluster, "mixed", committed)
            assert via_socket == raw_direct(cluster, "mixed", committed)
            assert sum(h.record_count for _p, h in iter_batches(via_socket)) == total
        seen = {}
        for on in (True, False):
            direct(on)
            for max_bytes in (1, 3000, 1 << 20):
                s = stream(cluster, "mixed", max_bytes=max_bytes)
                assert s.statistics()["direct"] is on
                records = [(r.offset(), r.key(), r.value(), r.timestamp(), r.partition()) for r in s]
                assert (s.statistics()["direct_reads"] > 0) is on
                seen[(on, max_bytes)] = records
        first = seen[(True, 1)]
        assert [o for o, *_ in first] == list(range(total))
        assert all(records == first for records in seen.values())
        for start in (Offset.absolute(123), Offset.from_end(7), Offset.from_beginning(250)):   # seeks into segments
            direct(True)
            got = [(r.offset(), r.value()) for r in stream(cluster, "mixed", start)]
            direct(False)
            assert got == [(r.offset(), r.value()) for r in stream(cluster, "mixed", start)] and got


def test_direct_reads_need_no_answer_from_the_spu(tmp_path, direct):
    """The SPU is stopped (SIGSTOP) while the consumer opens its stream and reads everything."""
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("quiet", segment_size=SEGMENT)
        total = fill_with_every_codec(cluster, "quiet", per_codec=20)
        fluvio = cluster.fluvio()
        pid = cluster.spu_pid(5001)
        os.kill(pid, signal.SIGSTOP)
        try:
            s = stream(cluster, "quiet")
            values = [r.value() for r in s]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert len(values) == total and s.statistics()["direct_reads"] > 0
        direct(False)
        assert values == [r.value() for r in stream(cluster, "quiet")]
        fluvio.close()


def test_a_waiting_reader_follows_segment_rolls(tmp_path, direct):
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("rolling", segment_size=1024)
        s = stream(cluster, "rolling", Offset.end(), continuous=True)
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(r.value() for _, r in zip(range(30), s)))
        reader.start()
        config = TopicProducerConfigBuilder().linger(0).build()
        with cluster.fluvio().topic_producer_with_config("rolling", config) as producer:
            for i in range(30):                               # ~4 records a segment: a roll every few
                producer.send(None, b"%02d" % i + b"r" * 200).wait(timeout=10)
                wait_for(lambda: len(seen) > i, timeout=10, what=f"record {i} at the reader")
        reader.join(10)
        s.close()
        assert [v[:2] for v in seen] == [b"%02d" % i for i in range(30)]
        assert s.statistics()["direct_reads"] >= 30
        assert len([n for n in os.listdir(cluster.paths.replica_dir(5001, "rolling", 0)) if n.endswith(".log")]) >= 5


def test_retention_deleting_the_segment_being_read(tmp_path, direct, monkeypatch):
    monkeypatch.setenv("RILLET_RETENTION_CHECK_S", "0.1")
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("trimmed", segment_size=1024, max_partition_size=4 * 1024)
        config = TopicProducerConfigBuilder().linger(0).build()
        with cluster.fluvio().topic_producer_with_config("trimmed", config) as producer:
            for i in range(8):
                producer.send(None, b"%03d" % i + b"x" * 200).wait(timeout=10)
            slow = stream(cluster, "trimmed", continuous=True, max_bytes=1)   # one batch per fetch
            first = slow.next_batch()
            assert [r.offset() for r in first] == [0]
            follower = stream(cluster, "trimmed", Offset.end(), continuous=True)   # keeps up with the producer
            kept = []
            reader = threading.Thread(target=lambda: kept.extend(r.offset() for _, r in zip(range(60), follower)))
            reader.start()
            for i in range(8, 68):
                producer.send(None, b"%03d" % i + b"x" * 200).wait(timeout=10)
            reader.join(15)
        wait_for(lambda: partition(cluster, "trimmed").log_start > 1, what="retention to delete segment 0")
        start = partition(cluster, "trimmed").log_start
        with pytest.raises(OffsetOutOfRange, match="valid offsets are|first available offset"):
            slow.next_batch()                                # its segment is gone: nothing below the log start
        slow.close()
        follower.close()
        assert kept == list(range(8, 68))                     # the reader ahead of retention lost nothing
        rest = [r.offset() for r in stream(cluster, "trimmed")]
        assert rest[0] >= start and rest == list(range(rest[0], 68))
        with pytest.raises(OffsetOutOfRange):
            stream(cluster, "trimmed", Offset.absolute(0))


def test_a_committed_direct_reader_rides_through_a_leader_kill(tmp_path, direct):
    direct(True)
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        cluster.create_topic("t", partitions=1, replication=3)
        with committed_producer(cluster) as producer:
            for i in range(100):
                producer.send(None, f"r{i}").wait(timeout=10)
            s = stream(cluster, "t", continuous=True)
            assert s.statistics()["direct"]
            seen = []
            reader = threading.Thread(target=lambda: seen.extend((r.offset(), r.value()) for _, r in zip(range(300), s)))
            reader.start()
            wait_for(lambda: len(seen) >= 100, what="the first 100 records")
            assert spu_kill(cluster, "--leader", "t/0", "--wait").returncode == 0
            for i in range(100, 300):
                producer.send(None, f"r{i}").wait(timeout=10)
            reader.join(30)
            stats = s.statistics()
            s.close()
        assert [o for o, _v in seen] == list(range(300))            # no offset skipped or delivered twice
        assert [v for _o, v in seen] == [f"r{i}".encode() for i in range(300)]
        assert stats["direct"], "the reader fell back to the socket"
    assert not cluster.leftovers()                                  # the killed SPU's table too


IDLE_READER = """
import sys
from rillet import Fluvio, Offset
fluvio = Fluvio.connect(sys.argv[1], home=sys.argv[2])
stream = fluvio.partition_consumer("idle", 0).stream(Offset.end())
print("direct" if stream.statistics()["direct"] else "socket", flush=True)
for record in stream:
    print(record.value().decode(), flush=True)
    break
"""


def test_an_idle_direct_reader_costs_almost_no_cpu(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("idle")
        env = {**os.environ, "RILLET_DIRECT_READS": "1"}
        proc = subprocess.Popen([sys.executable, "-c", IDLE_READER, cluster.name, str(cluster.home)],
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout.readline().strip() == "direct"
            time.sleep(0.5)
            before = cpu_ns(proc.pid)         # schedstat, exact: cpu_times' 10 ms ticks needed 5 s to tell 3%
            time.sleep(1.5)
            share = (cpu_ns(proc.pid) - before) / 1e9 / 1.5
            print(f"idle direct reader: {share:.2%} of a core")
            assert share < 0.03
            with cluster.fluvio().topic_producer("idle") as producer:
                producer.send(None, "wake up")
            assert proc.stdout.readline().strip() == "wake up"
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_direct_reader_follows_its_restarted_spu(tmp_path, direct):
    """RF=1: the same SPU leads again after a SIGKILL and restart, in a new positions object."""
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("solo")
        config = TopicProducerConfigBuilder().linger(0).build()
        with cluster.fluvio().topic_producer_with_config("solo", config) as producer:
            for i in range(10):
                producer.send(None, f"a{i}").wait(timeout=10)
        s = stream(cluster, "solo", continuous=True)
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(r.value() for _, r in zip(range(20), s)))
        reader.start()
        wait_for(lambda: len(seen) == 10, what="the first 10 records")
        old = cluster.kill_spu(5001)
        wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE,
                 what="the SPU to die")
        time.sleep(0.3)                                       # the SC notices the death first
        cluster.start_spu(5001)
        assert cluster.spu_pid(5001) != old
        with cluster.fluvio().topic_producer_with_config("solo", config) as producer:
            for i in range(10):
                producer.send(None, f"b{i}").wait(timeout=10)
        reader.join(15)
        stats = s.statistics()
        s.close()
        assert seen == [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]
        assert stats["direct"]


def test_a_merged_named_reader_waits_on_every_partition_at_once(tmp_path, direct):
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("merged", partitions=3)
        fluvio = cluster.fluvio()
        consumer = fluvio.consumer_with_config(
            ConsumerConfigExtBuilder("merged").offset_start(Offset.end()).offset_consumer("c1")
            .offset_strategy(OffsetManagementStrategy.AUTO).build())
        seen = []
        reader = threading.Thread(target=lambda: seen.extend((r.partition(), r.value()) for _, r in zip(range(30), consumer)))
        reader.start()
        config = TopicProducerConfigBuilder().linger(0).build()
        with fluvio.topic_producer_with_config("merged", config) as producer:
            for i in range(30):
                producer.send_to_partition(i % 3, None, f"p{i % 3}-{i}").wait(timeout=10)
        reader.join(15)
        assert all(s.statistics()["direct"] for s in consumer._merged._streams)   # opened at the first read
        consumer.close()
        assert len(seen) == 30
        for p in range(3):
            assert [v for q, v in seen if q == p] == [f"p{p}-{i}".encode() for i in range(p, 30, 3)]
        assert {(c.consumer_id, c.partition) for c in fluvio.consumer_offsets()} == {("c1", 0), ("c1", 1), ("c1", 2)}


def test_the_switch_reads_0_and_1_and_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("RILLET_DIRECT_READS", "0")
    assert direct_reads_enabled() is False and direct_reads_enabled(True) is True
    monkeypatch.setenv("RILLET_DIRECT_READS", "1")
    assert direct_reads_enabled() is True and direct_reads_enabled(False) is False
    monkeypatch.setenv("RILLET_DIRECT_READS", "maybe")
    with pytest.raises(InvalidArgument, match="RILLET_DIRECT_READS"):
        direct_reads_enabled()


def test_without_a_positions_table_streams_fall_back_to_the_socket(tmp_path, direct):
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("plain")
        total = fill_with_every_codec(cluster, "plain", per_codec=10)
        before = [r.value() for r in stream(cluster, "plain")]
        unlink_if_exists(cluster.paths.positions_shm_name(5001))      # as an SPU without direct reads
        s = stream(cluster, "plain")
        assert not s.statistics()["direct"]
        assert [r.value() for r in s] == before and len(before) == total


def test_every_waiting_reader_wakes_though_the_spu_wakes_only_a_few(tmp_path, direct, monkeypatch):
    """The SPU wakes RELAY_FANOUT sleepers per publish; woken readers relay to the rest."""
    import rillet._direct as direct_module
    monkeypatch.setattr(direct_module, "WAIT_SLICE_S", 5.0)      # no reader may get by on its timeout
    direct(True)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("fan")
        streams = [stream(cluster, "fan", Offset.end(), continuous=True) for _ in range(6)]
        got = [None] * len(streams)

        def read(i):
            next(streams[i])
            got[i] = time.monotonic()
        readers = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
        for t in readers:
            t.start()
        time.sleep(0.5)                                           # all asleep on the futex
        sent = time.monotonic()
        with cluster.fluvio().topic_producer("fan") as producer:
            producer.send(None, "one")
        for t in readers:
            t.join(10)
        for s in streams:
            s.close()
        assert all(t is not None for t in got)
        assert max(got) - sent < 2.0, [round(t - sent, 3) for t in got]


def test_a_publish_after_the_wake_value_was_taken_ends_the_sleep_at_once(cluster):
    """fetch takes the wake word's value before its read; a record published after that (here:
    between the read and the sleep) must end the sleep at once, not after the wait slice."""
    cluster.create_topic("prewake")
    with direct_path(cluster, "prewake") as (fluvio, path), fluvio.topic_producer("prewake") as producer:
        start = time.monotonic()
        assert not len(path.fetch(0, 1000, False, True))          # nothing yet: sleeps one slice
        assert time.monotonic() - start >= 0.05
        _table, _row, address, value = path._wake_value()
        assert not len(path.read(0, 1000, False, time.monotonic() + 5))
        producer.send(None, b"late")
        producer.flush()
        start = time.monotonic()
        path._sleep(address, value, 5.0)
        assert time.monotonic() - start < 0.05
        assert len(path.fetch(0, 1000, False, True))


def test_a_blocking_fetch_hands_out_what_was_published_during_its_sleep(cluster):
    """A reader at the end of the log: the fetch that slept reads again when a publish woke it, so
    the stream's layers above run once per record, not once for an empty step and once more."""
    cluster.create_topic("wokeread")
    with direct_path(cluster, "wokeread") as (fluvio, path), fluvio.topic_producer("wokeread") as producer:
        timer = threading.Timer(0.03, lambda: (producer.send(None, b"during"), producer.flush()))
        timer.start()
        start = time.monotonic()
        data = path.fetch(0, 1000, False, True)
        timer.join()
        assert time.monotonic() - start < 0.09       # woken by the publish, not the 100 ms slice
        assert [bytes(r.value) for r in iter_records(data)] == [b"during"]
