"""Replication and failover with real SPU processes: 3 SPUs, replication factor 3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rillet import (
    ConsumerConfig, DeliverySemantic, Isolation, NotLeader, Offset, TopicProducerConfigBuilder,
)
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.record_decoding import iter_records
from rillet.ipc.records import BatchBuilder, iter_batches
from rillet.testing import LocalCluster
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
UNCOMMITTED = 10         # records acked by a leader whose followers are stopped


@pytest.fixture
def cluster3(tmp_path):
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        cluster.create_topic("t", partitions=1, replication=3)
        yield cluster


def partition(cluster, topic="t", p=0):
    with cluster.admin() as admin:
        return [x for x in admin.list_partitions([topic]) if x.partition == p][0]


def read_committed(cluster, topic="t", p=0):
    config = ConsumerConfig()
    config.disable_continuous()
    config.isolation(Isolation.ReadCommitted)
    stream = cluster.fluvio().partition_consumer(topic, p).stream_with_config(Offset.beginning(), config)
    return [(r.offset(), r.value()) for r in stream]


def committed_producer(cluster, topic="t"):
    config = (TopicProducerConfigBuilder().linger(0).isolation(Isolation.ReadCommitted)
              .delivery_semantic(DeliverySemantic.AtLeastOnce).timeout(2000)
              .retry_policy(max_retries=20, initial_delay_ms=20, max_delay_ms=200, timeout_ms=30_000,
                            strategy="fixed").build())
    return cluster.fluvio().topic_producer_with_config(topic, config)


def spu_kill(cluster, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "spu-kill"), *args], capture_output=True,
                          env=cluster.env, timeout=60)


def replica_values(cluster, spu, topic="t", p=0):
    """The valid batch chain of a replica's first segment, read straight from the file."""
    data = (cluster.paths.replica_dir(spu, topic, p) / "00000000000000000000.log").read_bytes()
    end = 0
    for pos, header in iter_batches(data):
        end = pos + header.total_size
    return [(r.offset, r.value) for r in iter_records(data[:end])]


def test_drill_kills_the_leader_and_a_follower_takes_over(cluster3):
    with committed_producer(cluster3) as producer:
        for i in range(50):
            producer.send(None, f"before-{i}").wait(timeout=10)
        old = partition(cluster3).leader
        result = spu_kill(cluster3, "--leader", "t/0", "--wait")
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert f"killed SPU {old}" in out and "t/0: new leader SPU" in out and "ms after the kill" in out
        now = partition(cluster3)
        assert now.leader != old and now.status == "Online"
        for i in range(50):
            producer.send(None, f"after-{i}").wait(timeout=10)
    values = [v for _o, v in read_committed(cluster3)]
    assert values == [f"before-{i}".encode() for i in range(50)] + [f"after-{i}".encode() for i in range(50)]


def test_drill_reports_bad_targets(cluster3):
    r = spu_kill(cluster3, "--spu", "9999")
    assert r.returncode == 1 and "no such SPU 9999" in r.stderr.decode()
    r = spu_kill(cluster3, "--leader", "nope/0")
    assert r.returncode == 1 and "no partition nope/0" in r.stderr.decode()
    r = spu_kill(cluster3, "--spu", "5001", "--signal", "HUP")
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1


def test_no_acknowledged_record_is_lost_across_three_leader_kills(cluster3):
    acked: dict[bytes, int] = {}
    stop = threading.Event()
    errors = []

    def produce():
        with committed_producer(cluster3) as producer:
            i = 0
            while not stop.is_set():
                value = f"v{i}".encode()
                try:
                    acked[value] = producer.send(None, value).wait(timeout=30).offset()
                except Exception as exc:          # counted, and must not happen with retries
                    errors.append(exc)
                i += 1

    worker = threading.Thread(target=produce)
    worker.start()
    try:
        for _ in range(3):
            time.sleep(0.4)
            r = spu_kill(cluster3, "--leader", "t/0", "--wait", "--restart-after", "300ms")
            assert r.returncode == 0, r.stderr.decode()
        time.sleep(0.4)
    finally:
        stop.set()
        worker.join(60)
    assert not errors, errors[:3]
    assert len(acked) > 20
    log = read_committed(cluster3)
    offsets = [o for o, _v in log]
    assert offsets == list(range(len(log)))                     # offsets never repeat or skip
    at_offset = dict(log)
    missing = [v for v, o in acked.items() if at_offset.get(o) != v]
    assert not missing, f"{len(missing)} acknowledged records not at their acknowledged offset, e.g. {missing[:3]}"
    # At-least-once: a batch written but not acknowledged before a kill is sent again, so a
    # value may appear twice; every copy is a whole record, never a different record at an offset.
    values = [v for _o, v in log]
    assert set(values) >= set(acked)


