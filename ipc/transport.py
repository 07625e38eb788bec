"""Socket shells shared by the SC and SPU processes (asyncio, Unix sockets).

A :class:`FramedProtocol` owns one connection: bytes go into the sans-IO
:class:`~rillet.ipc.framing.FrameDecoder`, frames are decoded into messages with one
msgspec Decoder per connection, and each message is handed to ``dispatch``.
``dispatch`` returns an answer, ``None``, or an awaitable (a long poll); awaitables
run as tasks so the connection keeps reading. Handlers run in arrival order, so
produce requests on one connection are appended in the order they were sent.

Failure policy (a broker must survive any peer):

* a frame or message that does not parse -> ErrorResponse(cid 0) and close this
  connection only;
* a RilletError from a handler -> ErrorResponse with its code, connection stays;
* any other exception -> logged with traceback, InternalError answer, connection stays.

Peers must run as our uid (SO_PEERCRED); sockets are created under umask 077.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import socket
import stat
import time
from functools import partial
from pathlib import Path
from typing import Any, Awaitable

import msgspec

from . import messages as m
from .deferred import Deferred
from .errors import Busy, InternalError, ProtocolError, RilletError, UnsupportedVersion
from .framing import DEFAULT_MAX_FRAME_BYTES, FRAME_PREFIX, NEED_DATA, FrameDecoder, encode_message
from .unix_socket import peer_credentials

# Every message class: a handler's answer of one of these is sent at once.
_ANSWER_TYPES = frozenset(cls for cls in vars(m).values()
                          if isinstance(cls, type) and issubclass(cls, msgspec.Struct))


# Bounds on what one peer can hold (DESIGN, security and hygiene). The frame deadline
# closes a connection that sent part of a frame and then went quiet (slowloris); it can
# be shortened with RILLET_FRAME_DEADLINE_S, which the tests use.
#
# Connection slots. Clients (producers, consumers) may hold MAX_CONNECTIONS; RESERVED_CONNECTIONS
# more are kept for the cluster's own links (SPU control links, followers, the admin CLI), known by
# their Hello, so a crowd of idle clients can never lock the cluster out of itself. One process may
# hold at most MAX_CONNECTIONS_PER_PEER (SO_PEERCRED pid). A connection must greet within
# HELLO_DEADLINE_S. The RILLET_* variables exist for tests. Once the clients' slots are three quarters full, a new connection first closes
# client connections that have been idle (nothing received, nothing in flight) for IDLE_AFTER_S.
MAX_CONNECTIONS = int(os.environ.get("RILLET_MAX_CONNECTIONS", "1024"))
RESERVED_CONNECTIONS = 64
MAX_CONNECTIONS_PER_PEER = int(os.environ.get("RILLET_MAX_CONNECTIONS_PER_PEER", "512"))
HELLO_DEADLINE_S = float(os.environ.get("RILLET_HELLO_DEADLINE_S", "10"))
IDLE_AFTER_S = float(os.environ.get("RILLET_IDLE_AFTER_S", "30"))
UNGREETED_GRACE_S = 1.0         # near the limit, a connection silent this long without a Hello makes room
PRIVILEGED_CLIENTS = ("spu-", "rillet-admin")       # Hello client_id prefixes of the cluster's own links
LISTEN_BACKLOG = 4096                               # the kernel caps it at net.core.somaxconn
# Memory. Bytes of requests buffered but not yet whole, over all connections of the process: a
# connection that would take the total past it is refused with Busy and closed, so memory follows
# real requests, never a length prefix's promise. Answers waiting for a slow reader: past
# WRITE_BUFFER_HIGH the connection's requests are not read until the buffer drains.
MAX_BUFFERED_REQUEST_BYTES = int(os.environ.get("RILLET_MAX_BUFFERED_REQUEST_BYTES", str(256 << 20)))
WRITE_BUFFER_HIGH = 8 << 20
TRIM_AFTER_BYTES = 32 << 20         # a connection that held this much returns memory to the OS when it closes
# SO_SNDBUF of server sockets (the kernel caps it at net.core.wmem_max and doubles it):
# a 1 MiB fetch answer then goes out in one send() instead of through asyncio's buffer.
SEND_BUFFER_BYTES = 4 * 1024 * 1024
# Requests one connection may have waiting (long polls, ReadCommitted acks). A producer keeps
# up to batch_queue_size (100) per partition in flight, so this leaves room for dozens of partitions.
MAX_IN_FLIGHT = 4096
FRAME_DEADLINE_S = float(os.environ.get("RILLET_FRAME_DEADLINE_S", "30"))
# The answers to the requests of one read go out in one write at the end of the turn (a produce
# answer is ~30 bytes; a write per answer cost more than the answer). Past this many bytes held,
# they go out at once, so a slow reader's write-buffer limit still stops the reading in time.
COALESCE_BYTES = 64 * 1024
_PREFIX_ROOM = bytes(FRAME_PREFIX.size)


class _Slots:
    """The process's connection accounting (one listener per SC or SPU process)."""

    def __init__(self) -> None:
        self.open: set["FramedProtocol"] = set()
        self.clients = 0                        # greeted, not privileged
        self.per_peer: dict[int, int] = {}
        self.buffered_request_bytes = 0
        self.errors: dict[str, int] = {}        # error answers by error name (the SPU's metrics)

    def count_error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


