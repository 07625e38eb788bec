"""Recovery of the active segment at open: keep the longest valid prefix, set the torn tail aside.

Strategy (ZODB FileStorage's, with Kafka's per-batch checks): walk the active segment from
position 0, checking each batch with ``validate_batch`` (length, magic, record count, CRC)
and requiring its base offset to be the expected next offset. The first failure, or a zero
header, ends the valid prefix. If any non-zero byte follows it, those bytes (up to the last
non-zero byte) are a torn tail: they are copied byte for byte into a side file
``<base>.log.cut-<position>`` next to the segment, then zeroed in the segment, and one
WARNING names the file, position, byte count and side file. Nothing is thrown away unseen.

The index of the active segment is rebuilt during the same walk (the old one is a hint
only), and the epochs met are returned so the leader-epoch cache can be completed.

A side file holds raw bytes (no header of its own): exactly what followed the last valid
batch. The layout of a segment is in segment.py; the only struct here is the one of the
batch header, read through ``records.validate_batch`` (``BATCH_HEADER``, 61 bytes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rillet.ipc.errors import CorruptBatch
from rillet.ipc.records import BATCH_HEADER, HEADER_SIZE, BatchHeader, validate_batch

from .files import write_atomic
from .segment import Segment, nonzero_end

assert BATCH_HEADER.size == HEADER_SIZE == 61, BATCH_HEADER.size
_ZERO_HEADER = bytes(HEADER_SIZE)


@dataclass(frozen=True)
class RecoveryCut:
    """What recovery set aside from one segment."""

    file: Path          # the segment that was cut
    position: int       # byte position of the cut (end of the valid prefix)
    bytes_cut: int      # bytes moved to the side file (position .. last non-zero byte)
    side_file: Path     # where they are kept, byte for byte
    offset: int         # log end offset after the cut (the next offset to assign)
    reason: str         # why the walk stopped at ``position``


@dataclass(frozen=True)
class ScanEnd:
    position: int       # end of the last valid batch
    next_offset: int    # the next offset after it
    reason: str         # why the walk stopped


def scan(buf, base_offset: int, on_batch: Callable[[int, BatchHeader], None]) -> ScanEnd:
    """Walk valid, contiguous batches of ``buf`` from position 0, calling ``on_batch`` for each."""
    pos, expected, limit = 0, base_offset, len(buf)
    while True:
        if limit - pos < HEADER_SIZE:
            left = limit - pos
            reason = f"only {left} bytes left before the end of the file" if left else "end of the file"
            return ScanEnd(pos, expected, reason)
        try:
            header = validate_batch(buf, pos, max_batch_bytes=limit)
        except CorruptBatch as exc:
            zero = bytes(buf[pos:pos + HEADER_SIZE]) == _ZERO_HEADER
            return ScanEnd(pos, expected, "zero header (end of data)" if zero else str(exc))
        if header.base_offset != expected:
            return ScanEnd(pos, expected, f"batch at position {pos} has base offset {header.base_offset}, "
                                          f"expected {expected}")
        on_batch(pos, header)
        pos += header.total_size
        expected = header.next_offset


def recover_active(segment: Segment, file_size: int,
                   logger: logging.Logger) -> tuple[RecoveryCut | None, list[tuple[int, int]]]:
    """Recover ``segment`` (opened by Segment.open_active, ``file_size`` its size before re-extension).

    Sets its used length, next offset and index; returns the cut made (or None) and the
    ``(epoch, start_offset)`` changes met, in log order.
    """
    index, base = segment.index, segment.base_offset
    index.reset(())
    epochs: list[tuple[int, int]] = []

    def on_batch(pos: int, header: BatchHeader) -> None:
        if index.wants_entry(pos):
            index.add(header.base_offset - base, pos)
        if not epochs or epochs[-1][0] != header.leader_epoch:
            epochs.append((header.leader_epoch, header.base_offset))

    limit = min(file_size, segment.capacity)
    with memoryview(segment.buffer) as whole, whole[:limit] as view:
        end = scan(view, base, on_batch)
        tail_end = nonzero_end(view, end.position, limit, segment.fd)
    segment.used, segment.next_offset = end.position, end.next_offset
    if tail_end == end.position:
        return None, epochs
    return cut_tail(segment, end, tail_end, logger), epochs


def cut_tail(segment: Segment, end: ScanEnd, tail_end: int, logger: logging.Logger) -> RecoveryCut:
    """Copy ``[end.position, tail_end)`` to a side file, durably, then zero it in the segment."""
    pos = end.position
    side = side_file_for(segment.log_path, pos)
    write_atomic(side, segment.buffer[pos:tail_end])
    segment.zero(pos, tail_end)
    segment.flush()
    cut = RecoveryCut(segment.log_path, pos, tail_end - pos, side, end.next_offset, end.reason)
    logger.warning(
        "recovery cut %d bytes at position %d of %s (%s); log end offset is now %d; "
        "the cut bytes are kept in %s",
        cut.bytes_cut, pos, segment.log_path, end.reason, end.next_offset, side,
    )
    return cut


def side_file_for(log_path: Path, position: int) -> Path:
    """``<base>.log.cut-<position>``, with ``.1``, ``.2``... if an earlier cut used the name."""
    side = log_path.with_name(f"{log_path.name}.cut-{position}")
    n = 0
    while side.exists():
        n += 1
        side = log_path.with_name(f"{log_path.name}.cut-{position}.{n}")
    return side