def test_a_killed_follower_catches_up_and_rejoins(cluster3):
    with committed_producer(cluster3) as producer:
        for i in range(20):
            producer.send(None, f"a{i}").wait(timeout=10)
        follower = [s for s in partition(cluster3).replicas if s != partition(cluster3).leader][0]
        cluster3.kill_spu(follower)
        wait_for(lambda: follower not in partition(cluster3).in_sync, what="ISR shrink")
        for i in range(200):
            producer.send(None, f"b{i}").wait(timeout=10)          # min in-sync 2 still met
        cluster3.start_spu(follower)
        wait_for(lambda: follower in partition(cluster3).in_sync, what="ISR rejoin")
        producer.send(None, "last").wait(timeout=10)
    leader = partition(cluster3).leader
    wait_for(lambda: replica_values(cluster3, follower) == replica_values(cluster3, leader), what="identical replicas")
    assert len(replica_values(cluster3, follower)) == 221


def test_a_paused_old_leader_refuses_writes_when_it_resumes(cluster3):
    with committed_producer(cluster3) as producer:
        producer.send(None, "first").wait(timeout=10)
    old = partition(cluster3).leader
    r = spu_kill(cluster3, "--spu", str(old), "--signal", "STOP", "--wait")
    assert r.returncode == 0, r.stderr.decode()
    try:
        sock_path = cluster3.paths.spu_socket(old)
        result = {}

        def stale_write():
            try:
                c = Connection(sock_path, timeout_s=20)
                b = BatchBuilder()
                b.append(None, b"stale-write", 0)
                c.call(m.ProduceRequest(c.next_cid(), "t", 0, m.ISOLATION_READ_UNCOMMITTED, 1000, memoryview(b.build())))
                result["outcome"] = "accepted"
            except Exception as exc:
                result["outcome"] = exc
        writer = threading.Thread(target=stale_write)
        writer.start()
        time.sleep(0.2)
    finally:
        os.kill(_pid_of(cluster3, old), signal.SIGCONT)
    writer.join(30)
    assert isinstance(result["outcome"], NotLeader), result
    with committed_producer(cluster3) as producer:
        producer.send(None, "second").wait(timeout=10)
    assert [v for _o, v in read_committed(cluster3)] == [b"first", b"second"]


def _pid_of(cluster, spu_id):
    from rillet.ipc.shm import TableReader
    with TableReader.open(cluster.paths.shm_name) as table:
        return table.snapshot().spu(spu_id).pid


def test_committed_readers_never_see_records_that_were_truncated(cluster3):
    with committed_producer(cluster3) as producer:
        for i in range(10):
            producer.send(None, f"c{i}").wait(timeout=10)
    p = partition(cluster3)
    leader, followers = p.leader, [s for s in p.replicas if s != p.leader]
    pids = {s: _pid_of(cluster3, s) for s in p.replicas}
    for f in followers:
        os.kill(pids[f], signal.SIGSTOP)
    try:
        fast = TopicProducerConfigBuilder().linger(0).delivery_semantic(DeliverySemantic.AtMostOnce).build()
        with cluster3.fluvio().topic_producer_with_config("t", fast) as producer:
            for i in range(UNCOMMITTED):
                producer.send(None, f"uncommitted-{i}").wait(timeout=5)   # only the leader has them
        seen_committed = read_committed(cluster3)
        os.kill(pids[leader], signal.SIGKILL)
    finally:
        for f in followers:
            os.kill(pids[f], signal.SIGCONT)
    assert [v for _o, v in seen_committed] == [f"c{i}".encode() for i in range(10)]
    wait_for(lambda: partition(cluster3).status == "Online" and partition(cluster3).leader != leader, what="new leader")
    with committed_producer(cluster3) as producer:
        for i in range(3):
            producer.send(None, f"d{i}").wait(timeout=10)
    cluster3.start_spu(leader)                                   # rejoins: truncates by epoch, then follows
    final = [v for _o, v in read_committed(cluster3)]
    # A stopped follower may still hold the answer to the fetch it had pending when it was
    # stopped (the first uncommitted record or the first few, appended before that answer went
    # out); the rest existed only on the old leader and must be gone from every replica.
    survivors = final[10:-3]
    assert final[:10] == [f"c{i}".encode() for i in range(10)]
    assert final[-3:] == [f"d{i}".encode() for i in range(3)]
    assert survivors == [f"uncommitted-{i}".encode() for i in range(len(survivors))]
    assert len(survivors) < UNCOMMITTED, "nothing was truncated: the test proved nothing"
    new_leader = partition(cluster3).leader
    wait_for(lambda: replica_values(cluster3, leader) == replica_values(cluster3, new_leader),
             what="the old leader to converge on the new leader's log")
    truncated = {f"uncommitted-{i}".encode() for i in range(len(survivors), UNCOMMITTED)}
    assert not truncated & {v for _o, v in replica_values(cluster3, leader)}


