"""SharedTable and TableReader over real /dev/shm objects (always unlinked afterwards)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import textwrap

import posix_ipc
import pytest

from rillet.ipc.errors import ClusterAlreadyRunning, ClusterNotRunning, Closed, MetadataTableError, SharedMemoryRefused
from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, SpuRow, SpuStatus, TableLayout
from rillet.ipc.shm import SharedTable, TableReader, unlink_if_exists

PREFIX = f"rillet-test-{os.getpid()}-"
LAYOUT = TableLayout(max_spus=4, max_partitions=16)
_serial = itertools.count()


def _ours() -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(PREFIX))


@pytest.fixture(scope="session", autouse=True)
def no_test_shm_left_behind():
    yield
    left = _ours()
    for entry in left:
        unlink_if_exists("/" + entry)
    assert not left, f"shared-memory objects left behind: {left}"


@pytest.fixture
def name():
    shm_name = f"/{PREFIX}{next(_serial)}"
    try:
        yield shm_name
    finally:
        unlink_if_exists(shm_name)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _precreate(name: str, mode: int, content: bytes = b"") -> None:
    old = os.umask(0)
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=max(len(content), 1))
    finally:
        os.umask(old)
    with open(f"/dev/shm/{name.lstrip('/')}", "r+b") as f:
        f.write(content)
    shm.close_fd()


READER = textwrap.dedent("""
    import json, sys
    from rillet.ipc.shm import TableReader
    with TableReader.open(sys.argv[1]) as reader:
        snap = reader.snapshot()
        print(json.dumps({
            "generation": reader.generation(), "sc_pid": snap.sc_pid,
            "spus": [[s.spu_id, s.pid, s.status.label] for s in snap.spus],
            "partitions": [[p.topic, p.partition, p.leader, list(p.replicas), p.status.label, p.leader_epoch]
                           for p in snap.partitions],
        }))
