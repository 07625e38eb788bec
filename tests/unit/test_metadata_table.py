"""Metadata table layout: byte vectors at documented offsets, round trips, checks."""

from __future__ import annotations

import struct

import pytest

from rillet.ipc import metadata_table as mt
from rillet.ipc.errors import InvalidArgument, LayoutVersionMismatch, MetadataTableBusy, MetadataTableError
from rillet.ipc.metadata_table import (
    MAX_REPLICAS,
    PartitionRow,
    PartitionStatus,
    SpuRow,
    SpuStatus,
    TableLayout,
    init_table,
    read_generation,
    read_header,
    read_snapshot,
    write_snapshot,
)

LAYOUT = TableLayout(max_spus=4, max_partitions=8)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def i32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


def new_table(layout: TableLayout = LAYOUT, sc_pid: int = 4321) -> bytearray:
    buf = bytearray(layout.size)
    init_table(buf, layout, sc_pid)
    return buf


def row(topic="orders", partition=0, leader=1, **kw) -> PartitionRow:
    fields = dict(leader_epoch=3, status=PartitionStatus.ONLINE, replicas=(1, 2, 3), in_sync=(1, 2))
    fields.update(kw)
    return PartitionRow(topic, partition, leader, **fields)


def test_sizes():
    assert mt.HEADER_SIZE == 64
    assert mt.SPU_ROW_SIZE == 16
    assert mt.PARTITION_ROW_SIZE == 144
    assert TableLayout().size == 64 + 64 * 16 + 4096 * 144 == 590_912
    assert LAYOUT.partition_rows_offset == 64 + 4 * 16


def test_init_writes_the_documented_header_bytes():
    buf = new_table()
    assert buf[0:8] == b"RILLETMT"
    assert buf[8:12] == u32(2)                   # layout_version
    assert buf[12:16] == u32(64)                 # header_size
    assert buf[16:24] == u64(0)                  # seq
    assert buf[24:32] == u64(0)                  # generation
    assert buf[32:36] == u32(4321)               # sc_pid
    assert buf[36:40] == u32(4)                  # max_spus
    assert buf[40:44] == u32(8)                  # max_partitions
    assert buf[44:52] == u32(0) + u32(0)         # spu_count, partition_count
    assert buf[52:56] == u32(16) and buf[56:60] == u32(144)
    assert buf[60:] == bytes(len(buf) - 60)      # reserved and every row zero


def test_round_trip_with_row_bytes_at_documented_offsets():
    buf = new_table()
    spus = [SpuRow(5001, 777, SpuStatus.ONLINE), SpuRow(5002, 0, SpuStatus.OFFLINE)]
    partitions = [row("orders", 1, 5001, replicas=(5001, 5002), in_sync=(5001,)),
                  row("orders", 0, -1, status=PartitionStatus.LEADER_OFFLINE, replicas=(), in_sync=())]
    assert write_snapshot(buf, spus, partitions) == 1

    assert buf[16:24] == u64(2)                  # seq: one write, even again
    assert buf[24:32] == u64(1)                  # generation
    assert buf[44:48] == u32(2) and buf[48:52] == u32(2)
    spu = buf[64:80]
    assert spu == i32(5001) + i32(777) + bytes([1]) + bytes(7)
    p = buf[LAYOUT.partition_rows_offset:LAYOUT.partition_rows_offset + 144]
    assert p[0:64] == b"orders" + bytes(58)
    assert p[64:68] == i32(1) and p[68:72] == i32(5001) and p[72:76] == i32(3)
    assert p[76:80] == bytes([1, 2, 1, 0])       # status, replica_count, in_sync_count, pad
    assert p[80:112] == i32(5001) + i32(5002) + bytes(24)
    assert p[112:144] == i32(5001) + bytes(28)

    snap = read_snapshot(buf)
    assert snap.generation == 1 and snap.sc_pid == 4321
    assert snap.spus == tuple(spus)
    assert snap.partitions == tuple(partitions)
    assert snap.partitions[0].status is PartitionStatus.ONLINE
    assert snap.partition("orders", 0).leader == -1
    assert snap.partition("orders", 7) is None
    assert [r.partition for r in snap.partitions_of("orders")] == [0, 1]
    assert snap.partitions_of("nope") == []
    assert snap.topics() == ["orders"]
    assert snap.spu(5002).status is SpuStatus.OFFLINE and snap.spu(1) is None


def test_generation_increments_and_sc_pid_can_change():
    buf = new_table()
    assert read_generation(buf) == 0
    for expected in (1, 2, 3):
        assert write_snapshot(buf, [], [row()]) == expected
        assert read_generation(buf) == expected
    write_snapshot(buf, [], [], sc_pid=99)
    snap = read_snapshot(buf)
    assert (snap.generation, snap.sc_pid, snap.partitions) == (4, 99, ())
    assert read_header(buf).seq == 8


def test_fewer_rows_zero_the_rows_left_over():
    buf = new_table()
    write_snapshot(buf, [SpuRow(1, 1, SpuStatus.ONLINE)] * 1, [row(partition=p) for p in range(8)])
    write_snapshot(buf, [], [row(partition=0)])
    start = LAYOUT.partition_rows_offset + 144
    assert buf[start:LAYOUT.size] == bytes(LAYOUT.size - start)
    assert buf[64:80] == bytes(16)


def test_empty_table():
    snap = read_snapshot(new_table())
    assert (snap.generation, snap.spus, snap.partitions, snap.topics()) == (0, (), (), [])
    assert snap.partition("orders", 0) is None and snap.spu(0) is None