def _trim_heap() -> None:
    """Give freed heap back to the kernel (glibc keeps large freed blocks otherwise)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class FramedProtocol(asyncio.Protocol):
    """One server-side connection. Subclasses implement :meth:`dispatch`."""

    server_name = "server"
    slots = _Slots()          # per process: SC and SPU each run one listener

    def __init__(self, log: logging.Logger, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.log = log
        self._decoder = FrameDecoder(max_frame_bytes)
        self._msg_decoder = m.new_decoder()
        self._encoder = m.new_encoder()
        self.transport: asyncio.Transport | None = None
        self._greeted = False
        self._privileged = False
        self._peer_pid = 0
        self._tasks: set[asyncio.Task | Deferred] = set()     # requests in flight (both have cancel())
        self._deadline: asyncio.TimerHandle | None = None
        self._counted = False
        self._write_paused = False
        self._held_bytes = 0            # this connection's share of slots.buffered_request_bytes
        self._peak_bytes = 0
        self._serving = False           # in _serve_frames: answers are held in _held, written at its end
        self._held: bytearray | None = None
        self.last_active = time.monotonic()
        self.closed = asyncio.get_event_loop().create_future()

    @classmethod
    def open_connections(cls) -> int:
        return len(cls.slots.open)

    # --- asyncio callbacks ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        try:
            pid, uid, _gid = peer_credentials(sock) if sock is not None else (0, os.getuid(), 0)
        except OSError:
            pid, uid = 0, os.getuid()
        if uid != os.getuid():
            self.log.warning("refused a peer running as uid %d (pid %d)", uid, pid)
            transport.close()
            return
        refusal = self._admit(pid)
        if refusal:
            self.log.warning("refused a connection from pid %d: %s", pid, refusal)
            self.send(m.ErrorResponse(0, Busy.code, refusal))
            transport.close()
            return
        self._counted, self._peer_pid = True, pid
        self.slots.open.add(self)
        self.slots.per_peer[pid] = self.slots.per_peer.get(pid, 0) + 1
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)  # type: ignore[attr-defined]
        self._deadline = asyncio.get_event_loop().call_later(HELLO_DEADLINE_S, self._hello_overdue)
        try:  # room for a whole fetch answer: asyncio then copies none of it into its own buffer
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass

    def _admit(self, pid: int) -> str | None:
        """Why a new connection from ``pid`` is refused, or None to take it."""
        slots = self.slots
        if slots.per_peer.get(pid, 0) >= MAX_CONNECTIONS_PER_PEER:
            return f"too many connections from pid {pid}: max_connections_per_peer={MAX_CONNECTIONS_PER_PEER}"
        if len(slots.open) >= (MAX_CONNECTIONS + RESERVED_CONNECTIONS) * 3 // 4:
            self._close_idle()
        if len(slots.open) >= MAX_CONNECTIONS + RESERVED_CONNECTIONS:
            return f"too many connections: max_connections={MAX_CONNECTIONS} (+{RESERVED_CONNECTIONS} reserved)"
        return None

    def _close_idle(self) -> None:
        """Close client connections idle for IDLE_AFTER_S, and connections that have not greeted
        within UNGREETED_GRACE_S (a client greets at once), so idle crowds and floods make room."""
        now = time.monotonic()
        cutoff, ungreeted = now - IDLE_AFTER_S, now - UNGREETED_GRACE_S
        idle = [c for c in self.slots.open if not c._privileged and not c._tasks and c is not self
                and c._decoder.buffered_bytes == 0
                and (c.last_active < cutoff or (not c._greeted and c.last_active < ungreeted))]
        for conn in idle:
            why = f"{IDLE_AFTER_S:g} s idle" if conn._greeted else f"no Hello within {UNGREETED_GRACE_S:g} s"
            conn.send(m.ErrorResponse(0, Busy.code, f"closed after {why}: the server is near its connection limit"))
            conn.close()
        if idle:
            self.log.warning("closed %d connections idle for %g s or silent without a Hello for %g s (near the "
                             "connection limit)", len(idle), IDLE_AFTER_S, UNGREETED_GRACE_S)

    def _hello_overdue(self) -> None:
        self._deadline = None
        if not self._greeted:
            self.log.warning("closing a connection that sent no Hello within %g s", HELLO_DEADLINE_S)
            self.send(m.ErrorResponse(0, ProtocolError.code, f"no Hello within {HELLO_DEADLINE_S:g} s"))
            self.close()

    def pause_writing(self) -> None:
        """Answers are piling up unread: stop reading this peer's requests until they drain."""
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._serve_frames()
            self._account()

    def _frame_overdue(self) -> None:
        self.log.warning("closing a connection that left a frame half sent for %.0f s", FRAME_DEADLINE_S)
        self.send(m.ErrorResponse(0, ProtocolError.code, f"frame not completed within {FRAME_DEADLINE_S} s"))
        self.close()

    def _arm_deadline(self) -> None:
        """Start the frame deadline while a partial frame is buffered; stop it when none is."""
        if not self._greeted:
            return                      # the Hello deadline is running
        partial = self._decoder.buffered_bytes > 0
        if partial and self._deadline is None:
            self._deadline = asyncio.get_event_loop().call_later(FRAME_DEADLINE_S, self._frame_overdue)
        elif not partial and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self._receive(data)
        finally:
            # The common case, whole requests and nothing held before or after, skips the
            # accounting: it would only add zero and find no deadline to start or stop.
            if self.transport is not None and (self._decoder.buffered_bytes or self._held_bytes
                                               or self._deadline is not None):
                self._account()
                self._arm_deadline()

    def _account(self) -> None:
        """Charge this connection's buffered request bytes to the process budget; refuse past it."""
        held = self._decoder.buffered_bytes
        slots = self.slots
        slots.buffered_request_bytes += held - self._held_bytes
        self._held_bytes = held
        self._peak_bytes = max(self._peak_bytes, held)
        if held and slots.buffered_request_bytes > MAX_BUFFERED_REQUEST_BYTES:
            self.log.warning("closing a connection holding %d bytes of unfinished requests: %d buffered in all, "
                             "max_buffered_request_bytes=%d", held, slots.buffered_request_bytes,
                             MAX_BUFFERED_REQUEST_BYTES)
            self.send(m.ErrorResponse(0, Busy.code, f"server busy: {slots.buffered_request_bytes} bytes of requests "
                                                    f"buffered, max_buffered_request_bytes={MAX_BUFFERED_REQUEST_BYTES}"))
            self._release()
            self.close()

    def _release(self) -> None:
        self.slots.buffered_request_bytes -= self._held_bytes
        self._held_bytes = 0
        self._decoder = FrameDecoder(self._decoder.max_frame_bytes)     # drop what it held, now

    def _receive(self, data: bytes) -> None:
        try:
            self._decoder.receive_data(data)
        except RilletError as exc:
            self._protocol_error(exc)
            return
        self._serve_frames()

    def _serve_frames(self) -> None:
        """Handle the whole frames buffered, unless answers are piling up (then resume_writing does).
        Their answers are written together when it returns (see COALESCE_BYTES)."""
        self._serving = True
        try:
            while not self._write_paused:
                frame = self._decoder.next_frame()
                if frame is NEED_DATA:
                    return
                try:
                    msg = self._msg_decoder.decode(frame)
                except msgspec.DecodeError as exc:
                    raise ProtocolError(f"malformed message: {exc}") from exc
                self._handle(msg)
                if self.transport is None or self.transport.is_closing():
                    return
        except RilletError as exc:
            self._protocol_error(exc)
        finally:
            self._serving = False
            self._write_held()

    def _protocol_error(self, exc: RilletError) -> None:
        self.log.warning("closing connection after protocol error: %s", exc)
        self.send(m.ErrorResponse(0, exc.code, str(exc)))
        self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._counted:
            slots = self.slots
            slots.open.discard(self)
            if self._greeted and not self._privileged:
                slots.clients -= 1
            left = slots.per_peer.pop(self._peer_pid, 1) - 1
            if left:
                slots.per_peer[self._peer_pid] = left
            self._release()
            self._counted = False
            if self._peak_bytes >= TRIM_AFTER_BYTES:
                _trim_heap()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for task in list(self._tasks):
            task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed()

    # --- helpers for subclasses ---
    def send(self, msg: m.Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if not self._serving:
                # A memoryview: when the socket takes part of it, asyncio slices the rest without a copy.
                self.transport.write(memoryview(encode_message(self._encoder, msg)))
                return
            held = self._held
            if held is None:            # the turn's first answer: its own buffer, the next ones appended
                self._held = held = encode_message(self._encoder, msg)
            else:
                start = len(held)
                held += _PREFIX_ROOM
                self._encoder.encode_into(msg, held, start + FRAME_PREFIX.size)
                FRAME_PREFIX.pack_into(held, start, len(held) - start - FRAME_PREFIX.size)
            if len(held) >= COALESCE_BYTES:
                self._write_held()

    def _write_held(self) -> None:
        """Write the answers held in this turn (a fresh buffer follows: the transport may keep this one)."""
        held, self._held = self._held, None
        if held is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(memoryview(held))

    def close(self) -> None:
        if self.transport is not None:
            self._write_held()          # answers before the close (an error answer) go out first
            self.transport.close()

    def on_closed(self) -> None:
        """Hook: the connection is gone."""

    def dispatch(self, msg: Any) -> m.Message | None | Awaitable[m.Message | None]:
        raise NotImplementedError

    # --- internals ---
    def _handle(self, msg: Any) -> None:
        cid = getattr(msg, "cid", 0)
        if not self._greeted:
            if not isinstance(msg, m.Hello):
                raise ProtocolError(f"expected Hello first, got {type(msg).__name__}")
            if msg.version != m.PROTOCOL_VERSION:
                raise UnsupportedVersion(f"protocol version {msg.version} not supported (speaking {m.PROTOCOL_VERSION})")
            self._greet(msg.client_id)
            if self.transport is None or self.transport.is_closing():
                return
            self.send(m.HelloOk(cid, m.PROTOCOL_VERSION, self.server_name))
            return
        try:
            result = self.dispatch(msg)
        except RilletError as exc:
            self.slots.count_error(type(exc).__name__)
            self.send(m.ErrorResponse(cid, exc.code, str(exc)))
            return
        except Exception as exc:  # a bug must not take the broker down
            self.log.exception("handler for %s failed", type(msg).__name__)
            self.slots.count_error(InternalError.__name__)
            self.send(m.ErrorResponse(cid, InternalError.code, f"internal error: {type(exc).__name__}: {exc}"))
            return
        if result.__class__ in _ANSWER_TYPES:      # the common case, without inspect's checks
            self.send(result)
        elif isinstance(result, Deferred):          # answered by a callback, without a Task
            if len(self._tasks) >= MAX_IN_FLIGHT:      # not started: nothing to undo
                self.send(m.ErrorResponse(cid, Busy.code,
                                          f"too many requests in flight on this connection: max_in_flight={MAX_IN_FLIGHT}"))
                return
            self._tasks.add(result)
            result.start(partial(self._deliver, cid, result))
        elif inspect.isawaitable(result):
            if len(self._tasks) >= MAX_IN_FLIGHT:
                if inspect.iscoroutine(result):
                    result.close()
                self.send(m.ErrorResponse(cid, Busy.code,
                                          f"too many requests in flight on this connection: max_in_flight={MAX_IN_FLIGHT}"))
                return
            task = asyncio.ensure_future(self._finish(cid, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif result is not None:
            self.send(result)

    def _greet(self, client_id: str) -> None:
        """Take the Hello: the cluster's own links use the reserved slots, clients their own."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._privileged = str(client_id).startswith(PRIVILEGED_CLIENTS)
        if not self._privileged:
            if self.slots.clients >= MAX_CONNECTIONS * 3 // 4:
                self._close_idle()
            if self.slots.clients >= MAX_CONNECTIONS:
                self.log.warning("refused client %r: max_connections=%d", client_id, MAX_CONNECTIONS)
                self.send(m.ErrorResponse(0, Busy.code, f"too many connections: max_connections={MAX_CONNECTIONS}"))
                self.close()
                return
            self.slots.clients += 1
        self._greeted = True

    def _deliver(self, cid: int, deferred: Deferred, result: Any) -> None:
        """A Deferred's answer: a message, an exception to answer with, or None (none)."""
        self._tasks.discard(deferred)
        if result is None:
            return
        if isinstance(result, RilletError):
            self.slots.count_error(type(result).__name__)
            result = m.ErrorResponse(cid, result.code, str(result))
        elif isinstance(result, BaseException):
            self.log.error("deferred answer failed: %r", result)
            self.slots.count_error(InternalError.__name__)
            result = m.ErrorResponse(cid, InternalError.code, f"internal error: {type(result).__name__}: {result}")
        self.send(result)

    async def _finish(self, cid: int, pending: Awaitable) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            raise
        except RilletError as exc:
            self.slots.count_error(type(exc).__name__)
            self.send(m.ErrorResponse(cid, exc.code, str(exc)))
            return
        except Exception as exc:
            self.log.exception("handler task failed")
            self.slots.count_error(InternalError.__name__)
            self.send(m.ErrorResponse(cid, InternalError.code, f"internal error: {type(exc).__name__}: {exc}"))
            return
        if result is not None:
            self.send(result)


def prepare_runtime_dir(path: Path) -> None:
    """Create the socket directory (and its parent, /tmp/rillet-<uid>) with mode 0700.

    Both must be real directories owned by us: another local user who created
    /tmp/rillet-<uid> first (or planted a symlink there) could otherwise rename our
    cluster directory away and put their own sockets in its place. A parent of ours
    with a loose mode is tightened; anything else is refused with the reason.
    """
    for d in (path.parent, path):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise RilletError(f"runtime directory {d} is not a directory (a symlink or a file): "
                              f"remove it and start again")
        if st.st_uid != os.getuid():
            raise RilletError(f"runtime directory {d} belongs to uid {st.st_uid}, not to this user "
                              f"(uid {os.getuid()}): remove it (as its owner or root) and start again")
        if stat.S_IMODE(st.st_mode) & 0o077:
            if d == path:
                raise RilletError(f"runtime directory {d} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0700")
            os.chmod(d, 0o700)


def remove_stale_socket(path: Path) -> None:
    """Unlink ``path`` only if nothing listens on it (a crashed owner left it)."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)
            return
        raise
    else:
        raise RilletError(f"socket {path} is in use by a running process")
    finally:
        probe.close()


async def start_unix_server(factory, path: Path) -> asyncio.AbstractServer:
    """Listen on ``path`` with mode 0600 (umask 077 during bind, no chmod race)."""
    remove_stale_socket(path)
    old = os.umask(0o077)
    try:
        return await asyncio.get_running_loop().create_unix_server(factory, str(path), backlog=LISTEN_BACKLOG)
    finally:
        os.umask(old)
