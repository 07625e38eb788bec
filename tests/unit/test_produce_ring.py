"""The produce ring's layout and protocol (ipc/produce_ring.py), writer and reader back to back
over one buffer: entries round-trip through wraps, room is given back, the sleep flag makes the
producer wake a sleeping reader, and anything no correct producer writes raises RingError."""

from __future__ import annotations

import random
import struct

import pytest

from rillet.ipc import produce_ring as pr
from rillet.ipc.produce_ring import ENTRY, HEADER_BYTES, RingError, RingReader, RingWriter

CAP = 64 * 1024


def ring(capacity: int = CAP):
    buf = bytearray(pr.ring_bytes(capacity))
    pr.init_header(buf, capacity)
    return buf, RingWriter(buf, capacity), RingReader(buf, capacity)


def drain(reader: RingReader) -> list[tuple]:
    out = []
    reader.look()
    while (e := reader.next_entry()) is not None:
        out.append(e[:5] + (bytes(e[5]),))
        reader.consumed(e[6])
        e[5].release()
    return out


def test_entries_round_trip_through_many_wraps():
    seed = 8
    rng = random.Random(seed)
    buf, writer, reader = ring()
    sent, got = [], []
    for cid in range(1, 3000):
        entry = (cid, rng.choice(["t", "topic-ü", "x" * 200]), rng.randrange(0, 1 << 31), rng.randrange(2),
                 rng.randrange(-1, 1 << 31), rng.randbytes(rng.randrange(0, 9000)))
        if not writer.put(entry[0], entry[1].encode(), *entry[2:]):
            writer.publish()
            got += drain(reader)
            assert writer.put(entry[0], entry[1].encode(), *entry[2:]), f"seed {seed}: no room in an empty ring"
        sent.append(entry)
    writer.publish()
    got += drain(reader)
    assert got == sent, f"seed {seed}"
    assert reader.read_pos == writer.write_pos > 10 * CAP


def test_a_full_ring_refuses_until_the_reader_gives_room_back():
    _buf, writer, reader = ring()
    batch = bytes(16 * 1024)
    puts = 0
    while writer.put(puts + 1, b"t", 0, 0, 0, batch):
        puts += 1
    assert puts == 3                    # 4 x (16 KiB + header) > 64 KiB
    writer.publish()
    reader.look()
    entry = reader.next_entry()
    reader.consumed(entry[6])
    entry[5].release()
    assert writer.put(99, b"t", 0, 0, 0, batch)


def test_the_producer_wakes_the_reader_only_when_it_said_it_sleeps():
    _buf, writer, reader = ring()
    assert writer.put(1, b"t", 0, 0, 0, b"a")
    assert writer.publish() is True      # the SPU starts asleep
    reader.wake_up()
    assert drain(reader)
    assert writer.put(2, b"t", 0, 0, 0, b"b")
    assert writer.publish() is False     # awake, draining: no wake-up needed
    assert reader.sleep() is False       # it looks again before sleeping and finds the entry
    assert drain(reader) == [(2, "t", 0, 0, 0, b"b")]
    assert reader.sleep() is True
    assert writer.put(3, b"t", 0, 0, 0, b"c")
    assert writer.publish() is True


def test_drained_means_published_and_read():
    _buf, writer, reader = ring()
    assert writer.drained()
    assert writer.put(1, b"t", 0, 0, 0, b"a")
    assert not writer.drained()          # written, not published
    writer.publish()
    assert not writer.drained()          # published, not read
    drain(reader)
    assert writer.drained()


def test_room_waits_are_seen_by_the_reader():
    _buf, writer, reader = ring()
    assert reader.producer_waits() is False
    writer.wait_for_room()
    assert reader.producer_waits() is True
    writer.room_seen()
    assert reader.producer_waits() is False


def test_capacity_holds_two_of_the_largest_requests():
    cap = pr.capacity_for(1 << 20, 4 << 20)
    assert cap == 4 << 20
    big = pr.capacity_for(8 << 20, 4 << 20)
    assert big >= 2 * (8 << 20) and big % 4096 == 0
    _buf, writer, _reader = ring(big)
    assert writer.fits_ever(b"t" * 255, 8 << 20)


def _poke(buf, at, fmt, *values):
    struct.pack_into(fmt, buf, at, *values)


@pytest.mark.parametrize("damage, match", [
    (lambda buf: _poke(buf, pr.WRITE_POS_AT, "<Q", CAP + 8), "not within"),
    (lambda buf: _poke(buf, pr.WRITE_POS_AT, "<Q", 4), "aligned"),
    (lambda buf: _poke(buf, HEADER_BYTES, "<I", 3), "entry of 3 bytes"),
    (lambda buf: _poke(buf, HEADER_BYTES, "<I", 1 << 30), "entry of"),
    (lambda buf: _poke(buf, HEADER_BYTES, "<I", pr.WRAP), "wrap marker"),
    (lambda buf: _poke(buf, HEADER_BYTES + 24, "<H", 60000), "topic of 60000 bytes"),
    (lambda buf: _poke(buf, HEADER_BYTES + ENTRY.size, "<B", 0xFF), "not UTF-8"),
])
def test_anything_no_correct_producer_writes_is_a_ring_error(damage, match):
    buf, writer, reader = ring()
    assert writer.put(1, b"topic", 0, 0, 0, b"x" * 100)
    writer.publish()
    damage(buf)
    with pytest.raises(RingError, match=match):
        reader.look()
        reader.next_entry()


def test_the_reader_trusts_its_own_read_position_not_the_rings():
    buf, writer, reader = ring()
    assert writer.put(1, b"t", 0, 0, 0, b"a")
    writer.publish()
    _poke(buf, pr.READ_POS_AT, "<Q", 12345)        # whatever the memory says
    assert drain(reader) == [(1, "t", 0, 0, 0, b"a")]
    assert reader.read_pos == writer.write_pos