def test_4096_partitions_round_trip():
    layout = TableLayout()
    buf = new_table(layout)
    partitions = [row(f"topic-{i % 37}", i // 37, i % 5, leader_epoch=i, replicas=tuple(range(i % 9)),
                      in_sync=tuple(range(i % 4))) for i in range(4096)]
    spus = [SpuRow(i, 1000 + i, SpuStatus(i % 3)) for i in range(64)]
    write_snapshot(buf, spus, partitions)
    snap = read_snapshot(buf)
    assert snap.partitions == tuple(partitions) and snap.spus == tuple(spus)
    assert len(snap.topics()) == 37
    assert snap.partition("topic-5", 100) == partitions[100 * 37 + 5]
    assert [r.partition for r in snap.partitions_of("topic-0")] == list(range(111))


def test_labels():
    assert [s.label for s in SpuStatus] == ["Init", "Online", "Offline"]
    assert [s.label for s in PartitionStatus] == ["Offline", "Online", "LeaderOffline", "OutOfStorage"]


def test_layout_version_mismatch_names_both_versions():
    buf = new_table()
    buf[8:12] = u32(1)
    with pytest.raises(LayoutVersionMismatch) as info:
        read_snapshot(buf)
    assert "layout version 1" in str(info.value) and "layout version 2" in str(info.value)
    with pytest.raises(LayoutVersionMismatch):
        write_snapshot(buf, [], [])


def test_bad_magic():
    buf = new_table()
    buf[0:8] = b"NOTATABL"
    with pytest.raises(MetadataTableError, match="not a rillet metadata table"):
        read_snapshot(buf)


def test_uninitialised_and_short_buffers():
    with pytest.raises(MetadataTableError, match="not initialised"):
        read_snapshot(bytearray(LAYOUT.size))
    with pytest.raises(MetadataTableError, match="smaller than its 64-byte header"):
        read_header(bytearray(10))
    with pytest.raises(MetadataTableError, match="smaller than its layout"):
        read_header(new_table()[:LAYOUT.size - 1])
    with pytest.raises(InvalidArgument, match="smaller than the layout"):
        init_table(bytearray(100), LAYOUT, 1)


def test_corrupt_counts_are_refused_not_sliced():
    buf = new_table()
    buf[48:52] = u32(9)                          # partition_count beyond max_partitions=8
    with pytest.raises(MetadataTableError, match="9 partitions"):
        read_snapshot(buf)


def test_overflow_errors():
    buf = new_table()
    with pytest.raises(InvalidArgument, match="5 SPU rows exceed max_spus=4"):
        write_snapshot(buf, [SpuRow(i, 0, SpuStatus.INIT) for i in range(5)], [])
    with pytest.raises(InvalidArgument, match="9 partition rows exceed max_partitions=8"):
        write_snapshot(buf, [], [row(partition=p) for p in range(9)])
    with pytest.raises(InvalidArgument, match=f"9 replicas exceed MAX_REPLICAS={MAX_REPLICAS}"):
        write_snapshot(buf, [], [row(replicas=tuple(range(9)))])
    with pytest.raises(InvalidArgument, match="9 in-sync replicas exceed"):
        write_snapshot(buf, [], [row(in_sync=tuple(range(9)))])
    with pytest.raises(InvalidArgument, match="topic name of 64 characters exceeds the table's 63"):
        write_snapshot(buf, [], [row("t" * 64)])
    with pytest.raises(InvalidArgument, match="ASCII"):
        write_snapshot(buf, [], [row("tópico")])
    with pytest.raises(InvalidArgument, match="two rows for partition orders/0"):
        write_snapshot(buf, [], [row(), row()])
    with pytest.raises(InvalidArgument, match="two SPU rows"):
        write_snapshot(buf, [SpuRow(1, 0, SpuStatus.INIT)] * 2, [])
    with pytest.raises(InvalidArgument, match="does not fit"):
        write_snapshot(buf, [], [row(leader_epoch=2**31)])
    with pytest.raises(InvalidArgument, match="does not fit"):
        write_snapshot(buf, [SpuRow(1, 0, 7)], [])
    with pytest.raises(InvalidArgument, match="sc_pid"):
        write_snapshot(buf, [], [], sc_pid=-1)
    # Nothing was published by the refused writes.
    assert read_header(buf).seq == 0 and read_generation(buf) == 0
    assert write_snapshot(buf, [], [row("t" * 63)]) == 1


def test_layout_limits():
    with pytest.raises(InvalidArgument, match="max_spus=0"):
        TableLayout(max_spus=0)
    with pytest.raises(InvalidArgument, match="max_partitions"):
        TableLayout(max_partitions=mt.MAX_PARTITIONS_LIMIT + 1)


def test_reader_gives_up_on_a_dead_writer():
    buf = new_table()
    buf[16:24] = u64(5)                          # odd: the SC died mid-write
    with pytest.raises(MetadataTableBusy, match="after 3 reads"):
        read_snapshot(buf, max_retries=3)
    with pytest.raises(MetadataTableBusy):
        read_generation(buf, max_retries=3)
    write_snapshot(buf, [], [row()])             # a writer that comes back finishes it
    assert read_header(buf).seq == 6


def test_snapshot_is_immutable_and_hashable():
    buf = new_table()
    write_snapshot(buf, [], [row()])
    snap = read_snapshot(buf)
    with pytest.raises(AttributeError):
        snap.generation = 5
    snap.partition("orders", 0)                  # builds the index
    assert snap == read_snapshot(buf) and hash(snap) == hash(read_snapshot(buf))
