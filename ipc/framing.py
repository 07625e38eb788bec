"""Length-prefixed frames, sans-IO: bytes in, payloads out, no sockets.

Wire format, one frame::

    pos size field    meaning
      0    4  length  u32 little-endian, bytes of payload that follow (1 .. max_frame_bytes)
      4    n  payload a msgpack envelope (framing does not look inside)

The decoder follows h11: the caller feeds whatever the socket gave with
:meth:`FrameDecoder.receive_data` (``b""`` for end of stream) and then drains
:meth:`FrameDecoder.next_frame` until it returns :data:`NEED_DATA`. Every input
either yields frames or raises one error, and a decoder that raised stays failed.

Copy budget. A payload is always a read-only ``memoryview`` that stays valid
forever and that nothing the decoder does later can change: a view over an
immutable ``bytes`` object, or over a body buffer of the decoder's own (below)
that nobody else can write:

* a frame that lies whole inside one received ``bytes`` chunk is a slice of that
  chunk: zero copies (the slice keeps the whole chunk alive; ``bytes(payload)``
  gives a compact copy when a payload is kept for long);
* a frame split across chunks is joined once into a new ``bytes``;
* mutable input (``bytearray``, a view of one) is copied once on arrival, since
  the caller may reuse it;
* a large frame can skip the chunks: once its prefix is parsed, a socket shell
  asks :meth:`FrameDecoder.body_buffer` where the rest goes, ``recv_into`` it and
  reports the count with :meth:`FrameDecoder.body_received`. The frame then
  lands in one buffer of its own size (the bytes that came with the prefix are
  copied there once), and no join follows. That buffer is reused for a later
  large frame only when its reference count shows that no view of the earlier
  payload is left, so a 1 MiB fetch answer after another costs no allocation,
  no zero-filling and no page faults.

Small chunks that arrive behind unconsumed data (a peer dribbling bytes) are
coalesced into a private run, so a frame sent a byte at a time costs a few
copies of small data, not one Python object per byte. No buffer is ever
compacted by moving its tail: every byte is copied a bounded number of times,
so decoding is O(received) whatever the chunking.
"""

from __future__ import annotations

import enum
import struct
import sys
from collections import deque
from typing import Literal, NoReturn

from msgspec.structs import replace as msgspec_replace

from .errors import BrokenConnection, FrameTooLarge, InvalidArgument, ProtocolError

FRAME_PREFIX = struct.Struct("<I")
PREFIX_SIZE = FRAME_PREFIX.size
assert PREFIX_SIZE == 4, PREFIX_SIZE
_unpack_prefix = FRAME_PREFIX.unpack_from

# The largest batch (64 MiB, records.DEFAULT_MAX_BATCH_BYTES) plus room for its envelope.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024 + 64 * 1024
_MAX_PREFIX_VALUE = 0xFFFFFFFF
# Chunks below this size that arrive behind pending data are copied into a run
# instead of being kept as their own view (a view costs ~200 bytes of overhead).
_COALESCE_BELOW = 2048
# A run is sealed into an immutable piece once it reaches this size.
_RUN_SEAL_BYTES = 64 * 1024
# body_buffer serves frames at least this long (smaller ones cost one chunk or two anyway).
DIRECT_BODY_BYTES = 64 * 1024
# A body buffer up to this size is kept for the next large frame; a larger one (a rare
# 32 MiB fetch) is left to the garbage collector with its payload.
_KEEP_BODY_BYTES = 4 * 1024 * 1024


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


NEED_DATA = _Sentinel.NEED_DATA
"""Returned by :meth:`FrameDecoder.next_frame` when no whole frame is buffered."""


def _check_limit(max_frame_bytes: int) -> int:
    if not isinstance(max_frame_bytes, int) or not 1 <= max_frame_bytes <= _MAX_PREFIX_VALUE:
        raise InvalidArgument(f"max_frame_bytes={max_frame_bytes!r} must be an int from 1 to {_MAX_PREFIX_VALUE}")
    return max_frame_bytes


