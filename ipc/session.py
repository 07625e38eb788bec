"""The client side of one framed connection, sans-IO (h11's shape).

Every client connection speaks the same protocol: a Hello first, then requests
tagged with correlation ids (cids) and answers matched back by them. This module
holds that once; the socket shells around it only move bytes:

* ``ipc/connection.py`` ``Connection``: blocking, one call at a time or pipelined
  (consumers, the admin link to the SC);
* ``ipc/async_connection.py`` ``AsyncConnection``: asyncio (an SPU following its
  leader);
* ``client/_spu_link.py`` ``SpuLink``: a non-blocking socket served by one thread
  (the producer).

The session never touches a socket or a clock. ``start`` and ``send`` return the
bytes to write; the shell feeds what it read to ``receive_data`` (or straight into
``body_buffer``) and drains ``next_event`` until it returns NEED_DATA. Each event
is an :class:`Answer`: the reply, its cid, and the token the request was sent
with. The handshake's answer is taken here (``greeted``, ``server``) and never
comes out as an event.

Error translation happens here, once: a frame that does not decode is a
ProtocolError naming the peer (the session stays failed, as FrameDecoder does);
an ErrorResponse becomes its RilletError with ``Answer.error`` (the shell decides
whether to raise it); a refused handshake raises at once.

Deadlines are data: a request sent with ``now`` gets ``now + request_timeout_s``;
pending requests keep submission order, so ``first_deadline`` is the earliest and
``expired(now)`` says whether the peer is overdue. What the shell does then
(close, fail every request) is its own policy.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Literal

import msgspec

from . import messages as m
from .errors import ProtocolError, RilletError, error_from_code
from .framing import DEFAULT_MAX_FRAME_BYTES, NEED_DATA, FrameDecoder, encode_message, encode_message_parts

__all__ = ["Answer", "ClientSession", "HANDSHAKE", "NEED_DATA", "encode_message", "raise_for_error"]

HANDSHAKE = object()        # the token of the Hello request


class Answer:
    """One message from the peer: the reply, its cid, and the token of the request it
    answers (None for a cid this session has no request for, e.g. cid 0)."""

    __slots__ = ("cid", "token", "message")

    def __init__(self, cid: int, token: object, message: m.Message) -> None:
        self.cid, self.token, self.message = cid, token, message

    @property
    def error(self) -> RilletError | None:
        """The error an ErrorResponse stands for, else None."""
        msg = self.message
        if msg.__class__ is m.ErrorResponse:
            return error_from_code(msg.code, msg.message)
        return None

    def __repr__(self) -> str:
        return f"Answer(cid={self.cid}, token={self.token!r}, message={self.message!r})"


class ClientSession:
    """Cids, the handshake, decoding and deadlines of one client connection.

    ``peer`` names the other end in errors ("SPU 3", a socket path). Not thread-safe:
    a shell used from several threads guards it with its own lock.
    """

    def __init__(self, peer: str, client_id: str, *, request_timeout_s: float | None = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.peer = peer
        self.client_id = client_id
        self.request_timeout_s = math.inf if request_timeout_s is None else request_timeout_s
        self._cids = itertools.count(1)
        self._encoder = m.new_encoder()
        self._decoder = m.new_decoder()
        self._frames = FrameDecoder(max_frame_bytes)
        # cid -> (token, deadline); insertion order is submission order, so the first
        # entry always holds the earliest deadline.
        self.pending: dict[int, tuple[object, float]] = {}
        self.started = False
        self.greeted = False
        self.server: str | None = None
        self._error: ProtocolError | None = None

    # --- sending ---------------------------------------------------------------------------
    def next_cid(self) -> int:
        return next(self._cids)

    def start(self, now: float = 0.0) -> bytearray:
        """The Hello frame; send it first (``send`` may queue requests behind it at once)."""
        if self.started:
            raise ProtocolError(f"the session with {self.peer} is started already")
        self.started = True
        return self.send(lambda cid: m.Hello(cid, m.PROTOCOL_VERSION, self.client_id), HANDSHAKE, now)

    def send(self, request: m.Message | Callable[[int], m.Message], token: object = None,
             now: float = 0.0) -> bytearray:
        """The frame of ``request`` (a message, or ``make(cid)`` given a fresh cid), which
        is now pending with ``token`` until answered or ``expired``."""
        msg = request if isinstance(request, msgspec.Struct) else request(next(self._cids))
        frame = encode_message(self._encoder, msg)
        self.pending[msg.cid] = (token, now + self.request_timeout_s)
        return frame

    def send_parts(self, request: m.Message | Callable[[int], m.Message], token: object = None,
                   now: float = 0.0) -> list:
        """As :meth:`send`, as the buffers of ``framing.encode_message_parts`` (a large
        produce payload stays a buffer of its own, for a scatter-gather write)."""
        msg = request if isinstance(request, msgspec.Struct) else request(next(self._cids))
        parts = encode_message_parts(self._encoder, msg) if type(msg) is m.ProduceRequest else \
            [encode_message(self._encoder, msg)]
        self.pending[msg.cid] = (token, now + self.request_timeout_s)
        return parts

    def register(self, msg: m.Message, token: object = None, now: float = 0.0) -> None:
        """``msg`` (its cid from ``next_cid``) goes to the peer another way than this session's
        frames (a producer's produce ring): it is pending with ``token`` as if sent, and its
        answer comes on the connection as any other."""
        self.pending[msg.cid] = (token, now + self.request_timeout_s)

    # --- receiving -------------------------------------------------------------------------
    def receive_data(self, data) -> None:
        """Bytes read from the socket (``b""``: the peer closed it)."""
        self._frames.receive_data(data)

    def body_buffer(self) -> memoryview | None:
        """Where to ``recv_into`` the rest of a large frame (FrameDecoder.body_buffer)."""
        return self._frames.body_buffer()

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handed out as answers."""
        return self._frames.buffered_bytes

    def body_received(self, n: int) -> None:
        self._frames.body_received(n)

    def next_event(self) -> Answer | Literal[NEED_DATA]:
        """The next answer, or NEED_DATA. Raises ProtocolError for a malformed frame and
        the handshake's error when the peer refused it."""
        if self._error is not None:
            raise self._error
        frames, decoder, pending = self._frames, self._decoder, self.pending
        while (frame := frames.next_frame()) is not NEED_DATA:
            try:
                reply = decoder.decode(frame)
            except msgspec.DecodeError as exc:
                # Nothing after a bad frame can be trusted: the session stays failed.
                self._error = ProtocolError(f"malformed message from {self.peer}: {exc}")
                raise self._error from exc
            cid = reply.cid
            entry = pending.pop(cid, None) if cid else None
            if entry is None:
                return Answer(cid, None, reply)
            if entry[0] is HANDSHAKE:
                if reply.__class__ is m.ErrorResponse:
                    raise error_from_code(reply.code, f"{self.peer} refused the handshake: {reply.message}")
                if reply.__class__ is not m.HelloOk:
                    raise ProtocolError(f"{self.peer} answered Hello with {type(reply).__name__}")
                self.greeted, self.server = True, reply.server
                continue
            return Answer(cid, entry[0], reply)
        return NEED_DATA

    # --- deadlines ---------------------------------------------------------------------------
    def first_deadline(self) -> float | None:
        """The earliest deadline of a pending request, or None when none is pending."""
        for _token, deadline in self.pending.values():
            return deadline
        return None

    def expired(self, now: float) -> bool:
        first = self.first_deadline()
        return first is not None and first <= now

    def take_pending(self) -> list[tuple[object, float]]:
        """Every pending (token, deadline), forgotten here: the connection is over."""
        left = [entry for entry in self.pending.values() if entry[0] is not HANDSHAKE]
        self.pending.clear()
        return left


def raise_for_error(reply: m.Message):
    """``reply``, or its error raised when it is an ErrorResponse."""
    if reply.__class__ is m.ErrorResponse:
        raise error_from_code(reply.code, reply.message)
    return reply
