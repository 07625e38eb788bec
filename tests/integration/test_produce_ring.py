"""The shared-memory produce ring against real SPU processes: the same log as the socket byte for
byte, the socket's answers (ReadCommitted, timeouts, NotLeader, a bad CRC), a garbage ring closes
only its own link, leader kills under an idempotent producer, and no descriptor left behind.

Raw links (client/_spu_link.py SpuLink, with and without a ring) send pre-built batches, so the
two paths store the very same bytes; ``RILLET_PRODUCE_RING=0`` makes producers use the socket.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time

import pytest

from rillet import ConsumerConfig, Offset, TopicProducerConfigBuilder
from rillet._ring_channel import ring_capacity
from rillet._spu_link import SpuLink
from rillet.ipc import messages as m
from rillet.ipc.errors import CorruptBatch, ProtocolError, NotLeader, RequestTimedOut
from rillet.ipc.records import BatchBuilder
from rillet.testing import LocalCluster

from ._traffic import KeyedSender, assert_stored_once_in_key_order, exactly_once_config

SPU = 5001


class Answers:
    def __init__(self) -> None:
        self.got: dict[object, object] = {}
        self.cond = threading.Condition()

    def on_answer(self, token, reply) -> None:
        with self.cond:
            self.got[token] = reply
            self.cond.notify_all()

    on_error = on_answer

    def wait(self, tokens, link: SpuLink, timeout_s: float = 10.0) -> list:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not all(t in self.got for t in tokens) and time.monotonic() < deadline:
                link.urge()
                self.cond.wait(0.05)
        return [self.got.get(t) for t in tokens]


def open_link(cluster, answers: Answers, ring: bool, spu: int = SPU, timeout_s: float = 10.0,
              capacity: int = 0, min_bytes: int = 0) -> SpuLink:
    """A raw link; with ``ring``, every produce request goes through it (``min_bytes`` 0)
    unless a ``min_bytes`` is given (then small ones go on the socket while it is drained)."""
    link = SpuLink(spu, str(cluster.paths.spu_socket(spu)), request_timeout_s=timeout_s, timeout_note="test",
                   on_answer=answers.on_answer, on_error=answers.on_error,
                   ring_capacity=(capacity or ring_capacity(1 << 20)) if ring else 0, ring_min_bytes=min_bytes)
    deadline = time.monotonic() + 10
    while ring and link._ring is None:          # the RingAttach answer is read like any other
        assert time.monotonic() < deadline and not link.broken, "the SPU did not take the ring"
        link.urge()
        time.sleep(0.005)
    return link


def produce(topic, partition, payload, isolation=m.ISOLATION_READ_UNCOMMITTED, timeout_ms=5000):
    return lambda cid: m.ProduceRequest(cid, topic, partition, isolation, timeout_ms, memoryview(payload))


def batches() -> list[bytes]:
    """Keyed and keyless records, headers, four codecs, sizes from a few bytes to 200 KiB."""
    out = []
    for i, codec in enumerate(["none", "gzip", "lz4", "zstd", "snappy", "none"]):
        builder = BatchBuilder(codec)
        for j in range(1 + i * 7):
            key = None if j % 3 == 0 else f"k{j}".encode()
            builder.append(key, bytes([i + j]) * (j * 97 % 3000), 1_700_000_000_000 + j,
                           headers=[(b"h", f"{i}-{j}".encode())] if j % 2 else None)
        out.append(builder.build())
    big = BatchBuilder()
    big.append(b"big", os.urandom(200_000), 1_700_000_000_000)
    out.append(big.build())
    return out


def log_bytes(cluster, topic: str, partition: int) -> bytes:
    directory = cluster.paths.replica_dir(SPU, topic, partition)
    return b"".join((directory / name).read_bytes() for name in sorted(os.listdir(directory)) if name.endswith(".log"))


def test_the_ring_and_the_socket_store_byte_identical_logs(cluster):
    """All through the ring, all on the socket, and mixed (small requests on the socket while the
    ring is drained, as producers send): the same bytes in the same order."""
    payloads = batches()
    assert min(map(len, payloads)) < 4096 <= max(map(len, payloads))
    for name, ring, min_bytes in (("same-ring", True, 0), ("same-socket", False, 0), ("same-mixed", True, 4096)):
        cluster.create_topic(name, partitions=3)
        answers = Answers()
        link = open_link(cluster, answers, ring, min_bytes=min_bytes)
        try:
            assert (link._ring is not None) is ring
            tokens = [(name, i) for i in range(len(payloads) * 2)]
            for token in tokens:
                assert link.submit(token, produce(name, token[1] % 3, payloads[token[1] % len(payloads)]))
                if min_bytes and token[1] % 2:
                    answers.wait([token], link)      # drained: the next small one takes the socket
            replies = answers.wait(tokens, link)
        finally:
            link.close()
        assert all(isinstance(r, m.ProduceResponse) for r in replies), replies
    for p in range(3):
        assert log_bytes(cluster, "same-ring", p) == log_bytes(cluster, "same-socket", p)
        assert log_bytes(cluster, "same-mixed", p) == log_bytes(cluster, "same-socket", p)
    assert len(log_bytes(cluster, "same-ring", 0)) > 0


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_errors_are_answered_as_on_the_socket_and_the_link_goes_on(cluster, ring):
    topic = f"errors-{'ring' if ring else 'socket'}"
    cluster.create_topic(topic)
    good = BatchBuilder()
    good.append(None, b"ok", 1000)
    good = good.build()
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    answers = Answers()
    link = open_link(cluster, answers, ring)
    try:
        link.submit("nosuch", produce("no-such-topic", 0, good))
        link.submit("crc", produce(topic, 0, bytes(bad_crc)))
        link.submit("committed", produce(topic, 0, good, m.ISOLATION_READ_COMMITTED))
        link.submit("after", produce(topic, 0, good))
        nosuch, crc, committed, after = answers.wait(["nosuch", "crc", "committed", "after"], link)
    finally:
        link.close()
    assert isinstance(nosuch, m.ErrorResponse) and nosuch.code == NotLeader.code
    assert isinstance(crc, m.ErrorResponse) and crc.code == CorruptBatch.code
    assert isinstance(committed, m.ProduceResponse) and committed.base_offset == 0 and committed.hw == 1
    assert isinstance(after, m.ProduceResponse) and after.base_offset == 1


def test_a_garbage_ring_closes_its_own_link_and_the_spu_serves_on(cluster):
    cluster.create_topic("garbage")
    pid = cluster.spu_pid(SPU)
    answers = Answers()
    link = open_link(cluster, answers, ring=True)
    try:
        good = BatchBuilder()
        good.append(None, b"x", 1000)
        with link._lock:                     # an entry whose length runs past what is published
            session = link._session
            msg = m.ProduceRequest(session.next_cid(), "garbage", 0, 0, 1000, memoryview(good.build()))
            session.register(msg, "bad", time.monotonic())
            writer = link._ring.writer
            at = writer.write_pos % writer.capacity
            assert writer.put(msg.cid, b"garbage", 0, 0, 1000, msg.batches)
            struct.pack_into("<I", writer.data, at, 1 << 20)
            link._ring.publish()
        (reply,) = answers.wait(["bad"], link)
        assert isinstance(reply, ProtocolError) and "produce ring: entry of 1048576 bytes" in str(reply), reply
        assert link.broken
    finally:
        link.close()
    assert cluster.spu_pid(SPU) == pid
    with cluster.fluvio().topic_producer("garbage") as producer:
        producer.send(None, b"after").wait(10)
    config = ConsumerConfig()
    config.disable_continuous()
    stream = cluster.fluvio().partition_consumer("garbage", 0).stream_with_config(Offset.beginning(), config)
    assert [r.value() for r in stream] == [b"after"]


def _fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled() -> int:
    """This process's descriptor count once closed links' threads have ended (they close theirs)."""
    last, deadline = -1, time.monotonic() + 5
    while (now := _fds()) != last and time.monotonic() < deadline:
        last = now
        time.sleep(0.2)
    return now


def test_no_descriptor_is_left_in_the_producer_or_the_spu(cluster):
    cluster.create_topic("fds")
    spu_pid = cluster.spu_pid(SPU)
    fluvio = cluster.fluvio()
    config = TopicProducerConfigBuilder().linger(0).build()     # the default 100 ms linger is all waiting
    with fluvio.topic_producer_with_config("fds", config) as producer:   # warm-up: the client's lasting descriptors
        producer.send(None, b"w").wait(10)
    mine, spu = _settled(), _fds(spu_pid)
    for i in range(20):
        producer = fluvio.topic_producer_with_config("fds", config)
        for _ in range(3):
            producer.send(None, b"v" * 100).wait(10)
        assert any(link._ring is not None for link in producer._core.links.values()), "no ring attached"
        producer.close()
    deadline = time.monotonic() + 5
    while (_fds(), _fds(spu_pid)) != (mine, spu) and time.monotonic() < deadline:
        time.sleep(0.05)                 # link threads close theirs as they end; the SPU as it sees them
    assert (_fds(), _fds(spu_pid)) == (mine, spu)
    assert not [n for n in os.listdir("/dev/shm") if "produce-ring" in n]


def test_read_committed_acks_and_timeouts_as_on_the_socket(tmp_path):
    with LocalCluster(spus=2, home=tmp_path) as cluster:
        cluster.create_topic("slow", replication=2)
        with cluster.admin() as admin:
            leader = admin.list_partitions(["slow"])[0].leader
        follower = 5001 + 5002 - leader
        good = BatchBuilder()
        good.append(None, b"v", 1000)
        good = good.build()
        answers = Answers()
        links = {ring: open_link(cluster, answers, ring, spu=leader) for ring in (True, False)}
        for ring, link in links.items():          # acknowledged once the follower has it (a waiter)
            link.submit(("ok", ring), produce("slow", 0, good, m.ISOLATION_READ_COMMITTED))
        acked = [answers.wait([("ok", ring)], links[ring])[0] for ring in (True, False)]
        assert sorted(r.base_offset for r in acked) == [0, 1] and all(r.hw >= r.base_offset + 1 for r in acked)
        follower_pid = cluster.spu_pid(follower)    # once: the SC lists a silent (stopped) SPU without its pid
        os.kill(follower_pid, signal.SIGSTOP)
        try:
            for ring, link in links.items():
                link.submit(ring, produce("slow", 0, good, m.ISOLATION_READ_COMMITTED, timeout_ms=300))
            replies = [answers.wait([ring], links[ring])[0] for ring in (True, False)]
        finally:
            os.kill(follower_pid, signal.SIGCONT)
            for link in links.values():
                link.close()
        assert [(type(r), getattr(r, "code", None)) for r in replies] == [(m.ErrorResponse, RequestTimedOut.code)] * 2


def test_an_idempotent_producer_through_leader_kills_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RILLET_PRODUCE_RING_MIN_BYTES", "0")     # these small batches through the ring too
    with LocalCluster(spus=3, home=tmp_path) as cluster:
        topic = "ring-kills"
        cluster.create_topic(topic, partitions=2, replication=3)
        producer = cluster.fluvio().topic_producer_with_config(topic, exactly_once_config())
        sender = KeyedSender(producer)
        rings = 0
        try:
            for _ in range(2):
                time.sleep(0.4)
                rings += sum(link._ring is not None and link._ring.writer.write_pos > 0
                             for link in list(producer._core.links.values()))
                with cluster.admin() as admin:
                    leader = admin.list_partitions([topic])[0].leader
                cluster.kill_spu(leader)
                time.sleep(0.3)
                cluster.start_spu(leader)
        finally:
            sender.stop()
        producer.flush(timeout=40)                     # raises if any record failed
        producer.close()
        assert rings >= 2, "the producer's links had no ring"
        assert_stored_once_in_key_order(cluster.fluvio(), topic, 2, sender.sent)


def test_an_spu_without_rings_leaves_the_link_on_the_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("RILLET_PRODUCE_RING", "0")     # the SPUs started here inherit it
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        assert not cluster.paths.spu_ring_socket(SPU).exists()
        cluster.create_topic("plain")
        monkeypatch.delenv("RILLET_PRODUCE_RING")       # this producer asks for a ring
        with cluster.fluvio().topic_producer("plain") as producer:
            producer.send(None, b"v").wait(10)
            assert [link._ring for link in producer._core.links.values()] == [None]


@pytest.mark.parametrize("capacity", [0, 256 * 1024], ids=["default", "small"])
def test_a_ring_link_puts_its_batches_through_the_ring(cluster, capacity):
    """Each batch is stored once, so batches that went through the ring did not cross the socket.
    A ring of four batches fills at once: the rest wait for room, in order."""
    topic = f"through-ring-{capacity}"
    cluster.create_topic(topic)
    payload = BatchBuilder()
    payload.append(None, os.urandom(64 * 1024), 1000)
    payload = payload.build()
    answers = Answers()
    link = open_link(cluster, answers, ring=True, capacity=capacity)
    try:
        before = link._ring.writer.write_pos
        tokens = list(range(80))
        for token in tokens:
            link.submit(token, produce(topic, 0, payload))
        replies = answers.wait(tokens, link)
        assert [r.base_offset for r in replies] == tokens
        assert link._ring.writer.write_pos - before >= 80 * len(payload)     # every batch, through wraps
        assert link._ring.writer.write_pos > link._ring.capacity
    finally:
        link.close()


def _hand_over(cluster, fds, nonce: bytes) -> bytes:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(cluster.paths.spu_ring_socket(SPU)))
        socket.send_fds(sock, [b"RRNG\x01" + nonce], fds)
        return sock.recv(1)


def test_a_bad_hand_over_is_refused_with_a_clear_error(cluster):
    """An unsealed memfd (it could shrink under the SPU's map), a size that does not match, a
    pipe for an eventfd, a nonce never handed over: each RingAttach gets InvalidArgument, and
    the SPU serves on."""
    import fcntl

    from rillet.ipc.connection import Connection
    from rillet.ipc.errors import InvalidArgument
    from rillet.ipc.produce_ring import ring_bytes
    cluster.create_topic("hand-over")
    cap = 64 * 1024
    unsealed = os.memfd_create("test-ring", os.MFD_CLOEXEC)
    os.ftruncate(unsealed, ring_bytes(cap))
    sealed = os.memfd_create("test-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(sealed, ring_bytes(cap))
    fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    efd, efd2 = os.eventfd(0), os.eventfd(0)
    r, w = os.pipe()
    try:
        cases = [([unsealed, efd, efd2], cap, "not sealed"), ([sealed, r, efd2], cap, "must be eventfds"),
                 ([sealed, efd, efd2], 2 * cap, "not a file of")]
        with Connection(cluster.paths.spu_socket(SPU), timeout_s=5) as conn:
            for fds, capacity, match in cases:
                nonce = os.urandom(16)
                assert _hand_over(cluster, fds, nonce) == b"\x01"
                with pytest.raises(InvalidArgument, match=match):
                    conn.call(m.RingAttach(conn.next_cid(), nonce, capacity))
            with pytest.raises(InvalidArgument, match="no produce ring was handed over"):
                conn.call(m.RingAttach(conn.next_cid(), os.urandom(16), cap))
    finally:
        for fd in (unsealed, sealed, efd, efd2, r, w):
            os.close(fd)
    with cluster.fluvio().topic_producer("hand-over") as producer:     # the SPU serves on
        producer.send(None, b"still").wait(10)


def test_a_link_closed_before_the_ring_is_attached_fails_only_its_requests(cluster):
    """The link's own RingAttach is pending like a request; a link that ends before its answer
    must fail the producer's requests, never hand the RingAttach to on_error (the producer's
    handler would raise on it in the link thread and leave the requests after it unresolved)."""
    from rillet._spu_link import _RING_TOKEN
    cluster.create_topic("early-close")
    good = BatchBuilder()
    good.append(None, b"v", 1000)
    good = good.build()
    for _ in range(5):
        answers = Answers()
        link = SpuLink(SPU, str(cluster.paths.spu_socket(SPU)), request_timeout_s=10, timeout_note="test",
                       on_answer=answers.on_answer, on_error=answers.on_error, ring_capacity=ring_capacity(1 << 20))
        link.submit("a", produce("early-close", 0, good))
        link.close()
        link._thread.join(10)
        assert _RING_TOKEN not in answers.got
        assert "a" in answers.got


def test_a_busy_link_moves_to_the_ring_though_a_socket_request_is_unanswered(cluster):
    """A producer whose pipeline never empties: a small request on the socket is still unanswered
    when the big ones come. They go to the ring and wait there until it is answered (order kept),
    instead of following it onto the socket for as long as the pipeline stays full."""
    topic = "busy-ring"
    cluster.create_topic(topic)
    small, big = BatchBuilder(), BatchBuilder()
    small.append(None, b"first", 1000)
    big.append(None, os.urandom(64 * 1024), 1000)
    small, big = small.build(), big.build()
    answers = Answers()
    link = open_link(cluster, answers, ring=True, min_bytes=4096)
    try:
        before = link._ring.writer.write_pos
        link.submit("small", produce(topic, 0, small), write=False)      # on the socket, not yet answered
        tokens = list(range(20))
        for token in tokens:
            link.submit(token, produce(topic, 0, big), write=False)
        link.write_out()
        replies = answers.wait(["small", *tokens], link)
        assert [r.base_offset for r in replies] == list(range(21))        # the socket's first, then in order
        assert link._ring.writer.write_pos - before >= 20 * len(big)      # every big one through the ring
    finally:
        link.close()


def test_a_producer_refuses_a_ring_setting_it_does_not_understand(cluster, monkeypatch):
    """Read when the producer is made, so the error comes before any record is queued."""
    from rillet import InvalidArgument
    cluster.create_topic("bad-env")
    monkeypatch.setenv("RILLET_PRODUCE_RING_MIN_BYTES", "4k")
    with pytest.raises(InvalidArgument, match="RILLET_PRODUCE_RING_MIN_BYTES='4k'"):
        cluster.fluvio().topic_producer("bad-env")
    monkeypatch.setenv("RILLET_PRODUCE_RING_MIN_BYTES", "4096")
    with cluster.fluvio().topic_producer("bad-env") as producer:
        assert producer.send(None, b"fine").wait(10).offset() == 0
