"""Issue 10's remaining damage gaps, with real SPU processes: segments sealed between scrub
passes are checked at once, and copies set aside as damaged are bounded."""

from __future__ import annotations

import time

import pytest

from rillet import ConsumerConfig, Isolation, Offset, RecordsLost, TopicProducerConfigBuilder
from rillet.ipc.records import HEADER_SIZE, iter_batches
from rillet.testing import LocalCluster


def produce(cluster, topic: str, count: int, start: int = 0) -> None:
    config = TopicProducerConfigBuilder().isolation(Isolation.ReadCommitted).linger(0).batch_size(512).build()
    with cluster.fluvio().topic_producer_with_config(topic, config) as producer:
        for i in range(start, start + count):
            producer.send(None, f"record-{i:05d}-" + "x" * 40)
        producer.flush()


def partition(cluster, topic: str):
    with cluster.admin() as admin:
        return admin.list_partitions([topic])[0]


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)
    return value


def test_a_segment_sealed_after_the_first_pass_is_scrubbed_without_waiting_an_interval(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:          # the interval: the default hour
        cluster.create_topic("t", segment_size=4096)
        produce(cluster, "t", 100)                                 # several segments, sealed after the first pass
        directory = cluster.paths.replica_dir(5001, "t", 0)
        active = max(directory.glob("*.log"))
        data = active.read_bytes()
        pos, header = next(iter_batches(memoryview(data)))
        with open(active, "r+b") as f:                             # a bit rots in a batch already written...
            f.seek(pos + HEADER_SIZE + 2)
            f.write(bytes([data[pos + HEADER_SIZE + 2] ^ 0x04]))
        produce(cluster, "t", 100, start=100)                      # ...and its segment is sealed
        assert active.name != max(directory.glob("*.log")).name
        issue = wait_for(lambda: partition(cluster, "t").problems, "the scrub's report", timeout=10)[0]
        assert issue.kind == "damaged" and f"offsets {header.base_offset} to" in issue.cause, issue


def test_only_the_newest_damaged_copy_is_kept_and_it_goes_with_the_replica(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=2, segment_size=4096)
        produce(cluster, "t", 200)
        wait_for(lambda: len(partition(cluster, "t").in_sync) == 2, "two in-sync copies")
        follower = ({5001, 5002} - {partition(cluster, "t").leader}).pop()
        cluster.stop()
        data_dir = cluster.paths.spu_data_dir(follower)
        older = data_dir / "t-0.damaged-1000"                       # set aside by an earlier failure
        older.mkdir()
        (older / "00000000000000000000.log").write_bytes(b"old evidence")
        path = cluster.paths.replica_dir(follower, "t", 0) / "00000000000000000000.log"
        data = bytearray(path.read_bytes())
        pos, _header = list(iter_batches(memoryview(data)))[-1]
        data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")     # a sealed segment that cannot be opened
        path.write_bytes(bytes(data))
        cluster.start()
        wait_for(lambda: not partition(cluster, "t").problems and len(partition(cluster, "t").in_sync) == 2,
                 "the follower copy fetched again")
        kept = list(data_dir.glob("t-0.damaged-*"))
        assert len(kept) == 1 and kept[0] != older, kept
        assert (kept[0] / "00000000000000000000.log").read_bytes() == bytes(data)
        with cluster.admin() as admin:
            admin.delete_topic("t")
        wait_for(lambda: not list(data_dir.glob("t-0*")), "the replica and its set-aside copy deleted")


def flip_in_a_sealed_segment(cluster, spu: int, topic: str, after: int = 1) -> tuple[int, int]:
    """Flip a bit in the records block of a batch in the middle of the first sealed segment
    starting at ``after`` or later, in a running SPU's copy (the page cache its map shares);
    return that batch's offsets."""
    directory = cluster.paths.replica_dir(spu, topic, 0)
    sealed = sorted(directory.glob("*.log"))[:-1]
    path = next(p for p in sealed if int(p.name[:20]) >= after)
    data = path.read_bytes()
    batches = list(iter_batches(memoryview(data)))
    pos, header = batches[len(batches) // 2]
    with open(path, "r+b") as f:
        f.seek(pos + HEADER_SIZE + 3)
        f.write(bytes([data[pos + HEADER_SIZE + 3] ^ 0x20]))
    return header.base_offset, header.base_offset + header.last_offset_delta


@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct-reads", "socket"])
def test_a_reader_meeting_damage_first_reads_the_whole_copy_instead_of_losing_records(tmp_path, monkeypatch, direct):
    """Issue 10 gap c: RF=3, a bit flips in the leader's sealed segment after its scrub passed.
    The first consumer to meet it gets every record (from the whole copy), not RecordsLost."""
    monkeypatch.setenv("RILLET_DIRECT_READS", direct)
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=3, segment_size=4096)
        produce(cluster, "t", 300)
        wait_for(lambda: len(partition(cluster, "t").in_sync) == 3, "three in-sync copies")
        time.sleep(0.5)                                             # every sealed segment scrubbed
        before = partition(cluster, "t")
        first, last = flip_in_a_sealed_segment(cluster, before.leader, "t")
        config = ConsumerConfig().disable_continuous()
        stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), config)
        got = [r.value_string()[:12] for r in stream]
        assert got == [f"record-{i:05d}" for i in range(300)]
        after = partition(cluster, "t")
        assert after.leader != before.leader and after.leader_epoch > before.leader_epoch
        log = cluster.paths.spu_log_file(before.leader).read_text()
        assert f"a reader found offset {first} bad" in log and f"offsets {first} to {last} are damaged" in log