def test_a_continuous_consumer_rides_through_a_leader_kill(cluster3):
    with committed_producer(cluster3) as producer:
        for i in range(100):
            producer.send(None, f"r{i}").wait(timeout=10)
        config = ConsumerConfig()
        config.isolation(Isolation.ReadCommitted)
        stream = cluster3.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), config)
        seen = []
        reader = threading.Thread(target=lambda: seen.extend((r.offset(), r.value()) for _, r in zip(range(300), stream)))
        reader.start()
        wait_for(lambda: len(seen) >= 100, what="the first 100 records")
        assert spu_kill(cluster3, "--leader", "t/0", "--wait").returncode == 0
        for i in range(100, 300):
            producer.send(None, f"r{i}").wait(timeout=10)
        reader.join(30)
        stream.close()
    assert [o for o, _v in seen] == list(range(300))            # no offset skipped or delivered twice
    assert [v for _o, v in seen] == [f"r{i}".encode() for i in range(300)]


def test_statuses_when_no_replica_is_left(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("solo", partitions=1, replication=1)
        leader = partition(cluster, "solo").leader
        cluster.kill_spu(leader)
        wait_for(lambda: partition(cluster, "solo").status == "LeaderOffline", what="LeaderOffline")
        with cluster.admin() as admin:
            assert {s.id: s.status for s in admin.list_spus()}[leader] == "Offline"
        r = spu_kill(cluster, "--leader", "solo/0")
        assert r.returncode == 1 and "no online leader" in r.stderr.decode()
        cluster.start_spu(leader)
        wait_for(lambda: partition(cluster, "solo").status == "Online", what="Online again")


def test_isolation_levels_differ_while_followers_lag(cluster3):
    with committed_producer(cluster3) as producer:
        for i in range(5):
            producer.send(None, f"c{i}").wait(timeout=10)
    p = partition(cluster3)
    followers = [s for s in p.replicas if s != p.leader]
    pids = [_pid_of(cluster3, s) for s in followers]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        fast = TopicProducerConfigBuilder().linger(0).delivery_semantic(DeliverySemantic.AtMostOnce).build()
        with cluster3.fluvio().topic_producer_with_config("t", fast) as producer:
            for i in range(3):
                producer.send(None, f"u{i}").wait(timeout=5)        # acked by the leader alone
        uncommitted = ConsumerConfig()
        uncommitted.disable_continuous()
        uncommitted.isolation(Isolation.ReadUncommitted)
        stream = cluster3.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), uncommitted)
        everything = [r.value() for r in stream]
        committed = [v for _o, v in read_committed(cluster3)]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert committed == [f"c{i}".encode() for i in range(5)]
    assert everything == committed + [f"u{i}".encode() for i in range(3)]
    wait_for(lambda: len(read_committed(cluster3)) == 8, what="the followers to catch up and commit")


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="needs the checkout's .venv (as CI makes)")
def test_the_drill_runs_as_tools_spu_kill_from_outside_the_venv(cluster3):
    import shutil
    env = {k: v for k, v in cluster3.env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    python = shutil.which("python3", path=env["PATH"])
    r = subprocess.run([python, str(REPO / "tools" / "spu-kill"), "--leader", "t/0", "--wait"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert "new leader SPU" in r.stdout.decode()
