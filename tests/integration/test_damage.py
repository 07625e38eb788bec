"""A flipped byte in a sealed segment (issue 10, item 2), with real SPU processes.

The byte is flipped while the cluster is stopped, as a failing disk or an unclean stop
would leave it; the scrub's first pass after the start finds it. With three copies the
damaged one loses leadership and is repaired from a whole one; with one copy readers get
every record before the damage, then RecordsLost naming the offsets, and step past it
only when asked to.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from rillet import ConsumerConfig, Isolation, Offset, RecordsLost, TopicProducerConfigBuilder
from rillet.ipc.records import HEADER_SIZE, iter_batches, validate_batch
from rillet.testing import LocalCluster
from tests.conftest import run_cli

RECORDS = 400


def produce(cluster, count: int) -> None:
    config = TopicProducerConfigBuilder().isolation(Isolation.ReadCommitted).linger(0).batch_size(512).build()
    with cluster.fluvio().topic_producer_with_config("t", config) as producer:
        for i in range(count):
            producer.send(None, f"record-{i:05d}-" + "x" * 40)
        producer.flush()


def partition(cluster):
    with cluster.admin() as admin:
        return admin.list_partitions(["t"])[0]


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)
    return value


def flip_a_byte(cluster, spu: int, rng: random.Random) -> tuple[int, int]:
    """Flip one bit in the records block of a batch in the middle of the first segment; return
    that batch's first and last offsets."""
    path = cluster.paths.replica_dir(spu, "t", 0) / "00000000000000000000.log"
    data = bytearray(path.read_bytes())
    batches = list(iter_batches(memoryview(data)))
    pos, header = batches[len(batches) // 2]
    at = pos + HEADER_SIZE + rng.randrange(header.total_size - HEADER_SIZE)
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return header.base_offset, header.base_offset + header.last_offset_delta


def values(cluster, *, skip=False, offset=0) -> tuple[list[str], Exception | None]:
    config = ConsumerConfig().disable_continuous()
    if skip:
        config = config.skip_damaged()
    stream = cluster.fluvio().partition_consumer("t", 0).stream_with_config(Offset.absolute(offset), config)
    got, error = [], None
    try:
        for record in stream:
            got.append(record.value_string()[:12])
    except RecordsLost as exc:
        error = exc
    return got, error


def expected(offsets) -> list[str]:
    return [f"record-{i:05d}" for i in offsets]


def test_a_damaged_leader_copy_hands_over_and_is_repaired_from_a_whole_one(tmp_path):
    rng = random.Random(7)
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=3, segment_size=4096)
        produce(cluster, RECORDS)
        wait_for(lambda: len(partition(cluster).in_sync) == 3, "three in-sync copies")
        before = partition(cluster)
        cluster.stop()
        flip_a_byte(cluster, before.leader, rng)
        cluster.start()
        seen = []

        def repaired():
            p = partition(cluster)
            seen.extend((i.spu, i.kind) for i in p.problems if (i.spu, i.kind) not in seen)
            return seen and not p.problems and len(p.in_sync) == 3 and p.status == "Online" and p

        after = wait_for(repaired, "the damaged copy reported and repaired")
        assert {s for s, _kind in seen} == {before.leader}, seen     # damaged, then rebuilding (or both gone by)
        assert after.leader != before.leader and after.leader_epoch > before.leader_epoch
        log = cluster.paths.spu_log_file(before.leader).read_text()
        assert "are damaged (batch CRC mismatch" in log and "rebuilt from leader" in log
        # Every copy is whole again, byte for byte valid, and the log reads in full.
        for spu in (5001, 5002, 5003):
            for segment in sorted(cluster.paths.replica_dir(spu, "t", 0).glob("*.log")):
                view = memoryview(segment.read_bytes())
                for pos, _h in iter_batches(view):
                    validate_batch(view, pos)
        got, error = values(cluster)
        assert error is None and got == expected(range(RECORDS))


@pytest.fixture
def damaged_rf1(tmp_path):
    """One copy, a bit flipped in a sealed batch; yields (cluster, first, last) of the lost offsets."""
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("t", segment_size=4096)
        produce(cluster, RECORDS)
        cluster.stop()
        first, last = flip_a_byte(cluster, 5001, random.Random(11))
        cluster.start()
        yield cluster, first, last
    assert not cluster.leftovers()


