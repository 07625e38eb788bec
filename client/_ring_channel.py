"""A producer link's produce ring, the client's end (layout and protocol: ipc/produce_ring.py).

``RingChannel.offer`` makes the ring's memory (a memfd, sealed so it can never shrink under
the SPU's map) and two eventfds ("data": the producer wakes the SPU; "room": the SPU wakes
the producer waiting for room), and hands the three to the SPU over its ring socket
(broker/spu/produce_ring.py). Nothing has a name in /dev/shm, and the kernel frees all of
it when the last of the two processes closes it: no leak when either dies. The link
(client/_spu_link.py) then sends RingAttach with the nonce on its connection and, once
answered, puts that connection's produce requests here.

``RILLET_PRODUCE_RING=0`` in a producer's environment keeps its links on the socket;
``RILLET_PRODUCE_RING_BYTES`` sets the smallest data area (default 4 MiB; it is always
large enough for two of the largest requests the producer may send).
"""

from __future__ import annotations

import fcntl
from collections import deque
import mmap
import os
import socket

from rillet.ipc import env
from rillet.ipc import messages as m
from rillet.ipc.names import ring_socket_path
from rillet.ipc.produce_ring import RingWriter, capacity_for, init_header, ring_bytes

HANDOVER = b"RRNG\x01"
DEFAULT_MIN_BYTES = 4 << 20
_HANDOVER_TIMEOUT_S = 1.0
_ONE = (1).to_bytes(8, "little")


def ring_wanted(environ=os.environ) -> bool:
    return env.switch("RILLET_PRODUCE_RING", True, environ)


def ring_capacity(max_request_bytes: int, environ=os.environ) -> int:
    minimum = env.byte_count("RILLET_PRODUCE_RING_BYTES", DEFAULT_MIN_BYTES, environ)
    return capacity_for(max_request_bytes, max(minimum, 64 * 1024))


def ring_min_bytes(default: int, environ=os.environ) -> int:
    """``RILLET_PRODUCE_RING_MIN_BYTES``: requests below it go on the socket while the ring is
    drained (0: every request through the ring; tests and A/B)."""
    return env.byte_count("RILLET_PRODUCE_RING_MIN_BYTES", default, environ)


class RingChannel:
    """The memory, the writer and the two eventfds of one link's ring."""

    def __init__(self, capacity: int) -> None:
        size = ring_bytes(capacity)
        memfd = os.memfd_create("rillet-produce-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.data_fd = self.room_fd = -1
        try:
            os.ftruncate(memfd, size)
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._map = mmap.mmap(memfd, size)
            self.data_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.room_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._memfd = memfd
        except BaseException:
            os.close(memfd)
            self._close_fds()
            raise
        init_header(self._map, capacity)
        self.capacity = capacity
        self.writer = RingWriter(self._map, capacity)
        self.nonce = os.urandom(16)
        self.backlog: deque = deque()   # requests not yet written (queued, or waiting for room), in order
        self._waiting = False           # the producer_waiting flag is set
        self._topics: dict[str, bytes] = {}     # a producer sends to one topic: encode it once

    @classmethod
    def offer(cls, spu_socket: str, capacity: int) -> "RingChannel":
        """Make a ring and hand it to the SPU; OSError when the SPU does not take it."""
        channel = cls(capacity)
        try:
            channel._hand_over(str(ring_socket_path(spu_socket)))
        except BaseException:
            channel.close()
            raise
        return channel

    def _hand_over(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(_HANDOVER_TIMEOUT_S)
            sock.connect(path)
            fds = [self._memfd, self.data_fd, self.room_fd]
            socket.send_fds(sock, [HANDOVER + self.nonce], fds)
            if sock.recv(1) != b"\x01":
                raise ConnectionRefusedError("the SPU refused the produce ring")
        finally:
            sock.close()
        os.close(self._memfd)            # the SPU holds its own now; the map keeps ours alive
        self._memfd = -1

    def attach_request(self, cid: int) -> m.RingAttach:
        return m.RingAttach(cid, self.nonce, self.capacity)

    def queue(self, msg: m.ProduceRequest) -> None:
        """Queue ``msg`` behind the others; ``put_backlog`` writes it (a caller holding its own
        lock queues, and writes once it released it: no copy under the producer's lock)."""
        self.backlog.append(msg)

    def put_backlog(self) -> None:
        """Write what is queued, in order, as far as it fits now; the rest waits for room (the
        link thread writes it when the SPU's room eventfd says it freed some)."""
        backlog, writer = self.backlog, self.writer
        while backlog:
            msg = backlog[0]
            topic = self._topics.get(msg.topic)
            if topic is None:
                topic = self._topics[msg.topic] = msg.topic.encode()
            if not writer.put(msg.cid, topic, msg.partition, msg.isolation, msg.timeout_ms, msg.batches):
                if self._waiting:
                    return
                writer.wait_for_room()       # then look again: room may have come before the flag
                self._waiting = True
                continue
            backlog.popleft()
        if self._waiting:
            writer.room_seen()
            self._waiting = False

    def publish(self) -> None:
        """Write what is queued and publish it; wake the SPU if it sleeps."""
        if self.backlog:
            self.put_backlog()
        if self.writer.unpublished and self.writer.publish():
            try:
                os.write(self.data_fd, _ONE)
            except OSError:
                pass                     # a full counter (never, in practice) wakes the SPU anyway

    def drained(self) -> bool:
        """Nothing queued, and every request written handled by the SPU."""
        return not self.backlog and self.writer.drained()

    def take_room(self) -> None:
        try:
            os.read(self.room_fd, 8)
        except OSError:
            pass

    def close(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.release()
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None
        if getattr(self, "_memfd", -1) >= 0:
            os.close(self._memfd)
            self._memfd = -1
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("data_fd", "room_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
