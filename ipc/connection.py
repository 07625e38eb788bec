"""Blocking client connection over a Unix socket: a socket shell around the sans-IO
ClientSession (ipc/session.py: cids, handshake, decoding, error translation).

One request at a time with :meth:`call`, or pipelined with :meth:`send` and
:meth:`recv` (the producer and consumer keep several requests in flight).
OS errors are translated here, once: a refused or missing socket and a broken
pipe become BrokenConnection (retriable, re-read metadata), a silent peer becomes
Timeout naming the wait.

Reads: small chunks while no frame is known; once a large frame's prefix is in
(a fetch answer), the rest goes with ``recv_into`` straight into the frame
decoder's buffer for it (FrameDecoder.body_buffer): one copy from the kernel, no
chunks to join. The socket's timeout is only changed when the wait changes.
"""

from __future__ import annotations

import socket
from pathlib import Path

from . import messages as m
from .errors import BrokenConnection, RilletError, Timeout
from .framing import DEFAULT_MAX_FRAME_BYTES
from .session import NEED_DATA, ClientSession, raise_for_error
from .unix_socket import connect_unix

# Reads while no large frame is under way: answers are small, and the start of a large one
# read this way is copied once more into its own buffer (FrameDecoder.body_buffer).
RECV_CHUNK = 64 * 1024


class Connection:
    def __init__(self, path: str | Path, *, client_id: str = "rillet-py", timeout_s: float = 10.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._session = ClientSession(self.path, client_id, max_frame_bytes=max_frame_bytes)
        try:
            self._sock = connect_unix(self.path, timeout_s)
        except OSError as exc:
            raise BrokenConnection(f"cannot connect to {self.path}: {exc.strerror or exc}") from exc
        self._sock_timeout: float | None = timeout_s    # what the socket is set to now
        self.closed = False
        try:
            self.send_raw(self._session.start())
            while not self._session.greeted:
                answer = self._event()
                if answer is NEED_DATA:
                    if not self._session.greeted:       # the HelloOk may have been the last frame
                        self._fill(None)
                elif answer.cid == 0:       # the server refused us (busy, too many connections)
                    raise_for_error(answer.message)
        except BaseException:
            self.close()
            raise
        self.server = self._session.server

    def next_cid(self) -> int:
        return self._session.next_cid()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, msg: m.Message) -> None:
        self.send_raw(self._session.send(msg))

    def send_raw(self, frame: bytes | bytearray | memoryview) -> None:
        try:
            self._set_timeout(self.timeout_s)
            self._sock.sendall(frame)
        except socket.timeout as exc:
            raise Timeout(f"sending to {self.path} took longer than {self.timeout_s} s") from exc
        except OSError as exc:
            self.close()
            raise BrokenConnection(f"connection to {self.path} broken while sending: {exc.strerror or exc}") from exc

    def recv(self, timeout_s: float | None = None) -> m.Message:
        """Next message from the peer (blocking, at most ``timeout_s``)."""
        return self._next_answer(timeout_s).message

    def poll(self) -> m.Message | None:
        """A message if one is already buffered or readable without waiting, else None."""
        while (answer := self._event()) is NEED_DATA:
            if not self._read(0.0):
                return None
        return answer.message

    def _next_answer(self, timeout_s: float | None):
        while (answer := self._event()) is NEED_DATA:
            self._fill(timeout_s)
        return answer

    def _event(self):
        try:
            return self._session.next_event()
        except RilletError:      # malformed, or a refused handshake: this connection is over
            self.close()
            raise

    def call(self, msg: m.Message, timeout_s: float | None = None):
        """Send ``msg`` and return its answer; an ErrorResponse is raised as its error."""
        self.send(msg)
        while True:
            reply = self.recv(timeout_s)
            if reply.cid == msg.cid or reply.cid == 0:
                return raise_for_error(reply)

    def _fill(self, timeout_s: float | None) -> None:
        self._read(self.timeout_s if timeout_s is None else timeout_s)

    def _read(self, wait: float) -> bool:
        """Read what the socket has into the frame decoder, waiting up to ``wait``
        seconds for it (0: not at all). False if nothing was there (``wait`` 0 only)."""
        if self.closed:
            raise BrokenConnection(f"connection to {self.path} is closed")
        frames = self._session
        try:
            self._set_timeout(wait)
            body = frames.body_buffer()
            if body is not None:
                with body:
                    n = self._sock.recv_into(body)
            else:
                data = self._sock.recv(RECV_CHUNK)
                n = len(data)
        except (BlockingIOError, InterruptedError):
            return False
        except socket.timeout as exc:
            if not wait:
                return False
            raise Timeout(f"no answer from {self.path} within {wait} s") from exc
        except OSError as exc:
            self.close()
            raise BrokenConnection(f"connection to {self.path} broken: {exc.strerror or exc}") from exc
        if not n:
            self.close()
            raise BrokenConnection(f"connection to {self.path} closed by the peer")
        if body is not None:
            frames.body_received(n)
        else:
            frames.receive_data(data)
        return True

    def _set_timeout(self, timeout_s: float) -> None:
        if timeout_s != self._sock_timeout:
            self._sock.settimeout(timeout_s)
            self._sock_timeout = timeout_s

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Connection", "raise_for_error", "RilletError"]