def test_one_copy_reads_up_to_the_damage_then_a_typed_error(damaged_rf1):
    cluster, first, last = damaged_rf1
    assert 0 < first <= last < RECORDS
    got, error = values(cluster)                # the consumer may find it before the scrub does
    assert got == expected(range(first))
    assert isinstance(error, RecordsLost) and (error.topic, error.partition) == ("t", 0)
    assert (error.first_offset, error.last_offset) == (first, last)
    assert f"t/0: offsets {first} to {last} are lost" in str(error)
    issue = wait_for(lambda: partition(cluster).problems, "the scrub's report")[0]
    assert (issue.spu, issue.kind) == (5001, "damaged") and f"offsets {first} to {last}" in issue.cause
    got, error = values(cluster)                # the SPU now serves up to it and answers RecordsLost
    assert got == expected(range(first)) and (error.first_offset, error.last_offset) == (first, last)
    got, error = values(cluster, skip=True)
    assert error is None and got == expected([*range(first), *range(last + 1, RECORDS)])
    got, error = values(cluster, offset=last + 1)
    assert error is None and got == expected(range(last + 1, RECORDS))


def test_the_cli_fails_at_the_damage_or_steps_past_it_when_told(damaged_rf1):
    cluster, first, last = damaged_rf1
    wait_for(lambda: partition(cluster).problems, "the scrub's report")
    listed = json.loads(run_cli(cluster, "partition", "list", "-O", "json").stdout)
    assert [(i["spu"], i["kind"]) for i in listed[0]["problems"]] == [(5001, "damaged")]
    table = run_cli(cluster, "partition", "list").stdout.decode().splitlines()
    assert "PROBLEMS" in table[0] and f"5001 damaged: offsets {first} to {last} are damaged" in table[1]
    done = run_cli(cluster, "consume", "t", "-B", "-d")
    printed = [line[:12] for line in done.stdout.decode().splitlines()]
    assert done.returncode == 1 and printed == expected(range(first))
    error = done.stderr.decode().strip().splitlines()[-1]
    assert error.startswith(f"error: t/0: offsets {first} to {last} are lost:"), done.stderr
    done = run_cli(cluster, "consume", "t", "-B", "-d", "--skip-damaged")
    printed = [line[:12] for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0 and printed == expected([*range(first), *range(last + 1, RECORDS)])
    assert f"warning: skipped damaged records: t/0: offsets {first} to {last} are lost" in done.stderr.decode()


def test_a_follower_copy_that_cannot_be_opened_is_set_aside_and_fetched_again(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("t", replication=2, segment_size=4096)
        produce(cluster, RECORDS)
        wait_for(lambda: len(partition(cluster).in_sync) == 2, "two in-sync copies")
        before = partition(cluster)
        follower = ({5001, 5002} - {before.leader}).pop()
        cluster.stop()
        path = cluster.paths.replica_dir(follower, "t", 0) / "00000000000000000000.log"
        data = bytearray(path.read_bytes())
        pos, _header = list(iter_batches(memoryview(data)))[-1]
        data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")     # its length: past the file's end
        path.write_bytes(bytes(data))
        cluster.start()
        seen = []

        def whole_again():
            p = partition(cluster)
            seen.extend((i.spu, i.kind) for i in p.problems if (i.spu, i.kind) not in seen)
            return not p.problems and len(p.in_sync) == 2

        wait_for(whole_again, "the follower copy fetched again")
        kept = list(cluster.paths.spu_data_dir(follower).glob("t-0.damaged-*"))
        assert len(kept) == 1 and (kept[0] / "00000000000000000000.log").read_bytes() == bytes(data)
        assert "its files are kept in" in cluster.paths.spu_log_file(follower).read_text()
        cluster.kill_spu(before.leader)
        wait_for(lambda: partition(cluster).leader == follower and partition(cluster).status == "Online", "failover")
        got, error = values(cluster)
        assert error is None and got == expected(range(RECORDS))
