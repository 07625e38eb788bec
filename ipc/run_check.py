"""The SPU's readability check without decoding a record, for the records blocks producers build
from keyless runs (ipc/record_runs.py).

check_readable (ipc/record_decoding.py) decodes every record of a batch before the SPU stores
it: ~75 ns a 100 B record, 10 µs a 16 KiB batch of a ``send`` loop. But a keyless run has a
fixed shape: each record is ``94 <int> c0 <bin header> value c0`` with the same int and bin
header bytes, so the records of a run start ``stride`` bytes apart. :func:`runs_readable`
parses a run's first record (every byte of its framing checked as msgpack), then checks each
framing byte of the records after it with one strided slice (``bytes.lstrip`` finds the first
record that differs, in C), and parses the record there as the next run's first. A block it
accepts is exactly an array of ``count`` records ``[int, nil, bin, nil]``, the shape every
consumer decodes, so accepting it without a decode changes nothing. Anything else (keyed
records, headers, garbage, runs too short to be worth it) answers False: "not shown", and the
caller decodes the block as before, which accepts or refuses it with its own error.
"""

from __future__ import annotations

_NIL, _ARRAY4 = 0xC0, 0x94
# msgpack int formats after their type byte: uint8..32, int8..64 (fixints have none; uint64
# beyond int64 is left to the decode)
_INT_BYTES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_BIN_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}                 # bin8, bin16, bin32 length bytes
# A run shorter than this that is not the block's last means records of varied lengths or
# deltas: give up early (a decode is cheaper than a run parsed per record).
MIN_RUN = 8
# At most this many runs are parsed (a producer's batch has one a millisecond it was open): the
# check's cost stays bounded whatever a request holds, and a block of more is decoded.
MAX_RUNS = 64


def _array_count(block: bytes) -> tuple[int, int] | None:
    """(element count, header length) of the msgpack array header at the block's start."""
    if not block:
        return None
    t = block[0]
    if 0x90 <= t <= 0x9F:
        return t & 0x0F, 1
    if t == 0xDC and len(block) >= 3:
        return int.from_bytes(block[1:3], "big"), 3
    if t == 0xDD and len(block) >= 5:
        return int.from_bytes(block[1:5], "big"), 5
    return None


def _record_shape(block: bytes, pos: int) -> tuple[int, int] | None:
    """(framing bytes before the value, whole record length) of a keyless record
    ``[int, nil, bin, nil]`` at ``pos``, or None when it is not one, or is cut short."""
    end = len(block)
    if pos + 2 > end or block[pos] != _ARRAY4:
        return None
    t = block[pos + 1]
    if t <= 0x7F or t >= 0xE0:                           # positive or negative fixint
        p = pos + 2
    else:
        n = _INT_BYTES.get(t)
        if n is None:
            return None
        p = pos + 2 + n
    if p + 2 > end or block[p] != _NIL:
        return None
    n = _BIN_BYTES.get(block[p + 1])
    if n is None or p + 2 + n > end:
        return None
    head = p + 2 + n - pos
    size = head + int.from_bytes(block[p + 2:p + 2 + n], "big") + 1
    if pos + size > end or block[pos + size - 1] != _NIL:
        return None
    return head, size


_BYTE = [bytes((b,)) for b in range(256)]


def runs_readable(block, count: int) -> bool:
    """True when ``block`` (bytes) is a msgpack array of exactly ``count`` keyless records
    ``[int, nil, bin, nil]`` in runs of records that share their int and bin header bytes
    (and so their length) and fill the block to its end; False when that is not shown."""
    start = _array_count(block)
    if start is None or start[0] != count:
        return False
    pos, end, done = start[1], len(block), 0
    for _ in range(MAX_RUNS):
        if done >= count:
            break
        shape = _record_shape(block, pos)
        if shape is None:
            return False
        head, size = shape
        # Records 1..m after this one, if they are of this run: each framing byte of theirs
        # (its head, and the nil that ends it) equals this record's, at a stride of ``size``.
        m = min(count - done - 1, (end - pos) // size - 1)
        same = m
        if m > 0:
            first, span = pos + size, (m - 1) * size + 1
            offsets = (*range(head), size - 1)
            lanes = [block[first + off:first + off + span:size] for off in offsets]
            wanted = [_BYTE[block[pos + off]] * m for off in offsets]
            if lanes != wanted:          # the run ends before the block's end: where?
                same = m - max(len(lane.lstrip(want[:1])) for lane, want in zip(lanes, wanted))
        done += 1 + same
        pos += (1 + same) * size
        if done < count and 1 + same < MIN_RUN:
            return False
    return done == count and pos == end
