"""Consumer offsets: the SC's log format with byte vectors, replay of damaged files,
compaction, the admin handlers; and the client's pure offset rules."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
import zlib
from datetime import timedelta

import pytest

from rillet.broker.sc.offsets import (
    ENTRY, FILE_HEADER, ConsumerOffsetStore, HeaderError, Key, OffsetTable, OtherVersion, Stored, encode_delete,
    encode_file_header, encode_put, encode_snapshot, replay,
)
from rillet.ipc import messages as m
from rillet.ipc.errors import (
    ConsumerOffsetNotFound, InvalidArgument, InvalidName, OffsetOutOfRange, PartitionNotFound, StorageError,
    TopicNotFound,
)
from rillet import ConsumerConfigExtBuilder, Isolation, Offset, OffsetManagementStrategy
from rillet._offsets import OffsetTracker, start_position

TOPICS = {"hello-topic": 1, "orders": 3}


def topic_partitions(name):
    return TOPICS.get(name)


# --- format: byte vectors -------------------------------------------------------------------

def test_file_header_bytes():
    head = b"RLCO\x01\x00\x00\x00"
    assert encode_file_header() == head + struct.pack("<I", zlib.crc32(head))
    assert FILE_HEADER.size == 12


def _header(version: int) -> bytes:
    head = b"RLCO" + struct.pack("<HH", version, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def test_put_entry_byte_layout():
    entry = encode_put(Key("c1", "hello-topic", 2), 7, 0x0102030405)
    assert len(entry) == ENTRY.size + 2 + 11 == 41
    body = entry[4:]
    assert struct.unpack("<I", entry[:4])[0] == zlib.crc32(body)
    assert entry[4] == 1                       # kind: put
    assert entry[5] == 0                       # reserved
    assert (entry[6], entry[7]) == (2, 11)     # name lengths
    assert entry[8:12] == (2).to_bytes(4, "little")
    assert entry[12:20] == (7).to_bytes(8, "little")
    assert entry[20:28] == (0x0102030405).to_bytes(8, "little")
    assert entry[28:] == b"c1hello-topic"


def test_delete_entry_byte_layout():
    entry = encode_delete(Key("c", "t", 0), 5)
    assert entry[4] == 2
    assert entry[12:20] == b"\xff" * 8         # offset -1
    assert entry[28:] == b"ct"


def test_replay_applies_puts_and_deletes_in_order():
    k1, k2 = Key("a", "t", 0), Key("b", "t", 1)
    data = encode_file_header() + encode_put(k1, 1, 10) + encode_put(k2, 5, 11) + encode_put(k1, 3, 12) \
        + encode_delete(k2, 13)
    result = replay(data)
    assert result.entries == {k1: Stored(3, 12)}
    assert (result.end, result.count, result.reason) == (len(data), 4, "end of file")


def test_snapshot_replays_to_the_same_map():
    entries = {Key("a", "t", p): Stored(p * 10, 100 + p) for p in range(5)}
    assert replay(encode_snapshot(entries)).entries == entries


@pytest.mark.parametrize("data, error, match", [
    (b"", HeaderError, "shorter"),
    (b"RLC", HeaderError, "shorter"),
    (b"XXXX" + _header(1)[4:], HeaderError, "bad magic"),
    (b"RLCO\x02\x00\x00\x00" + _header(1)[8:], HeaderError, "CRC"),
    (_header(2), OtherVersion, "version 2"),
])
def test_bad_headers(data, error, match):
    with pytest.raises(error, match=match):
        replay(data)


def _log_bytes(n=6):
    parts = [encode_file_header()]
    bounds = [len(parts[0])]
    for i in range(n):
        parts.append(encode_put(Key(f"c{i % 2}", "orders", i % 3), i, 1000 + i) if i % 4 != 3
                     else encode_delete(Key("c1", "orders", 0), 1000 + i))
        bounds.append(bounds[-1] + len(parts[-1]))
    return b"".join(parts), bounds


def test_every_torn_prefix_replays_to_the_last_whole_entry():
    data, bounds = _log_bytes()
    for cut in range(FILE_HEADER.size, len(data) + 1):
        result = replay(data[:cut])
        whole = max(b for b in bounds if b <= cut)
        assert result.end == whole, cut
        assert result.entries == replay(data[:whole]).entries


def test_a_flipped_byte_ends_the_valid_prefix_there():
    data, bounds = _log_bytes()
    for pos in range(FILE_HEADER.size, len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        result = replay(bytes(damaged))
        entry_start = max(b for b in bounds if b <= pos)
        assert result.end == entry_start, pos
        assert result.reason != "end of file"


def test_trailing_zeros_are_a_torn_tail():
    data, _ = _log_bytes()
    result = replay(data + bytes(100))
    assert result.end == len(data)


# --- the table: what requests may change ----------------------------------------------------------

def test_commit_plan_validates_everything_first():
    table = OffsetTable({}, topic_partitions)
    with pytest.raises(InvalidName):
        table.plan_commit("Bad_Name", [("orders", 0, 1)], 0)
    with pytest.raises(InvalidArgument, match="non-negative"):
        table.plan_commit("c1", [("orders", 0, -1)], 0)
    with pytest.raises(InvalidArgument, match="partition"):
        table.plan_commit("c1", [("orders", -1, 1)], 0)
    with pytest.raises(TopicNotFound, match="nope"):
        table.plan_commit("c1", [("orders", 0, 1), ("nope", 0, 1)], 0)
    with pytest.raises(PartitionNotFound, match="partition 3 of topic 'orders'"):
        table.plan_commit("c1", [("orders", 3, 1)], 0)
    assert table.entries == {}


def test_delete_plan_filters_and_names_the_consumer_when_nothing_matches():
    table = OffsetTable({Key("c1", "orders", p): Stored(p, 0) for p in range(3)} |
                        {Key("c1", "hello-topic", 0): Stored(9, 0), Key("c2", "orders", 0): Stored(1, 0)},
                        topic_partitions)
    assert len(table.plan_delete("c1", None, None, 0)) == 4
    assert len(table.plan_delete("c1", "orders", None, 0)) == 3
    assert [c.key for c in table.plan_delete("c1", "orders", 2, 0)] == [Key("c1", "orders", 2)]
    with pytest.raises(ConsumerOffsetNotFound, match="'ghost'"):
        table.plan_delete("ghost", None, None, 0)
    with pytest.raises(PartitionNotFound):
        table.plan_delete("c1", "orders", 7, 0)
    with pytest.raises(TopicNotFound):
        table.plan_delete("c1", "nope", None, 0)
    with pytest.raises(InvalidArgument, match="needs a topic"):
        table.plan_delete("c1", None, 0, 0)


# --- the store on real files ---------------------------------------------------------------------

def test_offsets_survive_reopening(tmp_path):
    path = tmp_path / "consumer-offsets.log"
    store = ConsumerOffsetStore(path, topic_partitions)
    store.commit("c1", [("orders", 0, 4), ("orders", 2, 9)], now_ms=1000)
    store.commit("c2", [("hello-topic", 0, 1)], now_ms=2000)
    store.commit("c1", [("orders", 0, 5)], now_ms=3000)
    store.close()
    again = ConsumerOffsetStore(path, topic_partitions)
    assert [(r.consumer, r.topic, r.partition, r.offset, r.modified_ms) for r in again.rows()] == [
        ("c1", "orders", 0, 5, 3000), ("c1", "orders", 2, 9, 1000), ("c2", "hello-topic", 0, 1, 2000)]
    again.close()


def test_torn_tail_is_cut_kept_aside_and_logged(tmp_path, caplog):
    path = tmp_path / "consumer-offsets.log"
    store = ConsumerOffsetStore(path)
    store.commit("c1", [("orders", 0, 4)], now_ms=1)
    store.close()
    good = path.read_bytes()
    torn = encode_put(Key("c1", "orders", 1), 8, 2)[:17]
    path.write_bytes(good + torn)
    with caplog.at_level(logging.WARNING, logger="sc.offsets"):
        store = ConsumerOffsetStore(path)
    assert [(r.partition, r.offset) for r in store.rows()] == [(0, 4)]
    assert path.read_bytes() == good
    side = tmp_path / f"consumer-offsets.log.cut-{len(good)}"
    assert side.read_bytes() == torn
    assert any("cut 17 bytes" in r.getMessage() and str(side) in r.getMessage() for r in caplog.records)
    store.commit("c1", [("orders", 1, 8)], now_ms=3)      # appends after the cut
    store.close()
    assert len(replay(path.read_bytes()).entries) == 2


def test_random_damage_never_stops_the_store(tmp_path):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    path = tmp_path / "consumer-offsets.log"
    store = ConsumerOffsetStore(path)
    for i in range(40):
        store.commit(f"c{i % 3}", [("orders", i % 3, i)], now_ms=i)
    store.close()
    pristine = path.read_bytes()
    for trial in range(30):
        data = bytearray(pristine)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.5:
            del data[rng.randrange(len(data)):]
        path.write_bytes(bytes(data))
        for side in tmp_path.glob("*.cut-*"):
            side.unlink()
        reopened = ConsumerOffsetStore(path)   # must not raise
        rows = {(r.consumer, r.partition): r.offset for r in reopened.rows()}
        reopened.commit("after", [("orders", 0, 1)], now_ms=0)
        reopened.close()
        assert all(off >= 0 for off in rows.values()), (seed, trial)
        check = ConsumerOffsetStore(path)        # still readable after the write
        assert ("after", "orders", 0) in {(r.consumer, r.topic, r.partition) for r in check.rows()}, (seed, trial)
        check.close()


def test_foreign_file_is_set_aside_and_started_empty(tmp_path):
    path = tmp_path / "consumer-offsets.log"
    path.write_bytes(b"not an offsets log at all")
    store = ConsumerOffsetStore(path)
    assert store.rows() == []
    assert (tmp_path / "consumer-offsets.log.cut-0").read_bytes() == b"not an offsets log at all"
    store.close()


def test_a_newer_format_version_is_refused_not_destroyed(tmp_path):
    path = tmp_path / "consumer-offsets.log"
    path.write_bytes(_header(9) + b"future")
    with pytest.raises(StorageError, match="version 9"):
        ConsumerOffsetStore(path)
    assert path.read_bytes() == _header(9) + b"future"


def test_compaction_rewrites_the_live_map_only(tmp_path):
    path = tmp_path / "consumer-offsets.log"
    store = ConsumerOffsetStore(path, compact_min_entries=10)
    for i in range(100):
        store.commit("c1", [("orders", 0, i), ("orders", 1, i)], now_ms=i)
        assert store.file.entries_in_file <= max(10, 2 * 2) + 2
    store.close()
    assert path.read_bytes()[:FILE_HEADER.size] == encode_file_header()
    assert replay(path.read_bytes()).entries == {Key("c1", "orders", 0): Stored(99, 99),
                                                 Key("c1", "orders", 1): Stored(99, 99)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consumer-offsets.log"]   # no temp file left


def test_forget_topic_and_pruning_at_open(tmp_path):
    path = tmp_path / "consumer-offsets.log"
    topics = dict(TOPICS)
    store = ConsumerOffsetStore(path, topics.get)
    store.commit("c1", [("orders", 0, 1), ("orders", 2, 2), ("hello-topic", 0, 3)], now_ms=0)
    store.forget_topic("hello-topic")
    assert {r.topic for r in store.rows()} == {"orders"}
    store.close()
    topics["orders"] = 2          # as if partition 2 vanished while the SC was down
    reopened = ConsumerOffsetStore(path, topics.get)
    assert [(r.topic, r.partition) for r in reopened.rows()] == [("orders", 0)]
    reopened.close()


def test_admin_handlers(tmp_path):
    store = ConsumerOffsetStore(tmp_path / "consumer-offsets.log", topic_partitions)
    routes = store.routes()

    async def call(msg):
        result = routes[type(msg)](msg)
        return await result if asyncio.iscoroutine(result) else result

    async def scenario():
        assert await call(m.CommitConsumerOffsets(1, "c1", [m.TopicPartitionOffset("orders", 1, 5)])) == m.Ok(1)
        await asyncio.gather(*[call(m.CommitConsumerOffsets(i, "c2", [m.TopicPartitionOffset("orders", 0, i)]))
                               for i in range(2, 12)])
        fetched = await call(m.FetchConsumerOffsets(20, "c2", "orders"))
        assert [(r.partition, r.offset) for r in fetched.offsets] == [(0, 11)]   # arrival order kept
        listed = await call(m.ListConsumerOffsets(21))
        assert [(r.consumer, r.partition) for r in listed.offsets] == [("c1", 1), ("c2", 0)]
        deleted = await call(m.DeleteConsumerOffsets(22, "c1", "orders", None))
        assert [(r.consumer, r.topic, r.partition, r.offset) for r in deleted.deleted] == [("c1", "orders", 1, 5)]
        with pytest.raises(ConsumerOffsetNotFound):
            await call(m.DeleteConsumerOffsets(23, "c1"))
        with pytest.raises(TopicNotFound):
            await call(m.FetchConsumerOffsets(24, "c2", "nope"))

    asyncio.run(scenario())
    store.close()


def test_messages_round_trip_through_the_codec():
    enc, dec = m.new_encoder(), m.new_decoder()
    for msg in [m.CommitConsumerOffsets(1, "c", [m.TopicPartitionOffset("t", 0, 3)]),
                m.FetchConsumerOffsets(2, "c", "t"), m.ListConsumerOffsets(3),
                m.ConsumerOffsetList(4, [m.ConsumerOffsetInfo("c", "t", 0, 3, 99)]),
                m.DeleteConsumerOffsets(5, "c"), m.DeleteConsumerOffsets(6, "c", "t", 1),
                m.ConsumerOffsetsDeleted(7, [])]:
        assert dec.decode(enc.encode(msg)) == msg


# --- client-side rules (pure) ------------------------------------------------------------------

@pytest.mark.parametrize("offset, stored, expected", [
    (Offset.beginning(), None, 5),
    (Offset.from_beginning(3), None, 8),
    (Offset.from_beginning(99), None, 20),      # clamped to the end
    (Offset.end(), None, 20),
    (Offset.from_end(3), None, 17),
    (Offset.from_end(99), None, 5),             # clamped to the log start
    (Offset.beginning(), 9, 10),                # a stored offset: resume after it
    (Offset.end(), 9, 10),
    (Offset.from_beginning(2), 9, 12),
    (Offset.from_end(2), 9, 8),
    (Offset.beginning(), 1, 5),                 # stored but already removed by retention
    (Offset.absolute(7), 9, 7),                 # absolute ignores the stored offset
])
def test_start_position(offset, stored, expected):
    assert start_position(offset, log_start=5, hw=20, visible_end=20, stored=stored) == expected


def test_absolute_below_the_log_start_names_the_first_available_offset():
    with pytest.raises(OffsetOutOfRange, match="offset 2 of t/0 .*first available offset is 5"):
        start_position(Offset.absolute(2), 5, 20, 20, where="t/0")


def test_tracker_seen_committed_flushed():
    t = OffsetTracker()
    t.saw(0, 4)
    t.saw(1, 2)
    assert t.pending() == {}
    t.commit()
    assert t.pending() == {0: 4, 1: 2}
    t.mark_flushed({0: 4, 1: 2})
    t.saw(0, 3)                    # never goes back
    t.commit()
    assert t.pending() == {}


def test_builder_both_idioms_and_defaults():
    b = ConsumerConfigExtBuilder("orders")
    assert b.partition(1) is b                 # chainable; Fluvio's style (one per line) works too
    b.offset_consumer("billing")
    b.offset_strategy()
    config = b.build()
    assert (config.partition, config.offset_consumer, config.offset_strategy) == (1, "billing", OffsetManagementStrategy.AUTO)
    assert config.offset_start == Offset.beginning()
    assert (config.offset_flush_ms, config.max_bytes, config.isolation) == (10_000, 1024 * 1024, Isolation.ReadUncommitted)
    chained = (ConsumerConfigExtBuilder("orders").offset_flush(timedelta(seconds=2)).disable_continuous()
               .max_bytes(4096).isolation(Isolation.ReadCommitted).build())
    assert (chained.offset_flush_ms, chained.disable_continuous, chained.max_bytes, chained.partition) == (2000, True, 4096, None)
    assert chained.offset_strategy == OffsetManagementStrategy.NONE


@pytest.mark.parametrize("setup, error, match", [
    (lambda b: b.offset_strategy(OffsetManagementStrategy.MANUAL), InvalidArgument, "Consumer id is required"),
    (lambda b: b.offset_strategy(), InvalidArgument, "Consumer id is required"),
    (lambda b: b.offset_consumer("Bad Name").offset_strategy(), InvalidName, "consumer name"),
    (lambda b: b.partition(-1), InvalidArgument, "partition"),
    (lambda b: b.max_bytes(0), InvalidArgument, "max_bytes"),
    (lambda b: b.offset_flush(0), InvalidArgument, "offset_flush"),
    (lambda b: b.topic("../x"), InvalidName, "topic"),
])
def test_builder_errors(setup, error, match):
    b = ConsumerConfigExtBuilder("orders")
    setup(b)
    with pytest.raises(error, match=match):
        b.build()


def test_a_failed_append_is_cut_back_off(tmp_path, monkeypatch):
    path = tmp_path / "consumer-offsets.log"
    store = ConsumerOffsetStore(path)
    store.commit("c1", [("orders", 0, 1)], now_ms=1)
    size = path.stat().st_size
    real = os.fdatasync

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fdatasync", full_disk)
    with pytest.raises(StorageError, match="ENOSPC"):
        store.commit("c1", [("orders", 0, 2)], now_ms=2)
    monkeypatch.setattr(os, "fdatasync", real)
    assert path.stat().st_size == size
    assert [(r.offset) for r in store.rows()] == [1]          # memory unchanged too
    store.commit("c1", [("orders", 0, 3)], now_ms=3)
    store.close()
    assert replay(path.read_bytes()).entries == {Key("c1", "orders", 0): Stored(3, 3)}


def test_a_topic_deleted_during_a_commit_leaves_no_offset_behind(tmp_path):
    topics = dict(TOPICS)
    store = ConsumerOffsetStore(tmp_path / "consumer-offsets.log", topics.get)
    real_append = store.file.append
    calls = []

    def append(data, entries):
        calls.append(entries)
        if len(calls) == 1:                 # the topic goes while the commit is being written
            topics.pop("orders")
            store.forget_topic("orders")
        real_append(data, entries)
    store.file.append = append

    async def commit():
        await store.routes()[m.CommitConsumerOffsets](
            m.CommitConsumerOffsets(1, "c1", [m.TopicPartitionOffset("orders", 0, 5)]))
    asyncio.run(commit())
    assert store.rows() == []
    store.close()
    assert ConsumerOffsetStore(tmp_path / "consumer-offsets.log").rows() == []


def test_the_consumer_surface_is_exported():
    import rillet
    names = {"ConsumerConfigExt", "ConsumerConfigExtBuilder", "ConsumerIterator", "ConsumerOffset",
             "MultiplePartitionConsumer", "PartitionSelectionStrategy", "OffsetManagementStrategy",
             "ConsumerOffsetNotFound", "Offset", "Record", "ConsumerConfig", "PartitionConsumer"}
    assert names <= set(rillet.__all__)
    assert all(hasattr(rillet, n) for n in rillet.__all__)