""")


def test_round_trip_to_a_spawned_reader_process(name):
    with SharedTable.create(name, LAYOUT, os.getpid()) as table:
        table.write([SpuRow(5001, 11, SpuStatus.ONLINE)],
                    [PartitionRow("orders", 0, 5001, 1, PartitionStatus.ONLINE, (5001,), (5001,))])
        generation = table.write([SpuRow(5001, 11, SpuStatus.ONLINE)],
                                 [PartitionRow("orders", 0, 5001, 2, PartitionStatus.ONLINE, (5001,), (5001,))])
        out = subprocess.run([sys.executable, "-c", READER, name], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen == {"generation": generation, "sc_pid": os.getpid(), "spus": [[5001, 11, "Online"]],
                        "partitions": [["orders", 0, 5001, [5001], "Online", 2]]}
        assert table.snapshot().generation == generation == 2
    assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")    # __exit__ unlinked it


def test_object_is_created_with_mode_0600(name):
    old = os.umask(0)                                            # a careless umask changes nothing
    try:
        table = SharedTable.create(name, LAYOUT, os.getpid())
    finally:
        os.umask(old)
    try:
        st = os.stat(f"/dev/shm/{name.lstrip('/')}")
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert st.st_size == LAYOUT.size
    finally:
        table.close()
        table.unlink()


def test_live_owner_means_cluster_already_running(name):
    with SharedTable.create(name, LAYOUT, os.getpid()) as table:
        table.write([], [])
        with pytest.raises(ClusterAlreadyRunning, match=name):
            SharedTable.create(name, LAYOUT, os.getpid())
        assert table.snapshot().generation == 1                  # the live table is untouched


def test_stale_object_of_a_dead_sc_is_replaced(name):
    stale = SharedTable.create(name, LAYOUT, _dead_pid())
    stale.write([SpuRow(1, 1, SpuStatus.ONLINE)], [])
    stale._map[16:24] = (7).to_bytes(8, "little")                # it even died mid-write
    stale.close()
    with SharedTable.create(name, LAYOUT, os.getpid()) as table:
        snap = table.snapshot()
        assert (snap.generation, snap.sc_pid, snap.spus) == (0, os.getpid(), ())


def test_uninitialised_leftover_is_replaced(name):
    _precreate(name, 0o600)                                      # creator died before sizing it
    with SharedTable.create(name, LAYOUT, os.getpid()) as table:
        assert table.snapshot().generation == 0


def test_world_writable_object_is_refused(name):
    _precreate(name, 0o666)
    with pytest.raises(SharedMemoryRefused) as info:
        SharedTable.create(name, LAYOUT, os.getpid())
    message = str(info.value)
    assert name in message and f"owner uid {os.geteuid()}" in message and "mode 0666" in message
    with pytest.raises(SharedMemoryRefused, match="mode 0666"):
        TableReader.open(name)
    assert os.path.exists(f"/dev/shm/{name.lstrip('/')}")        # refused, not removed


def test_reader_of_a_missing_name(name):
    with pytest.raises(ClusterNotRunning) as info:
        TableReader.open(name)
    assert str(info.value) == f"no metadata table {name}: is the cluster running?"


def test_reader_of_an_uninitialised_object(name):
    _precreate(name, 0o600, bytes(4096))
    with pytest.raises(ClusterNotRunning, match="not initialised"):
        TableReader.open(name)


def test_reader_is_read_only_and_sees_new_generations(name):
    with SharedTable.create(name, LAYOUT, os.getpid()) as table, TableReader.open(name) as reader:
        assert reader.generation() == 0
        table.write([], [PartitionRow("t", 0, 1, 1, PartitionStatus.ONLINE, (1,), (1,))])
        assert reader.generation() == 1
        assert reader.snapshot().partition("t", 0).leader == 1
        with pytest.raises(TypeError):
            reader._map[0:1] = b"x"


def test_close_and_unlink_are_idempotent(name):
    table = SharedTable.create(name, LAYOUT, os.getpid())
    table.close()
    table.close()
    with pytest.raises(Closed):
        table.write([], [])
    table.unlink()
    table.unlink()
    assert not unlink_if_exists(name)


def _rows(leader: int) -> tuple[list[SpuRow], list[PartitionRow]]:
    return ([SpuRow(5001, 11, SpuStatus.ONLINE)],
            [PartitionRow("t", 0, leader, 1, PartitionStatus.ONLINE, (5001,), (5001,))])


def test_a_restarted_writer_takes_the_table_over_and_readers_keep_their_mapping(name):
    old = SharedTable.create(name, LAYOUT, _dead_pid())
    old.write(*_rows(5001))
    old.close()                                            # the writer dies; the object stays
    with TableReader.open(name) as reader:
        before = reader.snapshot()
        new = SharedTable.attach(name, LAYOUT, os.getpid())
        new.write(*_rows(5002))
        after = reader.snapshot()                          # the same mapping sees the new writer
        assert after.generation == before.generation + 1 and after.sc_pid == os.getpid()
        assert after.partition("t", 0).leader == 5002
        new.write(*_rows(5003))
        assert reader.snapshot().sc_pid == os.getpid()
        new.close()


def test_taking_over_a_table_left_mid_write_completes_it(name):
    from rillet.ipc.metadata_table import SEQ_OFFSET
    from rillet.ipc.errors import MetadataTableBusy
    old = SharedTable.create(name, LAYOUT, _dead_pid())
    old.write(*_rows(5001))
    old._mapping()[SEQ_OFFSET] |= 1                        # killed between "odd" and "even"
    old.close()
    with TableReader.open(name) as reader:
        with pytest.raises(MetadataTableBusy):
            reader.snapshot(max_retries=3)
        new = SharedTable.attach(name, LAYOUT, os.getpid())
        new.write(*_rows(5002))
        assert reader.snapshot().partition("t", 0).leader == 5002
        new.close()


@pytest.mark.parametrize("what", ["missing", "other layout", "foreign mode"])
def test_a_table_that_cannot_be_taken_over_says_why(name, what):
    if what == "missing":
        with pytest.raises(ClusterNotRunning):
            SharedTable.attach(name, LAYOUT, os.getpid())
        return
    if what == "other layout":
        SharedTable.create(name, TableLayout(max_spus=2, max_partitions=8), _dead_pid()).close()
        with pytest.raises(MetadataTableError, match="bytes"):
            SharedTable.attach(name, LAYOUT, os.getpid())
        return
    _precreate(name, 0o644, b"\0" * LAYOUT.size)
    with pytest.raises(SharedMemoryRefused):
        SharedTable.attach(name, LAYOUT, os.getpid())