def test_at_one_copy_the_reader_still_gets_records_lost_with_the_leaders_range(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("t", segment_size=4096)
        produce(cluster, "t", 300)
        time.sleep(0.5)
        first, last = flip_in_a_sealed_segment(cluster, 5001, "t")
        config = ConsumerConfig().disable_continuous()
        stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), config)
        got = []
        with pytest.raises(RecordsLost) as caught:
            for record in stream:
                got.append(record.offset())
        assert got == list(range(first)) and (caught.value.first_offset, caught.value.last_offset) == (first, last)
        # The leader knows now, not at its next scrub (an hour away): its report reaches the SC
        # just after the reader's answer, so a loaded machine may need a moment.
        issue = wait_for(lambda: partition(cluster, "t").problems, "the damage reported", timeout=2.0)[0]
        assert issue.kind == "damaged" and f"offsets {first} to {last}" in issue.cause


def test_a_follower_of_a_damaged_leader_with_no_whole_copy_stops_and_reports(tmp_path):
    """Issue 10 gap b: the follower was away while the leader took the records; the leader's copy
    of some of them is damaged. The follower reports itself stalled instead of fetching forever."""
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=2, segment_size=4096, min_in_sync_replicas=1)
        produce(cluster, "t", 50)
        wait_for(lambda: len(partition(cluster, "t").in_sync) == 2, "two in-sync copies")
        leader = partition(cluster, "t").leader
        follower = ({5001, 5002} - {leader}).pop()
        cluster.kill_spu(follower)
        wait_for(lambda: partition(cluster, "t").in_sync == [leader], "the follower out of the in-sync set")
        produce(cluster, "t", 250, start=50)                       # only the leader has these
        time.sleep(0.5)                                            # and its scrub has passed them
        first, last = flip_in_a_sealed_segment(cluster, leader, "t", after=60)
        cluster.start_spu(follower)
        issues = wait_for(lambda: [i for i in partition(cluster, "t").problems if i.kind == "stalled"],
                          "the follower reported stalled")
        assert issues[0].spu == follower and f"offsets {first} to {last}" in issues[0].cause, issues
        log = cluster.paths.spu_log_file(follower).read_text()
        assert "follower stalled" in log
        time.sleep(1.0)                                            # it is not fetching the bad batch again
        assert log.count("is bad") == cluster.paths.spu_log_file(follower).read_text().count("is bad") <= 1


@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct-reads", "socket"])
def test_one_copy_with_a_damaged_segment_header_serves_up_to_it_then_records_lost(tmp_path, monkeypatch, direct):
    """Issue 10 gap a: RF=1 and a batch header in a sealed segment damaged (its length points past
    the file): the partition comes Online, readers get every record before the damage, then
    RecordsLost naming the offsets; skip_damaged reads on."""
    monkeypatch.setenv("RILLET_DIRECT_READS", direct)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("t", segment_size=4096)
        produce(cluster, "t", 300)
        cluster.stop()
        directory = cluster.paths.replica_dir(5001, "t", 0)
        path = sorted(directory.glob("*.log"))[1]
        next_base = int(sorted(directory.glob("*.log"))[2].name[:20])
        data = bytearray(path.read_bytes())
        pos, header = list(iter_batches(memoryview(data)))[-1]
        data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")        # its length: past the file's end
        path.write_bytes(bytes(data))
        cluster.start()
        first, last = header.base_offset, next_base - 1
        p = wait_for(lambda: (p := partition(cluster, "t")).status == "Online" and p.problems and p, "Online, damage shown")
        assert [(i.spu, i.kind) for i in p.problems] == [(5001, "damaged")]
        assert f"offsets {first} to {last} are damaged" in p.problems[0].cause
        config = ConsumerConfig().disable_continuous()
        got = []
        with pytest.raises(RecordsLost) as caught:
            for record in cluster.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), config):
                got.append(record.offset())
        assert got == list(range(first))
        assert (caught.value.first_offset, caught.value.last_offset) == (first, last)
        stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(
            Offset.beginning(), ConsumerConfig().disable_continuous().skip_damaged())
        assert [r.offset() for r in stream] == [*range(first), *range(last + 1, 300)]


