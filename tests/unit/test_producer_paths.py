"""The producer's caller-side paths against an in-process SPU: ``send_all``'s bulk
path gives what a loop of ``send`` gives, and the fast path (the caller writing a
sealed batch on the SPU link itself) keeps every partition's order.

The fake SPU speaks the real protocol over a real Unix socket to the real
SpuLink; it stores each batch it is sent (decoded with ipc.records) and can hold
its answers or refuse one request with a retriable error.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from types import SimpleNamespace

import pytest

from rillet import MessageTooLarge, TopicProducerConfigBuilder
from rillet._partitioner import Partitioner, key_hash
from rillet._produce_output import ProduceOutput, _BatchResult
from rillet._producer import TopicProducer, _split_pairs
from rillet.ipc import messages as m
from rillet.ipc.errors import Closed, NotLeader, Timeout
from rillet.ipc.framing import NEED_DATA, FrameDecoder
from rillet.ipc.metadata_table import PartitionStatus
from rillet.ipc.record_decoding import decode_batch
from rillet.ipc.framing import encode_message

SPU = 7


class FakeSpu:
    """Answers Hello and ProduceRequest on a Unix socket; one thread per connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches: dict[int, list[list[tuple[bytes | None, bytes]]]] = defaultdict(list)   # partition -> batches
        self.timestamps: dict[int, list[int]] = defaultdict(list)   # partition -> each stored record's
        self.bad_headers: list[tuple] = []   # batches whose header's timestamps are not their records'
        self.requests = 0
        self.answering = threading.Event()
        self.answering.set()
        self.reading = threading.Event()     # cleared: the socket is not read (it fills up)
        self.reading.set()
        self.refuse = set()                  # request numbers (1-based) answered with NotLeader
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def records(self, partition: int) -> list[tuple[bytes | None, bytes]]:
        return [r for batch in self.batches[partition] for r in batch]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        frames, decoder, replies = FrameDecoder(), m.new_decoder(), queue.SimpleQueue()
        threading.Thread(target=self._reply, args=(conn, replies), daemon=True).start()
        while self.reading.wait() and (data := _recv(conn)):
            frames.receive_data(data)
            while (frame := frames.next_frame()) is not NEED_DATA:
                replies.put(self._answer(decoder.decode(frame)))
        replies.put(None)

    def _reply(self, conn: socket.socket, replies: queue.SimpleQueue) -> None:
        encoder = m.new_encoder()
        while (reply := replies.get()) is not None:
            self.answering.wait()
            try:
                conn.sendall(encode_message(encoder, reply))
            except OSError:
                return

    def _answer(self, msg) -> m.Message:
        if isinstance(msg, m.Hello):
            return m.HelloOk(msg.cid, m.PROTOCOL_VERSION, f"spu-{SPU}")
        with self._lock:
            self.requests += 1
            if self.requests in self.refuse:
                return m.ErrorResponse(msg.cid, NotLeader.code, "refused by the test")
            header, records = decode_batch(bytes(msg.batches))
            stamps = [r.timestamp for r in records]
            if (header.first_timestamp, header.max_timestamp) != (stamps[0], max(stamps)):
                self.bad_headers.append((header.first_timestamp, header.max_timestamp, stamps))
            log = self.batches[msg.partition]
            base = sum(len(b) for b in log)
            log.append([(r.key, r.value) for r in records])
            self.timestamps[msg.partition] += [r.timestamp for r in records]
            return m.ProduceResponse(msg.cid, base, base + len(records), base + len(records))

    def close(self) -> None:
        self.answering.set()
        self.reading.set()
        self._listener.close()
        for conn in self._conns:
            conn.close()


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


class FakeMeta:
    """The slice of MetadataView the producer reads: every partition led by SPU 7."""

    def __init__(self, path: str, partitions: int) -> None:
        self.path, self.count = path, partitions
        self._rows = [SimpleNamespace(partition=p, status=PartitionStatus.ONLINE, leader=SPU) for p in range(partitions)]
        self._snapshot = SimpleNamespace(partitions_of=lambda topic: self._rows)

    def partition_count(self, topic: str) -> int:
        return self.count

    def leader(self, topic: str, partition: int, refresh: bool = False):
        return self._rows[partition]

    def snapshot(self, refresh: bool = False):
        return self._snapshot

    def spu_socket(self, spu_id: int) -> str:
        return self.path


@pytest.fixture
def spu():
    directory = tempfile.mkdtemp(prefix="rillet-unit-")
    fake = FakeSpu(os.path.join(directory, "spu.sock"))
    yield fake
    fake.close()
    os.unlink(fake.path)
    os.rmdir(directory)


