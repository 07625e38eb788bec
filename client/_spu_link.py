"""The producer's connection to one SPU: a non-blocking socket served by one thread.

Why not ``ipc.connection.Connection``: that class is blocking and keeps one
timeout per socket, so a thread blocked writing to a stopped SPU (SIGSTOP, full
socket buffer) would hold the producer's sender thread forever, and a reader's
timeout would change the writer's. Here nobody ever blocks on the socket:

* ``submit`` (the producer's sender thread) encodes the request and writes what
  the socket takes at once; the rest waits in an out-buffer for this link's thread.
  A caller that must not write while holding its own lock (the producer's fast
  path, from the thread that called send) submits with ``write=False``, which
  only queues the frame behind the ones before it, and calls ``write_out`` once
  its lock is released. While the socket is full (``_stalled``) only the link
  thread writes, when poll says the socket takes more.
* the link thread polls the socket (and a wake-up pipe), writes the out-buffer,
  reads answers and hands each to ``on_answer``; a transport failure fails every
  pending request with BrokenConnection through ``on_error``.
* lazy reading: the producer's caller ``reap``s answers after each send (they
  are usually in by the next one), and while it does, the link thread leaves them
  to it and sleeps through their arrival: at linger 0 that saves a thread wake-up
  and a GIL hand-off per record. The link thread reads them itself once the
  caller has not reaped for a grace (LAZY_READ_S, doubling up to MAX_LAZY_READ_S
  while the caller keeps reaping), and at once when someone waits for an answer
  (``urge``: a send waiting for room, an ``async_wait``).
* a caller that waits for an answer (ProduceOutput.wait, flush) reads it itself
  (``wait_answer``): it sleeps in poll on the socket and wakes when the answer
  comes, instead of waking the link thread through its pipe and then being woken
  by it (one wake-up per round trip instead of three). It reads through its own
  duplicate of the socket's descriptor, closed only once no waiter uses it.
* request deadline: every request must be answered within ``request_timeout_s``
  of its submission (the producer passes its ``timeout_ms`` plus a margin, since
  a ReadCommitted produce may legitimately wait ``timeout_ms`` on the SPU). When
  the oldest pending request passes it, the link gives up on the SPU: that request
  fails with Timeout, the others with BrokenConnection (both retriable), and the
  connection is closed. The poll never sleeps longer than ``request_timeout_s``,
  so a deadline is checked late by at most the poll granularity.

Answers are matched by correlation id. A link that failed is ``broken`` for good;
the producer opens a new one (after re-reading the metadata table). Cids, the
handshake, decoding and the deadlines are the sans-IO ClientSession's
(ipc/session.py); this module is its socket shell.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from itertools import islice
from typing import Callable

from rillet.ipc import messages as m
from rillet.ipc.errors import BrokenConnection, Closed, RilletError, Timeout, error_from_code
from rillet.ipc.session import NEED_DATA, ClientSession
from rillet.ipc.unix_socket import connect_unix

from ._ring_channel import RingChannel

_RECV_CHUNK = 256 * 1024
_MAX_IOV = 64                      # buffers per sendmsg, well under IOV_MAX (1024)
_CONNECT_TIMEOUT_S = 5.0           # a Unix-socket connect is instant unless the backlog is full
# The link thread leaves answers to the producer's caller (``reap`` after each send) while
# it reaped within this long; then it sleeps through them instead of waking once per answer.
# A waiter urges it to read at once.
LAZY_READ_S = 0.002
# While the caller keeps reaping, the grace doubles at each of the link thread's lazy wake-ups
# that found nothing to do, up to this; it is back at LAZY_READ_S once the caller stops reaping.
# (At linger 0 a fixed 2 ms grace woke this thread ~800 times a second for nothing, each a
# wake-up of a sleeping thread and a GIL hand-off with the caller: ~20-30 us of CPU apiece on
# a VM whose idle vCPUs halt.) A link with nothing pending keeps its timer for one grace, so
# the next send need not wake it to start one.
MAX_LAZY_READ_S = 0.05
# A waiter reading its own answer (wait_answer) polls in slices growing up to this long.
MAX_WAIT_SLICE_S = 0.016
_RING_TOKEN = object()             # the token of the RingAttach request
# Produce requests smaller than this go on the socket while the ring is drained: for a small
# request the ring saves ~nothing of the copy, and costs more Python than a frame on both sides
# (README, Benchmarks: ~2.4 against ~1.1 µs in the SPU for a 100 B record).
RING_MIN_BYTES = 4096


class SpuLink:
    def __init__(self, spu_id: int, path: str, *, request_timeout_s: float, timeout_note: str,
                 on_answer: Callable[[object, m.Message], None],
                 on_error: Callable[[object, RilletError], None],
                 client_id: str = "rillet-producer", lazy_read_s: float = LAZY_READ_S,
                 ring_capacity: int = 0, ring_min_bytes: int = RING_MIN_BYTES) -> None:
        self.spu_id = spu_id
        self.path = path
        self.request_timeout_s = request_timeout_s
        self.lazy_read_s = lazy_read_s
        self._timeout_note = timeout_note
        self._on_answer, self._on_error = on_answer, on_error
        self._lock = threading.Lock()          # guards the session's sending side and _out
        self._read_lock = threading.Lock()     # one reader of the socket at a time (link thread or reap)
        self._urged = False                    # a waiter wants answers read now (see _serve)
        self._reaped_at = 0.0                  # when the producer's caller last read answers (reap)
        self._idle = False                     # the link thread sleeps with nothing pending
        self.wakeups = 0                       # turns of the link thread's loop (tests count them)
        self._session = ClientSession(f"SPU {spu_id}", client_id, request_timeout_s=request_timeout_s)
        self._out: deque[memoryview] = deque()
        self._sock: socket.socket | None = None
        self._wait_sock: socket.socket | None = None   # a dup of _sock for wait_answer (see there)
        self._waiters = 0                              # callers inside wait_answer (guarded by _lock)
        self._stalled = False           # the socket took less than offered: the link thread writes the rest
        self._timed_out = False
        self.broken = False
        self._closing = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # The produce ring (client/_ring_channel.py; 0: none). Once the SPU took it, produce
        # requests of ring_min_bytes or more go through it, and smaller ones too while it holds
        # requests not yet handled. So requests are handled in the order sent, whichever way
        # each goes: a socket request only once the ring is drained, and a ring request is
        # published only once every produce request sent on the socket is answered (an answer
        # means it was handled); until then it waits in the ring's backlog. (Routing to the
        # socket instead while socket requests were unanswered kept a busy producer, whose
        # pipeline is never empty, on the socket for good.)
        self._ring_capacity = ring_capacity
        self._ring_min_bytes = ring_min_bytes
        self._channel: RingChannel | None = None       # handed over to the SPU, maybe attached
        self._ring: RingChannel | None = None          # attached: produce requests go through it
        self._socket_produces: set[int] = set()        # cids of produce requests on the socket, unanswered
        self._inbuf = bytearray(_RECV_CHUNK)        # the link thread's read buffer (see _read)
        self._inview = memoryview(self._inbuf)
        self._out.append(memoryview(self._session.start(time.monotonic())))
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rillet-producer-spu-{spu_id}")
        self._thread.start()

    # --- producer side ---------------------------------------------------------------------
    def submit(self, token: object, make: Callable[[int], m.Message], *, write: bool = True) -> bool:
        """Queue the request ``make(cid)`` for ``token``; False if this link is broken.

        Never blocks on the socket. With ``write`` False the frame is only queued
        (after every frame queued before it); ``write_out`` then writes it. The
        answer or the failure comes back through ``on_answer`` / ``on_error``,
        exactly once: from the link thread, or from the thread that called ``reap``.
        """
        with self._lock:
            if self.broken or self._closing:
                return False
            session = self._session
            msg = make(session.next_cid())
            ring = self._ring
            if (ring is not None and msg.__class__ is m.ProduceRequest
                    and (len(msg.batches) >= self._ring_min_bytes or not ring.drained())):
                session.register(msg, token, time.monotonic())
                ring.queue(msg)           # written by publish (here, or write_out), or once room comes
                if write and not self._socket_produces:
                    ring.publish()
            else:
                self._out.extend(map(memoryview, session.send_parts(msg, token, time.monotonic())))
                if self._channel is not None and msg.__class__ is m.ProduceRequest:
                    self._socket_produces.add(msg.cid)
            if self._idle:          # the link thread sleeps without a timer: start its lazy one
                self._idle = False
                self._wake_locked()
            if write:
                self._write_out_locked()
            return True

    def write_out(self) -> None:
        """Write queued frames now, as far as the socket takes them without waiting."""
        with self._lock:
            if self._ring is not None and not self._socket_produces:
                self._ring.publish()
            self._write_out_locked()

    def _write_out_locked(self) -> None:
        if self._stalled or self._sock is None or self.broken or not self._out:
            return           # the link thread writes (when poll says so, or once connected)
        if not self._write_locked(self._sock) or self._out:
            self._wake_locked()   # broken, or full: the link thread takes over

    def close(self) -> None:
        """Stop the link; requests still pending fail with Closed."""
        with self._lock:
            self._closing = True
            self._wake_locked()

    def _wake_locked(self) -> None:
        if self.broken:
            return           # the pipe is closed (its number may already be reused)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass             # a full pipe wakes the thread anyway

    # --- link thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            error = self._serve(self._connect())
        except RilletError as exc:
            error = exc
        except Exception as exc:   # a bug here must still fail every request, never hang them
            error = BrokenConnection(f"link to SPU {self.spu_id} failed: {type(exc).__name__}: {exc}")
        with self._lock:
            self.broken = True
            pending = self._session.take_pending()
            self._out.clear()
            if self._sock is not None:
                try:                  # wakes a caller polling in wait_answer (on its own descriptor)
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._sock.close()
            if not self._waiters:
                self._close_wait_sock()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._channel is not None:
                self._channel.close()      # the SPU's copy goes when it sees the connection close
                self._channel = self._ring = None
        now = time.monotonic()
        timeout = Timeout(f"SPU {self.spu_id} did not answer within {self.request_timeout_s:g} s "
                          f"({self._timeout_note}); connection closed")
        for token, deadline in pending:
            if token is not _RING_TOKEN:        # the link's own RingAttach: nobody to tell
                self._on_error(token, timeout if self._timed_out and deadline <= now else error)

    def _connect(self) -> socket.socket:
        try:
            sock = connect_unix(self.path, _CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise BrokenConnection(f"cannot connect to SPU {self.spu_id} at {self.path}: {exc.strerror or exc}") from exc
        sock.setblocking(False)
        channel = self._offer_ring()
        with self._lock:
            if channel is not None:
                # Queued behind the Hello and any request submitted meanwhile (those stay on the socket).
                attach = channel.attach_request(self._session.next_cid())
                self._out.extend(map(memoryview, self._session.send_parts(attach, _RING_TOKEN, time.monotonic())))
                self._channel = channel
            self._sock = sock
            try:
                self._wait_sock = sock.dup()
            except OSError:
                self._wait_sock = None        # callers then wait as before (urge)
        return sock

    def _offer_ring(self) -> RingChannel | None:
        """Hand a produce ring to the SPU; None (the socket only) if it does not take it."""
        if not self._ring_capacity:
            return None
        try:
            return RingChannel.offer(self.path, self._ring_capacity)
        except (OSError, ValueError, AttributeError):
            return None            # an SPU without rings (RILLET_PRODUCE_RING=0), or no memfd/eventfd here

    def _ring_answered(self, reply: m.Message) -> None:
        with self._lock:
            if reply.__class__ is m.RingAttached and self._channel is not None:
                self._ring = self._channel

    def _room(self) -> None:
        """The SPU freed room in the ring: write what waited for it."""
        with self._lock:
            ring = self._ring
            if ring is not None and not self.broken:
                ring.take_room()
                if not self._socket_produces:
                    ring.publish()

    def _serve(self, sock: socket.socket) -> RilletError:
        """Poll until the link fails or closes; return the error that ends it.

        Lazy reading: while the oldest pending request is younger than LAZY_READ_S
        and nobody waits for an answer (``urge``), the socket's answers are left to
        the producer's caller (``reap``, after each send): this thread then sleeps
        through them instead of waking once per answer. Past that age, or once
        urged, it reads them itself. A peer that hangs up is seen at once either
        way (poll reports POLLHUP whatever it was asked).
        """
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(sock, select.POLLIN)
        room_fd = self._channel.room_fd if self._channel is not None else -1
        if room_fd >= 0:
            poller.register(room_fd, select.POLLIN)
        session = self._session
        registered = select.POLLIN
        grace = self.lazy_read_s            # grows while the caller reaps (MAX_LAZY_READ_S)
        timer_until = 0.0                   # with nothing pending, the lazy timer runs until then
        slept_at = 0.0                      # when this thread last slept on its lazy timer
        while True:
            self.wakeups += 1
            now = time.monotonic()
            with self._lock:
                if self._closing:
                    return Closed(f"producer closed before SPU {self.spu_id} answered")
                if not self._write_locked(sock):
                    return BrokenConnection(f"connection to SPU {self.spu_id} broken while sending")
                first = session.first_deadline()
                want_write = bool(self._out)
                if first is None:
                    self._urged = False
                # Idle once nothing was pending for a whole grace: then the next submit wakes
                # this thread; until then its timer runs and a submit need not.
                self._idle = first is None and now >= timer_until
                urged = self._urged
            if first is not None and first <= now:
                self._timed_out = True
                return BrokenConnection(f"connection to SPU {self.spu_id} closed: an earlier request timed out")
            if slept_at and not urged:
                # Woken by the lazy timer: nothing to do if the caller reaped meanwhile (let it
                # sleep longer next time), else the caller stopped (answers promptly again).
                grace = min(grace * 2, MAX_LAZY_READ_S) if self._reaped_at > slept_at else self.lazy_read_s
            slept_at = 0.0
            if first is None:                   # no answer due: only a hang-up (POLLHUP) can come
                if now < timer_until:
                    wait_s, reading, slept_at = timer_until - now, False, now
                else:
                    wait_s, reading = self.request_timeout_s, False
            else:
                timer_until = now + grace
                # The grace runs from the oldest submission or the caller's last reap, the later.
                read_at = max(first - self.request_timeout_s, self._reaped_at) + grace
                reading = urged or read_at <= now
                wait_s = first - now if reading else min(read_at, first) - now
                if not reading:
                    slept_at = now
            events = (select.POLLIN if reading else 0) | (select.POLLOUT if want_write else 0)
            if events != registered:
                poller.modify(sock, events)
                registered = events
            for fd, got in poller.poll(wait_s * 1000 + 1):
                if fd == self._wake_r:
                    _drain(self._wake_r)
                elif fd == room_fd:
                    self._room()
                elif got & ~select.POLLOUT and not self._read(sock):
                    return BrokenConnection(f"connection to SPU {self.spu_id} closed by the peer")

    def _write_locked(self, sock: socket.socket) -> bool:
        """Write the out-buffer until the socket is full; False if the socket is broken."""
        out = self._out
        while out:
            # Several buffers (a frame's head and its payload, frames queued together) go in
            # one sendmsg: one system call, and a large payload is sent from where it lies.
            bufs = [out[0]] if len(out) == 1 else list(islice(out, _MAX_IOV))
            try:
                sent = sock.send(bufs[0]) if len(bufs) == 1 else sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                self._stalled = True
                return True
            except OSError:
                return False
            for buf in bufs:
                if sent < len(buf):
                    out[0] = buf[sent:]
                    self._stalled = True
                    return True
                sent -= len(buf)
                out.popleft()
        self._stalled = False
        return True

    def _read(self, sock: socket.socket) -> bool:
        """Read and deliver the answers the socket has (without waiting); False when the
        peer is gone. Readers (this thread, ``reap``) take turns under ``_read_lock``, so
        answers are delivered in the order they came."""
        with self._read_lock:
            return self._read_turn(sock)

    def _read_turn(self, sock: socket.socket) -> bool:
        # Into one buffer kept for the link's life, then copied out at the size read: a
        # fresh recv(256 KiB) per answer cost an allocation of that size, and in this
        # thread's malloc arena a page fault or three, for an answer of ~30 bytes.
        try:
            n = sock.recv_into(self._inbuf)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not n:
            return False
        session = self._session
        answers = []
        try:
            with self._lock:          # the session's pending table is shared with submit
                session.receive_data(self._inview[:n].tobytes())
                while (answer := session.next_event()) is not NEED_DATA:
                    answers.append(answer)
        finally:                      # answers taken before a bad frame are still delivered
            for answer in answers:    # outside the lock: on_answer takes the producer's lock
                self._deliver(answer)
        return True

    def reap(self) -> None:
        """Deliver the answers already arrived, from the calling thread; never waits.
        Never call it holding a lock that ``on_answer`` takes. Anything but answers (the
        peer gone, a bad frame) is left to the link thread, woken for it."""
        sock = self._sock
        if sock is None or self.broken or not self._read_lock.acquire(False):
            return                    # not connected yet, over, or another reader is at it
        self._reaped_at = time.monotonic()
        try:
            if self._read_turn(sock):
                return
        except RilletError:
            pass
        finally:
            self._read_lock.release()
        self.urge()

    def wait_answer(self, done: Callable[[], bool], timeout_s: float | None) -> bool | None:
        """Read answers from the calling thread until ``done()`` (True) or ``timeout_s`` passes
        (False). None when this thread cannot read (not connected yet, over, the peer gone, a
        bad frame): the caller then waits as before (``urge``).

        The poll sleeps in slices, each counted as a reap so that the link thread keeps sleeping
        meanwhile: the first half the lazy-read grace, then twice as long each, up to
        MAX_WAIT_SLICE_S (a slow answer, a stopped SPU: few wake-ups). A slice also bounds how
        late this waiter sees an answer another reader took for it. Readers take turns (``_read_lock``) only
        to read, never while polling: the link thread may have frames to write. A link that
        fails resolves every request (``done()``), and its shutdown wakes this poll."""
        with self._lock:
            sock = self._wait_sock
            if sock is None or self.broken or self._closing:
                return None
            self._waiters += 1
        try:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            slice_ms = self.lazy_read_s * 500
            max_slice_ms = max(slice_ms, MAX_WAIT_SLICE_S * 1000)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            while not done():
                now = time.monotonic()
                self._reaped_at = now
                if deadline is not None and now >= deadline:
                    return False
                if poller.poll(slice_ms if deadline is None else min(slice_ms, (deadline - now) * 1000)):
                    with self._read_lock:
                        if not self._read_turn(sock):
                            return None       # the peer is gone: the link thread fails the requests
                else:
                    slice_ms = min(slice_ms * 2, max_slice_ms)
            return True
        except RilletError:
            return None                       # a bad frame: the link thread reports it
        finally:
            with self._lock:
                self._waiters -= 1
                if self.broken and not self._waiters:
                    self._close_wait_sock()

    def _close_wait_sock(self) -> None:
        """(_lock held) Close the waiters' descriptor once nobody polls it (its number may be reused)."""
        if self._wait_sock is not None:
            self._wait_sock.close()
            self._wait_sock = None

    def urge(self) -> None:
        """Someone waits for an answer: the link thread reads them now, not lazily."""
        if not self._urged:
            self._urged = True
            with self._lock:
                self._wake_locked()

    def _deliver(self, answer) -> None:
        reply = answer.message
        if self._socket_produces:
            with self._lock:
                self._socket_produces.discard(answer.cid)
                ring = self._ring
                if ring is not None and not self._socket_produces and ring.backlog and not self.broken:
                    ring.publish()        # the ring requests that waited for the socket's to be handled
        if answer.token is _RING_TOKEN:
            self._ring_answered(reply)
            return
        if answer.token is None:
            if answer.cid == 0 and isinstance(reply, m.ErrorResponse):
                raise error_from_code(reply.code, f"SPU {self.spu_id} closed the connection: {reply.message}")
            return
        self._on_answer(answer.token, reply)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