def test_the_process_serving_an_spus_socket_is_known_as_that_spu_and_an_impostor_is_not(tmp_path):
    """Issue 10 gap f: when the metadata table lags an SPU's restart (its new pid not yet published
    by an SC), the leader accepts it as follower because it serves SPU N's own socket; a client
    claiming to be SPU N still gets FollowerRefused."""
    import os
    from rillet.ipc import messages as m
    from rillet.ipc.connection import Connection
    from rillet.ipc.errors import FollowerRefused
    from rillet.ipc.unix_socket import listener_pid
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=2)
        p = wait_for(lambda: (p := partition(cluster, "t")) and len(p.in_sync) == 2 and p, "two in-sync copies")
        follower = ({5001, 5002} - {p.leader}).pop()
        assert listener_pid(str(cluster.paths.spu_socket(follower))) == cluster.spu_pid(follower) != os.getpid()
        assert listener_pid(str(tmp_path / "nothing.sock")) is None
        conn = Connection(cluster.paths.spu_socket(p.leader))
        try:
            with pytest.raises(FollowerRefused, match=f"may not fetch as follower SPU {follower}"):
                conn.call(m.FollowerFetch(conn.next_cid(), "t", 0, follower, p.leader_epoch, 0, 1024, 0))
        finally:
            conn.close()


def test_a_flood_of_connections_that_never_greet_makes_room_for_a_client(tmp_path, monkeypatch):
    """ATTACK's backlog flood held every slot for the 10 s Hello deadline: near the limit, a
    connection that has not greeted within a second is closed for a new one."""
    import socket
    monkeypatch.setenv("RILLET_MAX_CONNECTIONS", "8")
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("t")
        flood = []
        for _ in range(8 + 64):                                   # every slot, the reserved ones too
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(cluster.paths.spu_socket(5001)))
            flood.append(s)
        time.sleep(1.2)
        try:
            with cluster.fluvio().topic_producer("t") as producer:
                assert producer.send(None, b"made room").wait(timeout=10).offset() == 0
        finally:
            for s in flood:
                s.close()


def test_a_leader_copy_with_a_damaged_segment_header_hands_over_and_is_fetched_again(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=2, segment_size=4096)
        produce(cluster, "t", 300)
        before = wait_for(lambda: (p := partition(cluster, "t")) and len(p.in_sync) == 2 and p, "two in-sync copies")
        cluster.stop()
        path = sorted(cluster.paths.replica_dir(before.leader, "t", 0).glob("*.log"))[1]
        data = bytearray(path.read_bytes())
        pos, _header = list(iter_batches(memoryview(data)))[-1]
        data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")
        path.write_bytes(bytes(data))
        cluster.start()
        seen = []

        def whole_again():
            p = partition(cluster, "t")
            seen.extend((i.spu, i.kind) for i in p.problems if (i.spu, i.kind) not in seen)
            return not p.problems and len(p.in_sync) == 2 and p.status == "Online" and p

        after = wait_for(whole_again, "the damaged leader copy handed over and fetched again", timeout=30)
        assert after.leader != before.leader, (before, after, seen)
        log = cluster.paths.spu_log_file(before.leader).read_text()
        # Opened as leader, it served up to the damage until the SC handed over; or, when the SC
        # had already elected the other copy by the time it opened, it was set aside at once.
        assert ("are damaged" in log or "cannot be opened" in log) and "rebuilt from leader" in log
        config = ConsumerConfig().disable_continuous()
        stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(Offset.beginning(), config)
        assert [r.value_string()[:12] for r in stream] == [f"record-{i:05d}" for i in range(300)]
