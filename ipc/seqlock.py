"""A seqlock over a shared buffer: one writer, any number of lock-free readers.

The lock is a u64 sequence counter at an 8-byte-aligned offset of the buffer
(in rillet, the shared-memory metadata table). The writer makes it odd, writes,
then makes it even again. A reader reads the counter (odd: a write is in
progress, try again), copies what it needs, and re-reads the counter; if it
changed, the copy may be torn and the reader tries again. Readers never block
the writer, and the writer never waits for readers.

Why this is correct on x86-64. Writer and readers are separate processes, so
the GIL orders nothing between them; the hardware does. Every access here is a
``struct`` call on a shared ``mmap``, i.e. a C ``memcpy`` inside a CPython
function: no compiler can move those loads and stores across the calls in
between, so they reach the CPU in program order. x86-64 is TSO: stores become
visible to other cores in program order and loads are not reordered with other
loads. So a reader that sees the even counter ``s`` twice, around its copy, saw
every store of the write that produced ``s`` and no store of a later write
(that write makes the counter odd *before* its first data store, and the
reader's second counter load comes after its data loads). The counter itself is
moved by one 8-byte memcpy (struct uses the native routine for "<Q" on a
little-endian host), a single aligned access, which x86-64 performs atomically.
On weakly ordered CPUs (aarch64) this argument fails: there, the counter
accesses would need acquire/release fences, which pure Python cannot issue;
rillet targets x86-64.

A copy made during a write can be any garbage, so the reader's copy function
must not trust it: if it raises while the counter moved, the read is retried;
the exception propagates only from a stable copy.

A dead writer (the SC killed mid-write) leaves the counter odd. Readers then
give up after ``max_retries`` reads with MetadataTableBusy instead of spinning
forever; a restarted SC takes the table over and its first write, which starts
from that odd value, makes it even again (or it builds a new table at zero).
The writer also leaves the counter odd when its own write raises, so readers
never accept a half-written state; its next write starts from that odd value.
"""

from __future__ import annotations

import struct
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from .errors import InvalidArgument, MetadataTableBusy

T = TypeVar("T")

_SEQ = struct.Struct("<Q")
SEQ_SIZE = _SEQ.size
assert SEQ_SIZE == 8, SEQ_SIZE
_SEQ_MASK = (1 << 64) - 1

# About one second of patience before a reader declares the writer stuck: the
# first _SPIN_READS retries only yield the CPU, later ones sleep _BACKOFF_S.
DEFAULT_MAX_RETRIES = 1064
_SPIN_READS = 64
_BACKOFF_S = 0.001


def _backoff(attempt: int) -> None:
    time.sleep(0 if attempt < _SPIN_READS else _BACKOFF_S)


class SeqLock:
    """The seqlock whose counter sits at ``buf[offset:offset + 8]``.

    ``buf`` is anything struct accepts: a (shared) mmap, bytearray or memoryview,
    read-only for readers. Single writer by contract: nothing stops two writers,
    and two writers corrupt the table.
    """

    __slots__ = ("_buf", "_offset")

    def __init__(self, buf, offset: int) -> None:
        if not isinstance(offset, int) or offset < 0 or offset % SEQ_SIZE:
            raise InvalidArgument(f"seqlock offset {offset!r} must be a non-negative multiple of {SEQ_SIZE}")
        if offset + SEQ_SIZE > len(buf):
            raise InvalidArgument(f"seqlock offset {offset} needs {offset + SEQ_SIZE} bytes, buffer has {len(buf)}")
        self._buf = buf
        self._offset = offset

    @property
    def sequence(self) -> int:
        """The counter now: even when idle, odd during a write (or after a dead writer)."""
        return _SEQ.unpack_from(self._buf, self._offset)[0]

    @contextmanager
    def write(self) -> Iterator[None]:
        """Writer side: ``with lock.write(): <store into buf>``.

        If the body raises, the counter stays odd (readers see Busy, never a half
        write) and the exception propagates.
        """
        buf, offset = self._buf, self._offset
        seq = _SEQ.unpack_from(buf, offset)[0]
        if not seq & 1:
            seq = (seq + 1) & _SEQ_MASK
            _SEQ.pack_into(buf, offset, seq)
        yield
        _SEQ.pack_into(buf, offset, (seq + 1) & _SEQ_MASK)

    def read(self, fn: Callable[[], T], *, max_retries: int = DEFAULT_MAX_RETRIES) -> T:
        """Reader side: call ``fn()`` (which copies out of the buffer) until it ran
        inside one quiet period of the writer, and return its result.

        Raises MetadataTableBusy after ``max_retries`` attempts that each found a
        write in progress or were overlapped by one.
        """
        if max_retries < 1:
            raise InvalidArgument(f"max_retries={max_retries} must be at least 1")
        unpack, buf, offset = _SEQ.unpack_from, self._buf, self._offset
        for attempt in range(max_retries):
            before = unpack(buf, offset)[0]
            if not before & 1:
                try:
                    result = fn()
                except Exception:
                    if unpack(buf, offset)[0] == before:
                        raise               # a stable copy is bad: a real error
                else:
                    if unpack(buf, offset)[0] == before:
                        return result
            _backoff(attempt)
        raise MetadataTableBusy(
            f"metadata table stayed mid-update after {max_retries} reads; is the SC alive?"
        )
