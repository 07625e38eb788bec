"""An SPU survives malformed input on one connection and keeps serving the others."""

from __future__ import annotations

import socket
import struct

import msgspec
import pytest

from rillet import ConsumerConfig, Offset
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import CorruptBatch, ProtocolError

SPU = 5001


def raw_exchange(path, payload: bytes) -> bytes:
    """Send bytes, return whatever comes back before the SPU closes (or 2 s pass)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(str(path))
    s.sendall(payload)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except socket.timeout:
        pass
    s.close()
    return got


def decode_frames(data: bytes) -> list:
    out, dec = [], m.new_decoder()
    while len(data) >= 4:
        (n,) = struct.unpack_from("<I", data)
        out.append(dec.decode(data[4:4 + n]))
        data = data[4 + n:]
    return out


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


HELLO = frame(msgspec.msgpack.encode(m.Hello(1, m.PROTOCOL_VERSION, "test")))


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff" + b"x" * 10,                       # frame far over the size limit
    frame(b"\xc1\xc1\xc1"),                                # not msgpack
    frame(msgspec.msgpack.encode([999, 1, 2])),            # unknown message tag
    HELLO + frame(b"\x92\x0a"),                            # truncated produce request
    frame(msgspec.msgpack.encode(m.FetchRequest(1, "t", 0, 0, 100, 0, 0))),  # no Hello first
    frame(b""),                                            # zero-length frame
])
def test_malformed_input_gets_an_error_and_a_close(cluster, garbage):
    cluster.create_topic("sturdy") if "sturdy" not in [t.name() for t in cluster.admin().all_topics()] else None
    reply = raw_exchange(cluster.paths.spu_socket(SPU), garbage)
    messages = decode_frames(reply)
    assert messages, "the SPU should answer before closing"
    assert isinstance(messages[-1], m.ErrorResponse)
    # ...and the SPU still serves a well-behaved client.
    fluvio = cluster.fluvio()
    with fluvio.topic_producer("sturdy") as producer:
        assert producer.send(None, b"still alive").wait(timeout=10) is not None


def test_corrupt_batch_is_refused_and_nothing_is_written(cluster):
    cluster.create_topic("crc")
    conn = Connection(cluster.paths.spu_socket(SPU))
    from rillet.ipc.records import BatchBuilder
    b = BatchBuilder()
    b.append(None, b"payload", 0)
    batch = bytearray(b.build())
    batch[-1] ^= 0xFF                                       # flip a bit in the records: CRC must catch it
    with pytest.raises(CorruptBatch):
        conn.call(m.ProduceRequest(conn.next_cid(), "crc", 0, 0, 1000, memoryview(bytes(batch))))
    reply = conn.call(m.OffsetsRequest(conn.next_cid(), "crc", 0))
    assert reply.leo == 0
    conn.close()


def test_unknown_request_type_for_spu_is_refused(cluster):
    conn = Connection(cluster.paths.spu_socket(SPU))
    with pytest.raises(ProtocolError):
        conn.call(m.ListTopics(conn.next_cid(), []))


def test_a_half_sent_frame_is_cut_off_after_the_deadline(tmp_path, monkeypatch):
    from rillet.testing import LocalCluster
    monkeypatch.setenv("RILLET_FRAME_DEADLINE_S", "0.5")
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(cluster.paths.spu_socket(SPU)))
        s.sendall(HELLO + struct.pack("<I", 1000) + b"only part")   # announces 1000 bytes, sends 9
        got = b""
        while chunk := s.recv(65536):                               # the SPU closes: recv returns b""
            got += chunk
        s.close()
        messages = decode_frames(got)
        assert isinstance(messages[-1], m.ErrorResponse) and "not completed" in messages[-1].message


def test_many_connections_leave_the_spu_serving(cluster):
    cluster.create_topic("crowd")
    socks = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(cluster.paths.spu_socket(SPU)))
            socks.append(s)
        with cluster.fluvio().topic_producer("crowd") as producer:
            assert producer.send(None, b"busy but fine").wait(timeout=10) is not None
    finally:
        for s in socks:
            s.close()


def test_in_flight_requests_per_connection_are_bounded(cluster):
    from rillet.ipc.transport import MAX_IN_FLIGHT
    cluster.create_topic("polls")
    conn = Connection(cluster.paths.spu_socket(SPU))
    for _ in range(MAX_IN_FLIGHT + 5):          # long polls on an empty partition: each one waits
        conn.send(m.FetchRequest(conn.next_cid(), "polls", 0, 0, 1024, 0, 5000))
    refused = conn.recv(timeout_s=5)
    assert isinstance(refused, m.ErrorResponse) and "max_in_flight" in refused.message
    conn.close()
    with cluster.fluvio().topic_producer("polls") as producer:   # the SPU still serves others
        assert producer.send(None, b"ok").wait(timeout=10) is not None
