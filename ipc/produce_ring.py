"""A producer link's shared-memory produce ring: the layout, the writer and the reader (pure).

A producer's link to an SPU puts its produce requests here instead of on the Unix socket
(client/_ring_channel.py makes the memory, broker/spu/produce_ring.py drains it), so record
bytes do not cross the socket: one copy into the ring by the producer, none by the kernel.
Answers still come on the socket. Single producer (the link, under its lock), single consumer
(the SPU's event loop). Nothing here touches a file descriptor: both sides hand in a buffer
(the memfd's map) and do their own wake-ups.

Layout (little-endian; the header is one page so the data area starts page-aligned)::

    offset  field             written by  meaning
    0       magic "RRNG"      producer    informational: the SPU trusts no header field
    4       version u32       producer
    8       capacity u64      producer    the data area's size (the SPU uses its own figure)
    64      write_pos u64     producer    bytes ever published (monotonic; offset = pos % capacity)
    128     read_pos u64      SPU         bytes ever consumed (an entry's bytes copied: appended or refused)
    192     consumer_asleep   SPU         1: the SPU will sleep on its eventfd; write it after publishing
    256     producer_waiting  producer    1: the producer waits for room; the SPU writes the room eventfd
    4096    data area         producer    entries, each 8-byte aligned and never split at the end

    entry:  length u32 (header + topic + batch, before padding), isolation u32, cid u64,
            partition i32, timeout_ms i32, topic length u16, reserved u16, topic (UTF-8), batch
    WRAP:   a length of 0xFFFFFFFF: the rest up to the data area's end is unused; go on at 0

Positions live on their own cache lines so the two sides do not share one.

Wake-up without a lost wake (the standard store / full fence / load on both sides):

* producer: write the entry, store write_pos, fence, load consumer_asleep; if 1, write the
  SPU's eventfd. The SPU awake (draining) sees the new write_pos before it sleeps.
* SPU: drain; store consumer_asleep = 1, fence, load write_pos; if it moved, store 0 and drain
  again, else sleep (its eventfd in the loop). Whichever side stores second sees the other's
  store: the SPU sees the entry, or the producer sees the flag and wakes it.
* room, the same in the other direction: a producer that finds no room stores
  producer_waiting = 1, fences, and looks again; the SPU, after moving read_pos, fences and
  loads producer_waiting; if 1 it writes the producer's room eventfd.

x86-64 orders stores with stores and loads with loads (TSO), so an entry's bytes are visible
before the write_pos that publishes them; only store-then-load needs the fence. Python has no
fence instruction: ``full_fence`` takes and releases a threading.Lock, whose glibc semaphore
does a locked compare-and-swap (a full barrier on x86-64). The SPU also looks at its rings on a
slow timer, so a wake lost anyway (another architecture) costs latency, never a stall.

Trust: the reader keeps its own read position and capacity, copies write_pos once per look,
and checks every length against the data area and the published bytes before slicing; a bad
entry raises RingError (the SPU then closes that ring and its connection). The batch itself is
then checked like any produce (length, magic, CRC) by the replica. What the reader cannot stop
is a producer rewriting an entry while the SPU reads it (it owns the memory): that can only
spoil its own batch, which then fails its CRC at the replica's check or at a reader's.
"""

from __future__ import annotations

import struct
import threading

MAGIC = b"RRNG"
VERSION = 1
HEADER_BYTES = 4096
_HEAD = struct.Struct("<4sIQ")             # magic, version, capacity
_POS = struct.Struct("<Q")
_FLAG = struct.Struct("<I")
WRITE_POS_AT, READ_POS_AT, ASLEEP_AT, WAITING_AT = 64, 128, 192, 256
ENTRY = struct.Struct("<IIQiiHH")           # length, isolation, cid, partition, timeout_ms, topic length, reserved
assert ENTRY.size == 28
WRAP = 0xFFFFFFFF
ALIGN = 8
MIN_CAPACITY = 64 * 1024
MAX_CAPACITY = 1 << 30                      # the SPU refuses a larger ring (it maps it whole)
MAX_TOPIC_BYTES = 255 * 4                   # names are at most 255 characters (ipc/names.py)


