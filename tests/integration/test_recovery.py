"""What survives: a full cluster restart, and an SPU killed mid-life with a torn tail."""

from __future__ import annotations

import os
import signal
import time

import psutil

from rillet import ConsumerConfig, Offset, TopicProducerConfigBuilder
from rillet.ipc.records import BatchBuilder, iter_batches
from rillet.testing import LocalCluster

SPU = 5001


def read_values(fluvio, topic, partition=0):
    config = ConsumerConfig()
    config.disable_continuous()
    stream = fluvio.partition_consumer(topic, partition).stream_with_config(Offset.beginning(), config)
    return [(r.offset(), r.value()) for r in stream]


def test_cluster_stop_and_start_serves_every_record(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("durable", partitions=2)
        with cluster.fluvio().topic_producer("durable") as producer:
            for i in range(500):
                producer.send(f"k{i}", f"v{i}")
        before = {p: read_values(cluster.fluvio(), "durable", p) for p in (0, 1)}
        cluster.stop()
        assert not cluster.leftovers()
        cluster.start()
        after = {p: read_values(cluster.fluvio(), "durable", p) for p in (0, 1)}
        assert after == before
        assert sum(len(v) for v in after.values()) == 500
        with cluster.fluvio().topic_producer("durable") as producer:
            meta = producer.send("k0", "after-restart").wait(timeout=10)
        assert meta.offset() == len(before[meta.partition_id()])


def _used_length(segment: bytes) -> int:
    end = 0
    for pos, header in iter_batches(segment):
        end = pos + header.total_size
    return end


def test_killed_spu_restarts_and_cuts_a_torn_tail(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("torn")
        fluvio = cluster.fluvio()
        config = TopicProducerConfigBuilder().linger(0).build()
        with fluvio.topic_producer_with_config("torn", config) as producer:
            for i in range(20):
                producer.send(None, f"v{i}")
        pid = cluster.kill_spu(SPU, signal.SIGKILL)
        psutil.Process(pid).wait(5) if psutil.pid_exists(pid) else None

        # Leave what a write cut short by SIGKILL leaves: half a batch after the last good one.
        replica = cluster.paths.replica_dir(SPU, "torn", 0)
        segment = replica / "00000000000000000000.log"
        data = segment.read_bytes()
        end = _used_length(data)
        builder = BatchBuilder()
        for i in range(5):
            builder.append(None, b"lost-%d" % i, 0)
        torn = builder.build()[: 40]
        with open(segment, "r+b") as f:
            f.seek(end)
            f.write(torn)

        cluster.start_spu(SPU)
        values = read_values(cluster.fluvio(), "torn")
        assert values == [(i, f"v{i}".encode()) for i in range(20)]
        cut_files = [p for p in replica.iterdir() if ".cut" in p.name]
        # The side file keeps the cut bytes up to the last non-zero one: zeros after it are
        # indistinguishable from the segment's preallocated space.
        assert len(cut_files) == 1 and cut_files[0].read_bytes() == torn.rstrip(b"\0")
        log_text = cluster.paths.spu_log_file(SPU).read_text()
        assert "cut" in log_text.lower() and str(end) in log_text

        with cluster.fluvio().topic_producer_with_config("torn", config) as producer:
            meta = producer.send(None, "after").wait(timeout=10)
        assert meta.offset() == 20


def test_a_damaged_replica_does_not_take_the_spu_down(tmp_path):
    import subprocess
    import sys
    from rillet.broker import launcher
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("healthy")
        cluster.create_topic("damaged", segment_size=1024)
        config = TopicProducerConfigBuilder().linger(0).build()
        with cluster.fluvio().topic_producer_with_config("damaged", config) as producer:
            for i in range(10):
                producer.send(None, b"x" * 300).wait(timeout=10)      # several sealed segments
        with cluster.fluvio().topic_producer("healthy") as producer:
            producer.send(None, "fine").wait(timeout=10)
        cluster.stop()
        sealed = sorted(cluster.paths.replica_dir(SPU, "damaged", 0).glob("*.log"))[0]
        sealed.write_bytes(sealed.read_bytes()[:-10])      # a sealed segment cut short: the log is damaged
        # Start the SC directly: `cluster start` would (rightly) refuse to call a cluster ready.
        sc = subprocess.Popen([sys.executable, "-m", "rillet.broker.sc", "--cluster", cluster.name,
                               "--home", str(cluster.home)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if launcher.cluster_status(cluster.paths).partitions_online == 2:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            with cluster.admin() as admin:
                partitions = {p.topic: p for p in admin.list_partitions([])}
            # The only copy serves what it holds up to the damage (issue 10): Online, the damage shown.
            assert {t: p.status for t, p in partitions.items()} == {"healthy": "Online", "damaged": "Online"}
            assert [i.kind for i in partitions["damaged"].problems] == ["damaged"]
            assert read_values(cluster.fluvio(), "healthy") == [(0, b"fine")]
            assert "are damaged" in cluster.paths.spu_log_file(SPU).read_text()
        finally:
            launcher.stop_cluster(cluster.paths)
            sc.wait(10)
