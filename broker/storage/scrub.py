"""The scrub: every sealed segment's batches checked against their CRC, a slice at a time.

Sealed segments are trusted by the read path (their batches were checked when appended or
recovered), so a flipped bit in one stays silent until a consumer trips over it. The SPU
runs a ``Scrubber`` per replica in small slices on its event loop (a byte budget per call,
so produce and fetch never wait long behind it): a first pass right after the replica is
opened (this covers an unclean stop: the page cache may not have reached the disk), then
one pass every interval, and between passes a catch-up over each segment sealed since the last
pass (``unchecked`` / ``catch_up``), so a segment is checked soon after it is sealed, not up to an
interval later.

A damaged batch is reported as ``Damage``: the offsets it held, from its header (the chain
of base offsets around it was checked when the segment was opened, so the range is right
even though the batch's own bytes are not). Segments that go away mid-pass (retention,
truncation) are skipped; the pass continues with the next base offset.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from rillet.ipc.errors import CorruptBatch, StorageError
from rillet.ipc.records import validate_batch

from .log import PartitionLog
from .segment import walk_spans


@dataclass(frozen=True)
class Damage:
    """A batch of a sealed segment whose bytes fail their checks."""
    segment: str              # the segment file
    position: int             # of the batch in it
    first_offset: int         # offsets the batch held: lost unless another copy has them
    last_offset: int
    cause: str                # validate_batch's words

    def describe(self) -> str:
        return (f"offsets {self.first_offset} to {self.last_offset} are damaged ({self.cause}, "
                f"position {self.position} of {self.segment})")


class Scrubber:
    """Walks the sealed segments of one log, oldest first, in slices (``step``)."""

    def __init__(self, log: PartitionLog) -> None:
        self._log = log
        self._next = 0           # the next offset to check (a batch boundary, or a later segment's base)
        self.passes = 0          # completed passes over every sealed segment
        self.checked_bytes = 0   # in all passes, for the SPU's budget and the tests
        self.checked_batches = 0
        # Sealed offsets below this were checked by a finished pass: segments sealed later (the
        # active one rolling) are checked by a catch-up from here, not an interval later.
        self.checked_upto = 0
        self.catching_up = False

    def restart(self) -> None:
        self._next = 0
        self.checked_upto = 0
        self.catching_up = False

    def unchecked(self) -> bool:
        """A sealed segment holds offsets no finished pass has checked (sealed since, say)."""
        segments = self._log.sealed()
        return bool(segments) and segments[-1].next_offset > self.checked_upto

    def truncated(self, offset: int) -> None:
        """The log was cut back to ``offset``: offsets from there will name new batches."""
        self.checked_upto = min(self.checked_upto, offset)
        self._next = min(self._next, offset)

    def catch_up(self) -> None:
        """Check only what ``unchecked`` found; the next steps walk from there."""
        self._next = max(self.checked_upto, self._log.log_start_offset)
        self.catching_up = True

    def step(self, max_bytes: int, max_batches: int = 1 << 30) -> tuple[bool, list[Damage]]:
        """Check batches worth about ``max_bytes``, and at most ``max_batches`` of them (at least
        one); return (pass finished, damage found in this slice). A finished pass starts again
        from the oldest segment on the next call. A check costs ~1.7 us per batch plus the CRC
        (~2.5 GB/s): the batch bound is what keeps a slice of small batches short."""
        budget, found = max_bytes, []
        batches = max_batches
        segments = self._log.sealed()
        bases = [s.base_offset for s in segments]
        i = max(bisect.bisect_right(bases, self._next) - 1, 0)
        while i < len(segments) and budget > 0 and batches > 0:
            seg = segments[i]
            if self._next >= seg.next_offset or seg.buffer is None:
                i += 1
                continue
            start_offset = max(self._next, seg.base_offset)
            at = 0 if start_offset == seg.base_offset else seg.find(start_offset)[0]
            for pos, base, size, _epoch, next_offset in walk_spans(seg.buffer, at, seg.used, start_offset):
                try:
                    validate_batch(seg.buffer, pos)
                except CorruptBatch as exc:
                    found.append(Damage(str(seg.log_path), pos, base, next_offset - 1, str(exc)))
                self._next, at = next_offset, pos + size
                budget -= size
                batches -= 1
                self.checked_batches += 1
                self.checked_bytes += size
                if budget <= 0 or batches <= 0:
                    break
            else:
                if self._next < seg.next_offset:
                    # The walk stopped at a header that does not continue the chain (its magic, length
                    # or base offset, which the CRC does not cover): nothing after it can be trusted.
                    found.append(Damage(str(seg.log_path), at, self._next, seg.next_offset - 1,
                                        f"batch header at position {at} is damaged"))
                self._next = seg.next_offset
                i += 1
        done = i >= len(segments)
        if done:
            self._next = 0
            self.passes += 1
            self.catching_up = False
            if segments:
                self.checked_upto = max(self.checked_upto, segments[-1].next_offset)
        return done, found


def check_at(log: PartitionLog, offset: int) -> Damage | None:
    """Check the batch holding ``offset`` now, in any segment (a reader found it bad): the
    scrub's check for one batch. None when it is whole, or when ``offset`` is not in the log."""
    for seg in (*log.sealed(), log.active_segment):
        if seg.base_offset <= offset < seg.next_offset and seg.buffer is not None:
            break
    else:
        return None
    try:
        pos, base = seg.find(offset)
    except StorageError as exc:          # the walk to it leaves the segment: its headers are damaged
        return Damage(str(seg.log_path), 0, offset, seg.next_offset - 1, str(exc))
    try:
        validate_batch(seg.buffer, pos)
    except CorruptBatch as exc:
        spans = list(walk_spans(seg.buffer, pos, seg.used, base))
        last = spans[0][4] - 1 if spans else seg.next_offset - 1     # the header's range when it chains
        return Damage(str(seg.log_path), pos, base, last, str(exc))
    return None