class RingError(Exception):
    """The ring holds something no correct producer writes (a length, a position, a name)."""


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def ring_bytes(capacity: int) -> int:
    """The size of the shared region for a data area of ``capacity`` bytes."""
    return HEADER_BYTES + capacity


def capacity_for(max_request_bytes: int, minimum: int) -> int:
    """A data area that holds at least two of the largest entries (so one always fits after
    the other drains, wherever the wrap falls), rounded up to a page and at least ``minimum``."""
    need = max(minimum, 2 * align(ENTRY.size + MAX_TOPIC_BYTES + max_request_bytes) + ALIGN)
    return min(MAX_CAPACITY, (need + 4095) & ~4095)


def full_fence(_lock=threading.Lock()) -> None:
    """A full memory barrier (see the module docstring: a semaphore's locked compare-and-swap)."""
    _lock.acquire()
    _lock.release()


def init_header(buf, capacity: int) -> None:
    _HEAD.pack_into(buf, 0, MAGIC, VERSION, capacity)
    _POS.pack_into(buf, WRITE_POS_AT, 0)
    _POS.pack_into(buf, READ_POS_AT, 0)
    _FLAG.pack_into(buf, ASLEEP_AT, 1)      # the SPU starts asleep: the first entry wakes it
    _FLAG.pack_into(buf, WAITING_AT, 0)


class RingWriter:
    """The producer's end. Not thread-safe (the link calls it under its lock)."""

    def __init__(self, buf, capacity: int) -> None:
        self.buf = buf
        self.capacity = capacity
        self.data = memoryview(buf)[HEADER_BYTES:HEADER_BYTES + capacity]
        self.write_pos = 0              # where the next entry goes (published or not)
        self.published = 0

    def free(self) -> int:
        read = _POS.unpack_from(self.buf, READ_POS_AT)[0]
        used = self.write_pos - read
        return self.capacity - used if 0 <= used <= self.capacity else 0    # a bad read_pos: full

    def fits_ever(self, topic: bytes, batch_len: int) -> bool:
        return 2 * align(ENTRY.size + len(topic) + batch_len) + ALIGN <= self.capacity

    def put(self, cid: int, topic: bytes, partition: int, isolation: int, timeout_ms: int, batch) -> bool:
        """Write one entry (not yet published); False when there is no room for it now."""
        length = ENTRY.size + len(topic) + len(batch)
        span = align(length)
        at = self.write_pos % self.capacity
        tail = self.capacity - at
        need = span + (tail if tail < span else 0)      # an entry never splits: wrap first
        if need > self.free():
            return False
        data = self.data
        if tail < span:
            _FLAG.pack_into(data, at, WRAP)
            self.write_pos += tail
            at = 0
        ENTRY.pack_into(data, at, length, isolation, cid, partition, timeout_ms, len(topic), 0)
        start = at + ENTRY.size
        data[start:start + len(topic)] = topic
        start += len(topic)
        data[start:start + len(batch)] = batch
        self.write_pos += span
        return True

    def drained(self) -> bool:
        """Everything written is published and handled by the SPU (its read position is here)."""
        return self.published == self.write_pos == _POS.unpack_from(self.buf, READ_POS_AT)[0]

    @property
    def unpublished(self) -> bool:
        return self.write_pos != self.published

    def publish(self) -> bool:
        """Publish what was put; True when the SPU sleeps and must be woken (its eventfd)."""
        self.published = self.write_pos
        _POS.pack_into(self.buf, WRITE_POS_AT, self.write_pos)
        full_fence()
        return _FLAG.unpack_from(self.buf, ASLEEP_AT)[0] != 0

    def wait_for_room(self) -> None:
        """Say the producer waits for room (the SPU writes the room eventfd after it frees some)."""
        _FLAG.pack_into(self.buf, WAITING_AT, 1)
        full_fence()

    def room_seen(self) -> None:
        _FLAG.pack_into(self.buf, WAITING_AT, 0)

    def release(self) -> None:
        self.data.release()