def producer(spu: FakeSpu, partitions: int = 1, **settings) -> TopicProducer:
    builder = TopicProducerConfigBuilder()
    for name, value in settings.items():
        getattr(builder, name)(value)
    return TopicProducer(FakeMeta(spu.path, partitions), "t", builder.build())


def pairs(n: int, keys: int | None = None, size: int = 100) -> list[tuple[bytes | None, bytes]]:
    return [(None if keys is None else f"k{i % keys}".encode(), i.to_bytes(8, "big") * (size // 8)) for i in range(n)]


# --- send_all is a loop of send, at a fraction of the cost -------------------------------------

@pytest.mark.parametrize("partitions,keys,settings", [
    (1, None, {}),
    (3, None, {}),
    (3, 10, {}),
    (3, 1, {}),
    (3, None, {"set_specific_partitioner": 2}),
])
def test_send_all_stores_what_a_send_loop_stores(spu, partitions, keys, settings):
    records = pairs(5_000, keys)
    config = dict(linger=60_000, batch_size=4_000, **settings)
    looped = producer(spu, partitions, **config)
    loop_outputs = [looped.send(k, v) for k, v in records]
    looped.close()
    by_loop = {p: spu.records(p) for p in range(partitions)}
    loop_batches = {p: [len(b) for b in spu.batches[p]] for p in range(partitions)}
    spu.batches.clear()

    bulk = producer(spu, partitions, **config)
    bulk_outputs = bulk.send_all(iter(records))          # any iterable, taken in chunks
    bulk.close()
    assert {p: spu.records(p) for p in range(partitions)} == by_loop
    assert {p: [len(b) for b in spu.batches[p]] for p in range(partitions)} == loop_batches
    assert [o.partition_id() for o in bulk_outputs] == [o.partition_id() for o in loop_outputs]
    assert [o.wait().offset() for o in bulk_outputs] == [o.wait().offset() for o in loop_outputs]
    # 100-byte records: a keyless one counts 114 bytes (KEYLESS_OVERHEAD), a keyed one 121 and its key
    assert all(b <= 4_000 // 114 for sizes in loop_batches.values() for b in sizes)
    assert spu.bad_headers == []
    if keys:
        for key, value in records:
            assert (key, value) in by_loop[key_hash(key) % partitions]


@pytest.mark.parametrize("lengths", [
    [0, 1, 100, 255, 256, 3_000],              # few lengths: each batch's run is one join
    list(range(40)),                           # more than RUN_MAX_LENGTHS: wire tuples as before
])
def test_send_all_of_keyless_values_of_many_lengths_stores_what_a_send_loop_stores(spu, lengths):
    records = [(None, bytes([i % 251]) * lengths[i % len(lengths)]) for i in range(2_000)]
    config = dict(linger=60_000, batch_size=8_000)
    looped = producer(spu, 1, **config)
    loop_outputs = [looped.send(k, v) for k, v in records]
    looped.close()
    by_loop, loop_batches = spu.records(0), [len(b) for b in spu.batches[0]]
    spu.batches.clear()
    bulk = producer(spu, 1, **config)
    bulk_outputs = bulk.send_all(records)
    bulk.close()
    assert spu.records(0) == by_loop == records
    assert [len(b) for b in spu.batches[0]] == loop_batches
    assert [o.wait().offset() for o in bulk_outputs] == [o.wait().offset() for o in loop_outputs]
    assert spu.bad_headers == []


def test_large_batches_written_in_pieces_through_a_full_socket_arrive_whole(spu):
    # Each 64 KiB batch leaves as [frame head, batch] in a sendmsg; with the SPU not reading,
    # the socket fills and sendmsg stops inside a head or a batch: the rest must follow in order.
    records = [(None, bytes([i % 251]) * (1000 + i % 300)) for i in range(3_000)]
    spu.reading.clear()
    threading.Timer(0.3, spu.reading.set).start()      # meanwhile the link waits for room
    with producer(spu, 1, linger=5, batch_size=65_536) as prod:
        outputs = prod.send_all(records)
        prod.flush()
    assert spu.records(0) == records
    assert len(spu.batches[0]) > 10 and [o.wait().offset() for o in outputs] == list(range(3_000))


def test_send_all_with_mixed_keys_keeps_each_keys_order(spu):
    records = [(None if i % 3 == 0 else f"k{i % 7}".encode(), str(i).encode()) for i in range(3_000)]
    with producer(spu, 4, linger=60_000, batch_size=2_000) as prod:
        outputs = prod.send_all(records)
    stored = {p: spu.records(p) for p in range(4)}
    assert sorted(v for log in stored.values() for _k, v in log) == sorted(v for _k, v in records)
    for p, log in stored.items():
        for key in {k for k, _ in log if k is not None}:
            assert key_hash(key) % 4 == p
            seq = [int(v) for k, v in log if k == key]
            assert seq == sorted(seq)
    assert [o.partition_id() for o, (k, _) in zip(outputs, records) if k is not None] == \
        [key_hash(k) % 4 for k, _ in records if k is not None]


def test_send_all_converts_like_send(spu):
    with producer(spu, linger=60_000) as prod:
        outputs = prod.send_all([("k", "v"), (b"k", bytearray(b"ba")), (None, memoryview(b"mv")), [None, "list"]])
        prod.flush()
        assert [o.wait(timeout=5).offset() for o in outputs] == [0, 1, 2, 3]
    assert spu.records(0) == [(b"k", b"v"), (b"k", b"ba"), (None, b"mv"), (None, b"list")]


@pytest.mark.parametrize("bad,error", [
    ((None, 12), TypeError),
    ((None, b"x" * 5_000), MessageTooLarge),
    ((None,), ValueError),
])
def test_a_bad_record_raises_after_the_ones_before_it_were_queued(spu, bad, error):
    with producer(spu, linger=60_000, max_request_size=4_096) as prod:
        with pytest.raises(error):
            prod.send_all([(None, b"a"), (None, b"b"), bad, (None, b"never")])
    assert spu.records(0) == [(None, b"a"), (None, b"b")]


def test_split_pairs():
    assert _split_pairs([(None, b"a"), (None, b"b")]) == (None, [b"a", b"b"], None)
    assert _split_pairs([(b"k", b"a"), (None, b"b")]) == ([b"k", None], [b"a", b"b"], None)
    assert _split_pairs([("k", "a")]) == ([b"k"], [b"a"], None)
    keys, values, error = _split_pairs([(None, b"a"), (None, 1.5), (None, b"c")])
    assert (keys, values, type(error)) == (None, [b"a"], TypeError)
    keys, values, error = _split_pairs([(None, b"a"), (None, b"b", b"c")])
    assert (values, type(error)) == ([b"a"], ValueError)


# --- the fast path ------------------------------------------------------------------------------

def test_linger_zero_keeps_order_across_threads_with_answers_held(spu):
    # At-most-once: an idempotent producer keeps at most 120 batches unanswered per partition
    # (what an SPU remembers per producer), and this test wants 1,200 in flight.
    prod = producer(spu, 3, linger=0, batch_queue_size=1_000, delivery_semantic="at-most-once")
    prod.send("warm", "up").wait(timeout=5)              # opens the link: later sends may take the fast path
    dispatched = []
    sender_dispatch = prod._core._dispatch
    prod._core._dispatch = lambda batch: (dispatched.append(batch), sender_dispatch(batch))
    spu.answering.clear()                                # nothing is answered: batches pile up in flight

    def send_some(t: int) -> None:
        for i in range(300):
            prod.send(f"t{t}-k{i % 5}", f"{t}:{i}")

    threads = [threading.Thread(target=send_some, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    assert spu.requests > 100                            # written before any answer came back
    spu.answering.set()
    for thread in threads:
        thread.join(10)
    prod.flush(timeout=10)
    stats = prod.statistics()
    assert (stats.records_sent, stats.batches_sent, stats.records_failed) == (1_201, 1_201, 0)
    assert dispatched == []                              # every one written by its caller
    prod.close()
    seen = defaultdict(list)
    for p in range(3):
        for key, value in spu.records(p):
            if key != b"warm":
                seen[key].append(int(value.split(b":")[1]))
    assert len(seen) == 20
    for key, seq in seen.items():
        assert seq == sorted(seq) and len(seq) == 60, key


def test_sends_racing_the_linger_seal_store_each_record_once_in_order(spu):
    # TopicProducer.send appends to the open batch in place; the sender thread seals batches
    # whose 1 ms linger expired meanwhile. Four threads, keyed and keyless records: each is
    # stored once, each key's records in order, at the offset its output names, stamped
    # with the time it was sent.
    before = time.time_ns() // 1_000_000
    prod = producer(spu, 3, linger=1, batch_size=3_000)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                          # threads switch between any two bytecodes
    outputs: dict[tuple, object] = {}

    def send_some(t: int) -> None:
        for i in range(1_500):
            key = None if i % 4 == 0 else f"t{t}-k{i % 7}".encode()
            outputs[(t, i)] = prod.send(key, f"{t}:{i}".encode())

    threads = [threading.Thread(target=send_some, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(switch)
    prod.flush(timeout=10)
    after = time.time_ns() // 1_000_000
    prod.close()
    stored = {p: spu.records(p) for p in range(3)}
    assert sorted(v for log in stored.values() for _k, v in log) == sorted(f"{t}:{i}".encode() for t, i in outputs)
    for p, log in stored.items():
        assert all(before <= ts <= after for ts in spu.timestamps[p])
        by_key = defaultdict(list)
        for offset, (key, value) in enumerate(log):
            t, i = map(int, value.split(b":"))
            meta = outputs[(t, i)].wait()
            assert (meta.partition_id(), meta.offset()) == (p, offset)
            if key is not None:
                assert key_hash(key) % 3 == p
                by_key[key].append(i)
        assert all(seq == sorted(seq) for seq in by_key.values())
    assert len(spu.batches[0]) > 3                       # the linger sealed batches while sends ran
    assert spu.bad_headers == []                         # first and greatest timestamps, as kept while appending
    with pytest.raises(Closed):
        prod.send(None, b"after close")


def test_linger_zero_order_holds_when_the_sender_thread_takes_over(spu):
    # The first batch finds no link (the sender thread opens it); later ones queue behind
    # it until it is sent, then the fast path resumes: one order throughout.
    with producer(spu, linger=0) as prod:
        outputs = [prod.send(None, str(i)) for i in range(2_000)]
        assert [o.wait(timeout=10).offset() for o in outputs] == list(range(2_000))
    assert [int(v) for _k, v in spu.records(0)] == list(range(2_000))


def test_a_refused_batch_is_retried_and_nothing_is_lost(spu):
    spu.refuse = {5, 6}                                  # NotLeader, retriable: retried after a pause
    with producer(spu, linger=0) as prod:
        outputs = [prod.send(None, str(i)) for i in range(50)]
        prod.flush(timeout=10)
        assert prod.statistics().retries >= 1
        assert sorted(o.wait().offset() for o in outputs) == list(range(50))
    assert sorted(int(v) for _k, v in spu.records(0)) == list(range(50))


def test_a_send_that_must_wait_first_writes_what_it_sealed(spu):
    # A keyless send seals partition 0's full batch (fast path: queued on the link),
    # moves on to partition 1, finds no room there and waits. Partition 0's batch
    # must be on the wire meanwhile, not held back until the wait ends.
    value = "x" * 400                                    # two fit in a 1000-byte batch
    prod = producer(spu, 2, linger=60_000, batch_size=1_000, batch_queue_size=1)
    prod.send(None, value), prod.send_to_partition(1, None, value)
    prod.flush(timeout=5)                                # opens the link; the sticky partition is 0 again
    spu.answering.clear()
    prod.send(None, value), prod.send(None, value)      # partition 0: one full open batch
    for _ in range(4):                                   # partition 1: one in flight (its queue is full),
        prod.send_to_partition(1, None, value)           # one full open batch
    wait_until(lambda: spu.requests == 3)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (prod.send(None, value), done.set()))
    waiter.start()
    wait_until(lambda: spu.requests == 4)                # partition 0's batch arrived ...
    assert not done.is_set()                             # ... while the send waits for room on partition 1
    spu.answering.set()
    assert done.wait(5)
    waiter.join()
    prod.close()
    assert ([len(b) for b in spu.batches[0]], [len(b) for b in spu.batches[1]]) == ([1, 2, 1], [1, 2, 2])


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# --- outputs and partitioner --------------------------------------------------------------------

def test_batch_result_latch():
    result = _BatchResult(2, "t/2")
    calls = []
    result.add_done_callback(lambda: calls.append(1))
    with pytest.raises(Timeout, match=r"t/2 not acknowledged within timeout=0.01 s"):
        result.wait(0.01)
    assert not result.wait_done(0)
    waiters = [threading.Thread(target=result.wait, args=(5,)) for _ in range(3)]
    for w in waiters:
        w.start()
    result.resolve(40)
    for w in waiters:
        w.join(5)
        assert not w.is_alive()
    assert result.done and result.wait_done(0) and calls == [1]
    assert result._callbacks is None                     # dropped: an untracked ProduceOutput closes no cycle
    result.add_done_callback(lambda: calls.append(2))   # already resolved: runs at once
    assert calls == [1, 2]
    outs = list(map(ProduceOutput, itertools.repeat(result), range(3)))
    assert [(o.wait().offset(), o.partition_id()) for o in outs] == [(40, 2), (41, 2), (42, 2)]
    assert outs[0].wait() is None and outs[0].is_done()
    assert repr(outs[1]) == "ProduceOutput(partition=2, index=1, done=True)"


def test_for_keys_matches_for_key():
    keys = [f"key-{i % 50}".encode() for i in range(500)]
    assert Partitioner().for_keys(keys, 7) == [Partitioner().for_key(k, 7) for k in keys]
    assert Partitioner().for_keys([b"a"], 3) == [key_hash(b"a") % 3]
