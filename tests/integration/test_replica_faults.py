"""A replica an SPU cannot create or keep is reported, not waited on (issue 10, items 6 and 7).

The full-disk test runs a cluster whose RILLET_HOME is a 2 MiB tmpfs (it needs root to
mount one, and is skipped otherwise): a topic whose segments cannot be preallocated fails
at once with the SPU's cause, and leaves nothing behind, so a smaller one can be made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from rillet.ipc.errors import StorageError
from rillet.testing import LocalCluster
from tests.conftest import run_cli


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs mounted at tmp_path/disk, unmounted after the test (also on failure)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_topic_create_on_a_full_disk_fails_at_once_with_the_cause(tiny_disk):
    with LocalCluster(spus=1, home=tiny_disk) as cluster:
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            cluster.create_topic("big", segment_size=64 * 1024 * 1024)
        assert time.monotonic() - started < 5                      # not the 30 s wait for Online
        message = str(caught.value)
        assert "topic 'big' not created: SPU 5001 cannot create replica big/0" in message
        assert "cannot preallocate 67108864 bytes" in message and "ENOSPC" in message

        done = run_cli(cluster, "topic", "create", "big2", "--segment-size", "64MiB")
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error: topic 'big2' not created: SPU 5001 cannot create replica big2/0")
        assert "ENOSPC" in lines[0]

        # Undone, not half made: the names are free again and a topic that fits is created.
        with cluster.admin() as admin:
            assert admin.list_topics(["big"]) == [] and admin.list_topics(["big2"]) == []
        assert not list((cluster.paths.data_dir / "spu-5001").glob("big*"))
        cluster.create_topic("big", segment_size=64 * 1024)
        with cluster.admin() as admin:
            assert [p.status for p in admin.list_partitions(["big"])] == ["Online"]
    assert not cluster.leftovers()


# --- item 6: replica damage is loud, and repaired from the leader ---

@pytest.fixture
def cluster2(tmp_path):
    """Two SPUs and a topic "t" with two replicas holding 300 committed records."""
    with LocalCluster(spus=2, home=tmp_path / "home") as cluster:
        cluster.create_topic("t", replication=2)
        produce(cluster, 300)
        wait_for(lambda: partition(cluster).hw == 300 and len(partition(cluster).in_sync) == 2, "both in sync")
        yield cluster
    assert not cluster.leftovers()


def produce(cluster, count: int, start: int = 0) -> None:
    from rillet import Isolation, TopicProducerConfigBuilder
    config = TopicProducerConfigBuilder().isolation(Isolation.ReadCommitted).linger(0).build()
    with cluster.fluvio().topic_producer_with_config("t", config) as producer:
        producer.send_all([(None, f"r{i}") for i in range(start, start + count)])
        producer.flush()


def partition(cluster, topic="t"):
    with cluster.admin() as admin:
        return admin.list_partitions([topic])[0]


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def every_value(cluster) -> list[str]:
    from rillet import ConsumerConfig, Offset
    leo = partition(cluster).leo
    stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(
        Offset.beginning(), ConsumerConfig().disable_continuous())
    return [r.value_string() for r in stream][:leo]


def wait_rebuilt(cluster, spu: int, seen: list) -> None:
    """Watch `partition list` until SPU ``spu``'s copy was reported and then is whole again."""
    def whole_again():
        p = partition(cluster)
        seen.extend(i for i in p.problems if i not in seen)
        return seen and not p.problems and len(p.in_sync) == 2
    wait_for(whole_again, f"SPU {spu}'s copy reported and rebuilt")
    assert {i.spu for i in seen} == {spu}, seen


def test_a_deleted_follower_directory_is_reported_and_rebuilt_from_the_leader(cluster2):
    leader = partition(cluster2).leader
    follower = ({5001, 5002} - {leader}).pop()
    directory = cluster2.paths.replica_dir(follower, "t", 0)
    shutil.rmtree(directory)
    seen: list = []
    wait_rebuilt(cluster2, follower, seen)
    assert seen[0].kind in ("missing", "rebuilding") and "is gone" in seen[0].cause
    assert (directory / "00000000000000000000.log").exists()
    log = cluster2.paths.spu_log_file(follower).read_text()
    assert " ERROR t/0: replica damaged: replica directory" in log and "rebuilt from leader" in log
    # The rebuilt copy holds every record: kill the leader, the follower leads and serves them all.
    cluster2.kill_spu(leader)
    wait_for(lambda: partition(cluster2).leader == follower and partition(cluster2).status == "Online", "failover")
    assert every_value(cluster2) == [f"r{i}" for i in range(300)]


def test_a_deleted_leader_directory_hands_leadership_to_a_whole_copy(cluster2):
    before = partition(cluster2)
    shutil.rmtree(cluster2.paths.replica_dir(before.leader, "t", 0))
    seen: list = []
    wait_rebuilt(cluster2, before.leader, seen)
    after = partition(cluster2)
    assert after.leader != before.leader and after.leader_epoch > before.leader_epoch
    assert "elected (leader copy damaged)" in cluster2.paths.sc_log_file.read_text()
    produce(cluster2, 10, start=300)
    wait_for(lambda: partition(cluster2).leo == 310, "the new records reported")   # reports are coalesced (50 ms)
    assert every_value(cluster2) == [f"r{i}" for i in range(310)]


def test_only_the_real_spu_may_fetch_as_a_follower(cluster2):
    from rillet.ipc import messages as m
    from rillet.ipc.connection import Connection
    from rillet.ipc.errors import FollowerRefused
    p = partition(cluster2)
    follower = ({5001, 5002} - {p.leader}).pop()
    conn = Connection(cluster2.paths.spu_socket(p.leader))
    try:
        with pytest.raises(FollowerRefused, match=f"may not fetch as follower SPU {follower}"):
            conn.call(m.FollowerFetch(conn.next_cid(), "t", 0, follower, p.leader_epoch, 300, 1024, 0))
    finally:
        conn.close()
    time.sleep(0.5)           # an impostor's disconnect once dropped the real follower from the ISR
    assert sorted(partition(cluster2).in_sync) == [5001, 5002]