class RingReader:
    """The SPU's end: its own read position and capacity; nothing read from the ring is trusted."""

    def __init__(self, buf, capacity: int) -> None:
        self.buf = buf
        self.capacity = capacity
        self.data = memoryview(buf)[HEADER_BYTES:HEADER_BYTES + capacity]
        self.read_pos = 0
        self._limit = 0                 # write_pos as last copied and checked
        self._topics: dict[bytes, str] = {}     # a link sends to one topic or a few: decode each once

    def look(self) -> int:
        """Copy write_pos out and check it; the bytes published and not yet read."""
        write = _POS.unpack_from(self.buf, WRITE_POS_AT)[0]
        ahead = write - self.read_pos
        if not 0 <= ahead <= self.capacity:
            raise RingError(f"write position {write} is not within {self.capacity} bytes ahead of the "
                            f"read position {self.read_pos}")
        if write % ALIGN:
            raise RingError(f"write position {write} is not {ALIGN}-byte aligned")
        self._limit = write
        return ahead

    def next_entry(self) -> tuple | None:
        """The next entry up to the last ``look`` as ``(cid, topic, partition, isolation,
        timeout_ms, batch, end)``, or None; ``batch`` is a view into the ring, valid until
        ``consumed(end)``. Raises RingError for anything no correct producer writes."""
        while True:
            avail = self._limit - self.read_pos
            if avail <= 0:
                return None
            at = self.read_pos % self.capacity
            tail = self.capacity - at
            length = _FLAG.unpack_from(self.data, at)[0]
            if length == WRAP:
                if tail > avail:
                    raise RingError(f"a wrap marker at {at} skips {tail} bytes, only {avail} are published")
                self.read_pos += tail
                continue
            if length < ENTRY.size or align(length) > min(avail, tail):
                raise RingError(f"entry of {length} bytes at {at}: {min(avail, tail)} bytes are published there "
                                f"(an entry has {ENTRY.size} to {min(avail, tail)})")
            _len, isolation, cid, partition, timeout_ms, topic_len, _r = ENTRY.unpack_from(self.data, at)
            if topic_len > min(MAX_TOPIC_BYTES, length - ENTRY.size):
                raise RingError(f"topic of {topic_len} bytes in an entry of {length} bytes")
            start = at + ENTRY.size
            name = self.data[start:start + topic_len].tobytes()
            topic = self._topics.get(name)
            if topic is None:
                try:
                    topic = str(name, "utf-8")
                except UnicodeDecodeError as exc:
                    raise RingError(f"topic name is not UTF-8: {exc}") from None
                if len(self._topics) < 64:
                    self._topics[name] = topic
            start += topic_len
            return (cid, topic, partition, isolation, timeout_ms, self.data[start:at + length],
                    self.read_pos + align(length))

    def consumed(self, end: int) -> None:
        """The entry up to ``end`` is copied (appended or refused): give its room back."""
        self.read_pos = end
        _POS.pack_into(self.buf, READ_POS_AT, end)

    def sleep(self) -> bool:
        """Say the SPU sleeps; False if an entry came meanwhile (then it is awake again: drain)."""
        _FLAG.pack_into(self.buf, ASLEEP_AT, 1)
        full_fence()
        if _POS.unpack_from(self.buf, WRITE_POS_AT)[0] != self._limit:
            _FLAG.pack_into(self.buf, ASLEEP_AT, 0)
            return False
        return True

    def wake_up(self) -> None:
        _FLAG.pack_into(self.buf, ASLEEP_AT, 0)

    def producer_waits(self) -> bool:
        """After giving room back: does the producer wait for it (write its room eventfd)?"""
        full_fence()
        return _FLAG.unpack_from(self.buf, WAITING_AT)[0] != 0

    def release(self) -> None:
        self.data.release()