def _check_length(n: int, max_frame_bytes: int) -> None:
    if n > max_frame_bytes:
        raise FrameTooLarge(f"frame of {n} bytes exceeds max_frame_bytes={max_frame_bytes}")
    if n <= 0:
        raise ProtocolError("zero-length frame: every frame carries at least one payload byte")


def frame_prefix(n: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """The 4-byte prefix of an ``n``-byte payload, for scatter-gather writes.

    Raises FrameTooLarge if ``n`` exceeds ``max_frame_bytes`` and ProtocolError
    if ``n`` is zero (the decoder rejects empty frames).
    """
    if not isinstance(n, int):
        raise InvalidArgument(f"frame length must be an int, not {type(n).__name__}")
    _check_length(n, max_frame_bytes)
    return FRAME_PREFIX.pack(n)


def encode_frame(payload, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Prefix ``payload`` (any bytes-like object) with its length: one copy.

    Same checks as :func:`frame_prefix`. For large payloads prefer
    ``sendmsg([frame_prefix(n), payload])``, which copies nothing.
    """
    with memoryview(payload) as view:
        n = view.nbytes
        _check_length(n, max_frame_bytes)
        return b"".join((FRAME_PREFIX.pack(n), view))


def encode_message(encoder, msg) -> bytearray:
    """Frame ``msg`` with a msgspec msgpack ``encoder``: the 4-byte length prefix, then the
    envelope, in one buffer (encoded in place: no copy of the payload)."""
    buf = bytearray(4)
    encoder.encode_into(msg, buf, 4)
    FRAME_PREFIX.pack_into(buf, 0, len(buf) - 4)
    return buf


# A payload at least this long is sent as its own buffer after the frame's head (no copy);
# a smaller one is cheaper copied into the frame than written as a second buffer.
SPLIT_PAYLOAD_BYTES = 8 * 1024
_BIN8_EMPTY = b"\xc4\x00"          # msgpack bin 8 of length 0: the placeholder the head ends with
_BIN16, _BIN32 = struct.Struct(">BH"), struct.Struct(">BI")


def encode_message_parts(encoder, msg, payload_field: str = "batches") -> list:
    """Frame ``msg`` as a list of buffers whose join is ``encode_message(encoder, msg)``.

    When the message's last field ``payload_field`` holds at least SPLIT_PAYLOAD_BYTES,
    the list is ``[head, payload]``: the head (prefix, envelope, bin header) is
    encoded from a copy of ``msg`` with an empty payload, so a scatter-gather write
    (``sendmsg``) sends the payload from where it lies, without copying it into a
    grown frame buffer. Otherwise ``[frame]``.
    """
    payload = getattr(msg, payload_field)
    if isinstance(payload, bytes):
        n = len(payload)
    elif isinstance(payload, (bytearray, memoryview)):
        n = memoryview(payload).nbytes
    else:
        raise InvalidArgument(f"{type(msg).__name__}.{payload_field} is a {type(payload).__name__}, not bytes")
    if n < SPLIT_PAYLOAD_BYTES:
        return [encode_message(encoder, msg)]
    head = bytearray(4)
    encoder.encode_into(msgspec_replace(msg, **{payload_field: b""}), head, 4)
    if head[-2:] != _BIN8_EMPTY:
        raise InvalidArgument(f"{type(msg).__name__}.{payload_field} is not the last field of the envelope")
    del head[-2:]
    head += _BIN16.pack(0xC5, n) if n <= 0xFFFF else _BIN32.pack(0xC6, n)
    FRAME_PREFIX.pack_into(head, 0, len(head) - 4 + n)
    return [head, payload]


def _immutable_view(data) -> memoryview:
    """A byte-format view of ``data`` that nobody can change under us."""
    if isinstance(data, bytes):
        return memoryview(data)
    if isinstance(data, memoryview) and data.readonly and isinstance(data.obj, bytes) and data.c_contiguous:
        return data.cast("B")
    return memoryview(bytes(data))


class FrameDecoder:
    """Turn a byte stream into frame payloads. See the module docstring.

    Drain :meth:`next_frame` after every :meth:`receive_data`: the length check
    then runs as soon as a prefix is complete, before the body is buffered.
    """

    __slots__ = ("_max", "_pieces", "_run", "_buffered", "_frame_len", "_eof", "_error", "_body", "_filled",
                 "_spare")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max = _check_limit(max_frame_bytes)
        self._pieces: deque[memoryview] = deque()   # unconsumed data, in order, immutable
        self._run = bytearray()                      # small chunks after the pieces, coalesced
        self._buffered = 0                           # bytes in pieces + run
        self._frame_len: int | None = None           # payload length once the prefix is parsed
        self._eof = False
        self._error: BaseException | None = None
        self._body: memoryview | None = None         # the current frame's own buffer (body_buffer)
        self._filled = 0                             # bytes of it received
        self._spare: bytearray | None = None         # last body buffer, reused once unreferenced

    @property
    def max_frame_bytes(self) -> int:
        return self._max

    @property
    def eof(self) -> bool:
        """True once end of stream was received and every frame was returned
        (False on a decoder that failed)."""
        return self._eof and self._error is None and self._buffered == 0 and self._frame_len is None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned in a frame (a parsed prefix included)."""
        return self._buffered + self._filled + (PREFIX_SIZE if self._frame_len is not None else 0)

    def receive_data(self, data) -> None:
        """Feed bytes from the stream; ``b""`` (any empty input) means end of stream.

        Raises ProtocolError for data after end of stream or after an earlier error.
        """
        self._raise_if_failed()
        n = len(data)
        if n == 0:
            self._eof = True
            return
        if self._eof:
            self._fail(ProtocolError(f"received {n} bytes after end of stream"))
        if self._body is not None:                   # a body buffer is being filled: top it up first
            view = memoryview(data).cast("B")
            take = min(view.nbytes, len(self._body) - self._filled)
            self._body[self._filled:self._filled + take] = view[:take]
            self._filled += take
            if take == view.nbytes:
                return
            data = view[take:]
        view = _immutable_view(data)
        if view.nbytes < _COALESCE_BELOW and self._buffered:
            self._run += view
            if len(self._run) >= _RUN_SEAL_BYTES:
                self._seal_run()
        else:
            self._seal_run()
            self._pieces.append(view)
        self._buffered += view.nbytes

    def next_frame(self) -> memoryview | Literal[_Sentinel.NEED_DATA]:
        """Return the next payload, or NEED_DATA when no whole frame is buffered.

        Raises FrameTooLarge as soon as a prefix announces more than
        ``max_frame_bytes``, ProtocolError for a zero-length frame, and
        BrokenConnection when the stream ended inside a frame. After end of
        stream with nothing pending it keeps returning NEED_DATA (see ``eof``).
        """
        if self._error is not None:
            self._raise_if_failed()
        if self._body is not None:
            return self._body_frame()
        pieces = self._pieces
        if self._frame_len is None and pieces:
            # Fast path, the common case: the next frame lies whole in the first piece.
            front = pieces[0]
            if len(front) >= PREFIX_SIZE:
                end = PREFIX_SIZE + _unpack_prefix(front)[0]
                if PREFIX_SIZE < end <= len(front) and end - PREFIX_SIZE <= self._max:
                    self._buffered -= end
                    if end == len(front):
                        pieces.popleft()
                    else:
                        pieces[0] = front[end:]
                    return front[PREFIX_SIZE:end]
        if self._frame_len is None:
            if self._buffered < PREFIX_SIZE:
                return self._starved(self._buffered, PREFIX_SIZE)
            (n,) = FRAME_PREFIX.unpack(self._take(PREFIX_SIZE))
            try:
                _check_length(n, self._max)
            except ProtocolError as exc:
                self._fail(exc)
            self._frame_len = n
        n = self._frame_len
        if self._buffered < n:
            return self._starved(PREFIX_SIZE + self._buffered, PREFIX_SIZE + n)
        self._frame_len = None
        return self._take(n)

    def body_buffer(self, min_bytes: int = DIRECT_BODY_BYTES) -> memoryview | None:
        """Where to ``recv_into`` the rest of the current frame, or None.

        A writable view of exactly the bytes the frame still lacks, when its prefix
        is parsed (``next_frame`` returned NEED_DATA with at least 4 bytes in), it
        announces at least ``min_bytes`` and it is not complete; else None, and the
        caller feeds ``receive_data`` as usual. Report what was written at the
        start of the view with :meth:`body_received`; ask again for the rest.
        """
        n = self._frame_len
        if n is None or n < min_bytes or self._error is not None:
            return None
        if self._body is None:
            if self._buffered >= n:
                return None                          # already whole: next_frame returns it
            self._start_body(n)
        elif self._filled == n:
            return None
        return self._body[self._filled:]

    def body_received(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`body_buffer`
        view; 0 means end of stream (as ``receive_data(b"")``)."""
        self._raise_if_failed()
        if self._body is None:
            raise InvalidArgument("body_received without a body_buffer in use")
        if n == 0:
            self._eof = True
            return
        missing = len(self._body) - self._filled
        if not 0 < n <= missing:
            raise InvalidArgument(f"body_received({n}): the frame lacks {missing} bytes")
        self._filled += n

    # --- internals ---------------------------------------------------------------

    def _start_body(self, n: int) -> None:
        """Move the frame's buffered bytes into a buffer of its own, reusing the spare
        one when it is large enough and no view of it is left."""
        spare = self._spare
        # References to an unused spare: self._spare, the local and getrefcount's argument.
        if spare is None or len(spare) < n or sys.getrefcount(spare) > 3:
            spare = bytearray(n)
            self._spare = spare if n <= _KEEP_BODY_BYTES else None
        body = memoryview(spare)[:n]
        self._seal_run()
        filled = 0
        for piece in self._pieces:
            body[filled:filled + len(piece)] = piece
            filled += len(piece)
        self._pieces.clear()
        self._buffered = 0
        self._body, self._filled = body, filled

    def _body_frame(self) -> memoryview | Literal[_Sentinel.NEED_DATA]:
        body, n = self._body, self._frame_len
        if self._filled < n:
            return self._starved(PREFIX_SIZE + self._filled, PREFIX_SIZE + n)
        self._body, self._filled, self._frame_len = None, 0, None
        frame = body.toreadonly()
        body.release()
        return frame

    def _starved(self, have: int, want: int) -> Literal[_Sentinel.NEED_DATA]:
        if self._eof and have:
            self._fail(BrokenConnection(f"connection closed mid-frame: {have} of {want} bytes received"))
        return NEED_DATA

    def _seal_run(self) -> None:
        if self._run:
            self._pieces.append(memoryview(bytes(self._run)))
            self._run.clear()

    def _take(self, n: int) -> memoryview:
        """Remove and return the next ``n`` buffered bytes (``n <= _buffered``)."""
        pieces = self._pieces
        if self._buffered - len(self._run) < n:
            self._seal_run()
        self._buffered -= n
        front = pieces[0]
        if len(front) >= n:                      # whole inside one piece: a slice, no copy
            if len(front) == n:
                pieces.popleft()
            else:
                pieces[0] = front[n:]
            return front[:n]
        parts = []
        while n:
            front = pieces[0]
            if len(front) <= n:
                parts.append(pieces.popleft())
                n -= len(front)
            else:
                parts.append(front[:n])
                pieces[0] = front[n:]
                n = 0
        return memoryview(b"".join(parts))

    def _fail(self, exc: BaseException) -> NoReturn:
        self._error = exc
        self._pieces.clear()
        self._run = bytearray()
        self._buffered = 0
        self._body, self._filled, self._spare = None, 0, None
        raise exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise ProtocolError(f"frame decoder failed earlier: {self._error}") from self._error
