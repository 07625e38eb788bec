"""Connection against a scripted peer on a real Unix socket: large answers read straight
into their own buffer, in pieces, kept or dropped; poll(); a peer that stops mid-frame."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

import msgspec
import pytest

from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import BrokenConnection, Timeout
from rillet.ipc.framing import NEED_DATA, FrameDecoder, encode_frame


class Peer:
    """Accepts one connection, answers Hello, then sends what the test scripts."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.sock: socket.socket | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock, _ = self.listener.accept()
        frames = FrameDecoder()
        while (frame := frames.next_frame()) is NEED_DATA:
            frames.receive_data(self.sock.recv(4096))
        hello = msgspec.msgpack.decode(frame, type=m.Message)
        self.sock.sendall(encode_frame(msgspec.msgpack.encode(m.HelloOk(hello.cid, m.PROTOCOL_VERSION, "peer"))))
        self.ready.set()

    def send_in_pieces(self, wire: bytes, piece: int, pause_s: float = 0.0) -> None:
        self.ready.wait(5)
        for i in range(0, len(wire), piece):
            self.sock.sendall(wire[i:i + piece])
            if pause_s:
                time.sleep(pause_s)

    def close(self) -> None:
        for s in (self.sock, self.listener):
            if s is not None:
                s.close()


@pytest.fixture
def peer_and_conn():
    directory = tempfile.mkdtemp(prefix="rillet-conn-")       # short: Unix socket paths are limited
    peer = conn = None
    try:                                   # the directory goes also when the set-up itself fails
        path = os.path.join(directory, "peer.sock")
        peer = Peer(path)
        conn = Connection(path, timeout_s=5)
        yield peer, conn
    finally:
        if conn is not None:
            conn.close()
        if peer is not None:
            peer.close()
        shutil.rmtree(directory, ignore_errors=True)


def answer(cid: int, fill: int, size: int) -> bytes:
    msg = m.FetchResponse(cid, 1, 2, 0, memoryview(bytes([fill]) * size))
    return encode_frame(msgspec.msgpack.encode(msg))


def test_large_answers_arrive_whole_and_earlier_ones_stay_intact(peer_and_conn):
    peer, conn = peer_and_conn
    wires = [answer(cid, cid, 300_000 + 1000 * cid) for cid in (1, 2, 3)]
    threading.Thread(target=lambda: [peer.send_in_pieces(w, 50_000, 0.001) for w in wires], daemon=True).start()
    first = conn.recv()
    second = conn.recv()
    assert (first.cid, bytes(first.batches)) == (1, bytes([1]) * 301_000)   # not overwritten by the second
    assert (second.cid, bytes(second.batches)) == (2, bytes([2]) * 302_000)
    del first, second
    third = conn.recv()
    assert (third.cid, bytes(third.batches)) == (3, bytes([3]) * 303_000)


def test_small_and_large_answers_interleaved_in_one_write(peer_and_conn):
    peer, conn = peer_and_conn
    wire = answer(1, 7, 10) + answer(2, 8, 200_000) + answer(3, 9, 5)
    peer.send_in_pieces(wire, len(wire))
    assert [(r.cid, len(r.batches)) for r in (conn.recv(), conn.recv(), conn.recv())] == [(1, 10), (2, 200_000), (3, 5)]


def test_poll_returns_an_answer_only_once_it_is_whole(peer_and_conn):
    peer, conn = peer_and_conn
    wire = answer(4, 1, 150_000)
    peer.send_in_pieces(wire[:70_000], 70_000)
    deadline = time.monotonic() + 5
    while conn._session.buffered_bytes < 70_000 and time.monotonic() < deadline:
        assert conn.poll() is None
    assert conn.poll() is None
    peer.send_in_pieces(wire[70_000:], 100_000)
    reply = None
    while reply is None and time.monotonic() < deadline:
        reply = conn.poll()
    assert reply.cid == 4 and bytes(reply.batches) == bytes([1]) * 150_000


def test_peer_closing_inside_a_large_answer(peer_and_conn):
    peer, conn = peer_and_conn
    peer.send_in_pieces(answer(5, 1, 200_000)[:120_000], 60_000)
    peer.sock.close()
    with pytest.raises(BrokenConnection, match="closed by the peer"):
        conn.recv()
    assert conn.closed


def test_silent_peer_inside_a_large_answer_is_a_timeout(peer_and_conn):
    peer, conn = peer_and_conn
    peer.send_in_pieces(answer(6, 1, 200_000)[:100_000], 100_000)
    with pytest.raises(Timeout, match="within 0.2 s"):
        conn.recv(timeout_s=0.2)
