"""Connection slots and memory bounds: a crowd or a greedy peer cannot starve the cluster (issue 10).

Each test starts its own 1-SPU cluster with small limits (the RILLET_* variables the broker reads
at start), so the cases run in seconds with a handful of sockets.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import msgspec
import psutil
import pytest

from rillet.ipc import messages as m
from rillet.ipc.framing import encode_message
from rillet.testing import LocalCluster

SPU = 5001


def hello_frame(client_id: str) -> bytes:
    payload = msgspec.msgpack.encode(m.Hello(1, m.PROTOCOL_VERSION, client_id))
    return struct.pack("<I", len(payload)) + payload


def raw(path, first: bytes = b"", timeout_s: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    s.connect(str(path))
    if first:
        s.sendall(first)
    return s


def closed_by_server(s: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sent until it closed the socket (fails if it stays open)."""
    s.settimeout(limit_s)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def spu_rss(cluster) -> int:
    return psutil.Process(cluster.spu_pid(SPU)).memory_info().rss


@pytest.fixture
def small_limits(tmp_path, monkeypatch):
    def start(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"RILLET_{key.upper()}", str(value))
        return LocalCluster(spus=1, home=tmp_path)
    return start


def test_idle_clients_cannot_lock_out_the_cluster_or_each_other(small_limits):
    with small_limits(max_connections=8, idle_after_s=1) as cluster:
        cluster.create_topic("crowd")
        crowd = [raw(cluster.paths.spu_socket(SPU), hello_frame("rillet-py")) for _ in range(8)]
        for s in crowd:
            assert s.recv(1000)                                 # HelloOk: all eight admitted
        refused = raw(cluster.paths.spu_socket(SPU), hello_frame("rillet-py"))
        assert b"max_connections=8" in closed_by_server(refused)
        # The cluster's own links use reserved slots: the admin CLI still answers...
        done = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "partition", "list"], env=cluster.env,
                              capture_output=True, timeout=60)
        assert done.returncode == 0 and b"crowd" in done.stdout, done.stderr
        # ...and once the crowd has idled past the limit, a producer gets in: idle ones make room.
        time.sleep(1.5)
        with cluster.fluvio().topic_producer("crowd") as producer:
            assert producer.send(None, b"made room").wait(timeout=10).offset() == 0
        assert b"idle" in closed_by_server(crowd[0])
        for s in crowd:
            s.close()


def test_a_connection_that_never_greets_is_closed(small_limits):
    with small_limits(hello_deadline_s=0.5) as cluster:
        s = raw(cluster.paths.spu_socket(SPU))
        t0 = time.monotonic()
        assert b"no Hello" in closed_by_server(s)
        assert time.monotonic() - t0 < 4


def test_one_process_cannot_take_every_slot(small_limits):
    with small_limits(max_connections_per_peer=5) as cluster:
        mine = [raw(cluster.paths.spu_socket(SPU)) for _ in range(5)]
        sixth = raw(cluster.paths.spu_socket(SPU))
        assert b"max_connections_per_peer=5" in closed_by_server(sixth)
        for s in mine:
            s.close()


def test_unfinished_requests_are_bounded_per_process(small_limits):
    """Peers announcing huge frames and sending part of them: memory follows a budget, not the prefixes."""
    with small_limits(max_buffered_request_bytes=8 << 20) as cluster:
        cluster.create_topic("busy")
        before = spu_rss(cluster)
        body = b"\0" * (3 << 20)
        greedy = []
        for _ in range(6):                                  # each announces 60 MiB and sends 3 MiB
            s = raw(cluster.paths.spu_socket(SPU), hello_frame("rillet-py") + struct.pack("<I", 60 << 20))
            try:
                s.sendall(body)
            except OSError:
                pass
            greedy.append(s)
        time.sleep(0.5)
        closed = 0
        for s in greedy:
            s.settimeout(0.5)
            try:
                while s.recv(65536):
                    pass
            except socket.timeout:
                continue                                    # still open: under the budget
            except ConnectionResetError:
                pass                                        # closed with our unread bytes in its buffer
            closed += 1
        assert closed >= 4, closed                          # 8 MiB holds at most two 3 MiB bodies
        with cluster.fluvio().topic_producer("busy") as producer:
            assert producer.send(None, b"still serving").wait(timeout=10) is not None
        assert spu_rss(cluster) - before < 64 << 20
        for s in greedy:
            s.close()


def test_a_reader_that_never_reads_does_not_grow_the_spu(small_limits):
    """100 large fetches on one socket that is never read: answers wait, requests stop being read."""
    with small_limits() as cluster:
        cluster.create_topic("big")
        with cluster.fluvio().topic_producer("big") as producer:
            producer.send_all([(None, b"x" * 60_000)] * 70)        # ~4 MiB
        before = spu_rss(cluster)
        encoder = msgspec.msgpack.Encoder()
        fetches = b"".join(bytes(encode_message(encoder, m.FetchRequest(cid, "big", 0, 0, 8 << 20, 0, 0)))
                           for cid in range(2, 102))
        conn = raw(cluster.paths.spu_socket(SPU), hello_frame("rillet-py") + fetches)   # a few KiB: sent at once
        time.sleep(1.0)
        grown = spu_rss(cluster) - before
        assert grown < 100 << 20, f"SPU RSS grew by {grown >> 20} MiB"
        with cluster.fluvio().topic_producer("big") as producer:     # others are still served
            assert producer.send(None, b"fine").wait(timeout=10) is not None
        conn.close()
