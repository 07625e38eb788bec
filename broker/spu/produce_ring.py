"""The SPU's end of producers' shared-memory produce rings (layout and protocol: ipc/produce_ring.py).

The hand-over: asyncio's transports read with recv(), which drops the descriptors a
client passes with SCM_RIGHTS, so a producer hands its ring (a sealed memfd, its
"data" eventfd and its "room" eventfd) over a second listening socket beside the SPU's
(``rng-<id>.sock``, mode 0600 like it): one message, a nonce and the three descriptors;
the SPU keeps them under the nonce and answers one byte. The producer then sends
RingAttach(nonce) on its ordinary connection, which takes them: the ring belongs to that
connection, its entries are answered there and it closes with it. Descriptors passed
and never attached are closed after PENDING_TTL_S (at most MAX_PENDING are kept). Nothing
has a name: when either process dies the kernel frees the memory.

Draining: the data eventfd is registered on the loop; each entry becomes the ProduceRequest
the socket would have carried and goes through the connection's own handling (fence,
validate-once append straight from the ring's memory, ReadCommitted waits, idempotence),
its answer coalesced with the turn's others. The read position moves as soon as an entry
is handled. At most DRAIN_ENTRIES / DRAIN_BYTES a turn, so other connections are served
between; a connection whose answers pile up unread (write paused) is not drained until it
resumes, so the ring fills and the producer waits: the same back-pressure as the socket.
A ring that breaks the format (RingError) closes its connection with a ProtocolError; the
producer reconnects as after any broken link. A slow timer looks at every ring
(SAFETY_LOOK_S) so a lost wake-up costs latency, never a stall. While no ring moves, that
look backs off to SAFETY_LOOK_MAX_S: the wake-up protocol loses no wake on x86-64 (the look
is insurance for weaker memory orders), and an idle producer's ring must not wake the SPU
ten times a second for nothing.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import mmap
import os
import socket
import stat
import time
from pathlib import Path

from rillet.ipc import messages as m
from rillet.ipc.errors import InvalidArgument, ProtocolError
from rillet.ipc.unix_socket import peer_credentials
from rillet.ipc.produce_ring import HEADER_BYTES, MAX_CAPACITY, MIN_CAPACITY, RingError, RingReader

from .scheduling import Scheduling

HANDOVER = b"RRNG\x01"                  # followed by the 16-byte nonce
NONCE_BYTES = 16
PENDING_TTL_S = 10.0
MAX_PENDING = 256
MAX_HANDOVERS = 64                      # hand-over connections open at once (each holds a descriptor)
DRAIN_ENTRIES = 256
DRAIN_BYTES = 8 << 20
SAFETY_LOOK_S = 0.1                     # the look while rings are in use
SAFETY_LOOK_MAX_S = 1.0                 # idle rings: the interval doubles up to this
_HANDOVER_DEADLINE_S = 2.0


class RingListener:
    """The hand-over socket: takes (nonce, memfd, data eventfd, room eventfd) from clients."""

    def __init__(self, path: str, log: logging.Logger, scheduling: Scheduling | None = None) -> None:
        self.path = path
        self.log = log
        self.scheduling = scheduling             # SCHED_BATCH while rings stream (scheduling.py)
        self._pending: dict[bytes, tuple[int, list[int], float]] = {}   # nonce -> (pid, fds, when)
        self._rings: set[SpuRing] = set()
        self._handovers = 0
        self._loop = asyncio.get_running_loop()
        Path(path).unlink(missing_ok=True)       # our runtime directory (0700): a stale one is ours
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._accept)
        self._timer: asyncio.TimerHandle | None = None     # runs while rings are attached
        self._look_s = SAFETY_LOOK_S
        self._looked: dict[SpuRing, int] = {}                # each ring's read position at the last look

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        try:
            pid, uid, _gid = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if uid != os.getuid() or self._handovers >= MAX_HANDOVERS:
            self.log.warning("ring hand-over refused: pid %d (uid %d; %d hand-overs under way)", pid, uid,
                             self._handovers)
            conn.close()
            return
        self._handovers += 1
        deadline = self._loop.call_later(_HANDOVER_DEADLINE_S, self._drop, conn)
        self._loop.add_reader(conn.fileno(), self._receive, conn, pid, deadline)

    def _drop(self, conn: socket.socket) -> None:
        try:
            self._loop.remove_reader(conn.fileno())
        except (ValueError, OSError):
            pass
        conn.close()
        self._handovers -= 1

    def _receive(self, conn: socket.socket, pid: int, deadline: asyncio.TimerHandle) -> None:
        fds: list[int] = []
        try:
            data, ancillary, _flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(3 * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        deadline.cancel()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
        ok = len(data) == len(HANDOVER) + NONCE_BYTES and data.startswith(HANDOVER) and len(fds) == 3
        if ok:
            self._expire()
            ok = len(self._pending) < MAX_PENDING
        if ok:
            self._pending[bytes(data[len(HANDOVER):])] = (pid, fds, time.monotonic())
            try:
                conn.send(b"\x01")
            except OSError:
                pass
        else:
            _close_all(fds)
        self._drop(conn)

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL_S
        for nonce in [n for n, (_p, _f, at) in self._pending.items() if at < cutoff]:
            _close_all(self._pending.pop(nonce)[1])

    def attach(self, conn, msg: m.RingAttach) -> "SpuRing":
        """Give ``conn`` the ring its process handed over under ``msg.nonce`` (InvalidArgument if none)."""
        entry = self._pending.get(bytes(msg.nonce))
        if entry is None or entry[0] != conn._peer_pid:
            raise InvalidArgument("no produce ring was handed over by this process under that nonce")
        del self._pending[bytes(msg.nonce)]
        try:
            ring = SpuRing(conn, entry[1], msg.capacity, self)
        except InvalidArgument:
            _close_all(entry[1])
            raise
        self._rings.add(ring)
        self._look_s = SAFETY_LOOK_S             # a new ring is about to be used: look at the busy rate
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(SAFETY_LOOK_S, self._safety_look)
        return ring

    def _safety_look(self) -> None:
        """Drain every ring (a lost wake-up costs this interval). The interval is SAFETY_LOOK_S
        while some ring's read position moves (from one look to the next, or in this one),
        and doubles up to SAFETY_LOOK_MAX_S while none does."""
        moved = False
        for ring in list(self._rings):
            before = ring.reader.read_pos
            ring.drain()
            after = ring.reader.read_pos
            moved = moved or after != before or self._looked.get(ring) != before
            if ring in self._rings:              # draining may have closed it
                self._looked[ring] = after
        self._look_s = SAFETY_LOOK_S if moved else min(self._look_s * 2, SAFETY_LOOK_MAX_S)
        if not moved and self.scheduling is not None:
            self.scheduling.quiet()              # the producers stopped streaming: preempt again
        self._timer = self._loop.call_later(self._look_s, self._safety_look) if self._rings else None

    def forget(self, ring: "SpuRing") -> None:
        self._rings.discard(ring)
        self._looked.pop(ring, None)
        if not self._rings and self.scheduling is not None:
            self.scheduling.quiet()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for ring in list(self._rings):
            ring.close()
        for _pid, fds, _at in self._pending.values():
            _close_all(fds)
        self._pending.clear()
        try:
            self._loop.remove_reader(self._sock.fileno())
        except (ValueError, OSError):
            pass
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)


class SpuRing:
    """One attached ring, drained into its connection (server.py SpuConnection)."""

    def __init__(self, conn, fds: list[int], capacity: int, listener: RingListener) -> None:
        memfd, self._data_fd, self._room_fd = fds
        if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity % 8:
            raise InvalidArgument(f"ring capacity {capacity} is outside {MIN_CAPACITY} to {MAX_CAPACITY} bytes "
                                  f"or not a multiple of 8")
        _check_memfd(memfd, HEADER_BYTES + capacity)
        for fd in (self._data_fd, self._room_fd):
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
                raise InvalidArgument("a produce ring's wake-up descriptors must be eventfds")
        os.set_blocking(self._data_fd, False)
        os.set_blocking(self._room_fd, False)
        try:
            self._map = mmap.mmap(memfd, HEADER_BYTES + capacity)
        except OSError as exc:           # the caller closes the three descriptors
            raise InvalidArgument(f"cannot map the produce ring: {exc}") from exc
        os.close(memfd)                  # the map keeps the memory
        self.conn = conn
        self.listener = listener
        self.reader = RingReader(self._map, capacity)
        self.closed = False
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._data_fd, self._readable)

    def _readable(self) -> None:
        try:
            os.read(self._data_fd, 8)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        self.drain()

    def _again(self) -> None:
        self._scheduled = False
        self.drain()

    def drain(self) -> None:
        """Handle the entries published, DRAIN_ENTRIES / DRAIN_BYTES a turn; then sleep or go on later."""
        conn = self.conn
        if self.closed or self._scheduled or conn._write_paused:
            return                       # resume_writing drains again
        reader = self.reader
        reader.wake_up()
        moved = False
        conn._serving = True             # answers are held and written together (transport.py)
        conn.last_active = time.monotonic()
        handle = conn._handle
        try:
            entries = budget = 0
            while True:
                reader.look()
                while (entry := reader.next_entry()) is not None:
                    batch = entry[5]
                    # The very request the socket would have carried, through the same handling.
                    handle(m.ProduceRequest(*entry[:6]))
                    if self.closed:          # the connection went while handling it
                        return
                    moved = True
                    entries += 1
                    budget += len(batch)
                    reader.consumed(entry[6])
                    batch.release()
                    if conn._write_paused or conn.transport is None:
                        return
                    if entries >= DRAIN_ENTRIES or budget >= DRAIN_BYTES:
                        self._scheduled = True           # stays awake: producers need not wake it
                        self._loop.call_soon(self._again)
                        return
                if reader.sleep():
                    return
        except RingError as exc:
            self._broken(f"produce ring: {exc}")
        except Exception as exc:         # a bug must close this ring, never stall or crash the SPU
            conn.log.exception("draining a produce ring failed")
            self._broken(f"produce ring failed: {type(exc).__name__}: {exc}")
        finally:
            conn._serving = False
            conn._write_held()
            if moved:
                scheduling = self.listener.scheduling
                if scheduling is not None:
                    scheduling.streaming()       # yield the CPU to producers while rings stream
                if not self.closed and reader.producer_waits():
                    self._notify_room()

    def _notify_room(self) -> None:
        try:
            os.write(self._room_fd, (1).to_bytes(8, "little"))
        except OSError:
            pass                         # a full counter wakes the producer anyway

    def _broken(self, why: str) -> None:
        conn = self.conn
        conn.log.warning("closing a connection whose %s", why)
        self.close()
        conn.send(m.ErrorResponse(0, ProtocolError.code, why))
        conn.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.forget(self)
        try:
            self._loop.remove_reader(self._data_fd)
        except (ValueError, OSError):
            pass
        os.close(self._data_fd)
        os.close(self._room_fd)
        self.reader.release()
        try:
            self._map.close()
        except BufferError:              # a view still held somewhere: the map goes with it
            pass


def _check_memfd(fd: int, size: int) -> None:
    """The ring's memory must be a regular file of exactly ``size`` bytes that can never shrink
    (a shrunk map would raise SIGBUS in the SPU): the client seals it (F_SEAL_SHRINK)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        raise InvalidArgument(f"the produce ring's memory is not a file of {size} bytes")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if not seals & fcntl.F_SEAL_SHRINK:
        raise InvalidArgument("the produce ring's memory is not sealed against shrinking (F_SEAL_SHRINK)")


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
