"""Keyless records encoded with ``bytes.join``: the producer's batches of ``send`` and ``send_all``.

The producer keeps a keyless record as its value alone (bytes) in its batch's record list,
and the batch keeps *marks*, ``(index, delta)``: a keyless value at ``index`` or after, up to
the next mark, has that timestamp delta (a delta changes at most once a millisecond, so a
batch of a send loop has one mark or two). Keyed records are wire tuples
``(delta, key, value, headers)`` as records.build_batch takes them.

A run of keyless records that share a delta encodes as, per record,
``94 <delta> c0 <bin header> value c0``: the same bytes but for the value and its length's
bin header. So a run is one ``bytes.join`` over the values with, between them, the separator
for the next value's length (one object when they are all one size, else one dict lookup
each, in C): no wire tuple per record, which msgspec would then walk (~55 ns a record, and
the collector sees each tuple). ``build_keyless_batch`` builds a batch of keyless values only
from those joins (the records block's array header, then the runs), with the CRC taken over
the pieces and one final join: two copies of the values, against four through msgspec. The
producer keeps a batch's one value length as values come, so the build does not look at
each value's length (``len`` over 135 values is 1.7 µs, a third of such a build).

Keyed runs were tried the same way (four pieces a record) and left out: for 530 keyed records
of one key and one value size, the join and the build cost 40 + 13 ns a record against 25 + 27
for tuples and their build (timeit), and the CPU per keyed record in ``send_all`` did not move
beyond the noise. A batch that mixes keyed and keyless records (rare: one partition's batch
takes keyless records only when they are routed there) is built through tuples
(``wire_records``), as is a run of more than RUN_MAX_LENGTHS distinct lengths.
"""

from __future__ import annotations

import msgspec

from .compression import Codec
from .records import build_block_batch

RUN_MAX_LENGTHS = 32                     # distinct lengths in a run before tuples are cheaper
_NIL = b"\xc0"
_ENCODER = msgspec.msgpack.Encoder()


def _bin_header(length: int) -> bytes:
    if length < 0x100:
        return _BIN8[length]
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


_BIN8 = [bytes((0xC4, n)) for n in range(0x100)]


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _record_head(delta: int) -> bytes:
    """A keyless record's bytes before its value's bin header: array of 4, delta, nil key."""
    return b"\x94" + _ENCODER.encode(delta) + _NIL


_HEADS = [_record_head(delta) for delta in range(128)]     # positive fixints: a send loop's deltas


def run_pieces(delta: int, values: list, length: int = -1) -> list[bytes] | None:
    """The msgpack of keyless records ``[delta, nil, value, nil]`` for ``values`` (bytes, at
    least one; all of ``length`` bytes when it is not -1), back to back without an array
    header, as pieces to join; None when the values have more than RUN_MAX_LENGTHS distinct
    lengths (then per-record tuples cost less than the separators). ``delta`` must fit a
    msgpack int (the producer's do)."""
    head = _HEADS[delta] if 0 <= delta < 128 else _record_head(delta)
    if length < 0:                                          # unknown: look (~10 ns a value)
        lens = list(map(len, values))
        if lens.count(lens[0]) == len(lens):
            length = lens[0]
    if length >= 0:                                         # one length: one separator
        bin_header = _bin_header(length)
        return [head + bin_header, (_NIL + head + bin_header).join(values), _NIL]
    first = lens[0]
    distinct = set(lens)
    if len(distinct) > RUN_MAX_LENGTHS:
        return None
    seps = {length: _NIL + head + _bin_header(length) for length in distinct}
    pieces = [None] * (2 * len(values))
    pieces[0::2] = map(seps.__getitem__, lens)
    pieces[1::2] = values
    pieces[0] = head + _bin_header(first)                   # the first record has no record before it
    pieces.append(_NIL)
    return [b"".join(pieces)]


def build_keyless_batch(values: list, marks: list[tuple[int, int]], first_timestamp: int, max_timestamp: int,
                        codec: Codec, *, producer_id: int = -1, producer_epoch: int = -1,
                        first_sequence: int = -1, length: int = -1) -> bytes | None:
    """The batch records.build_batch would build from the keyless records ``values`` (bytes)
    at the deltas ``marks`` give (the first mark at index 0), byte for byte; None when a run
    has more than RUN_MAX_LENGTHS distinct lengths (build through ``wire_records`` then).
    ``length``: the one length of all the values when the caller knows it (the producer's
    batches keep it), else -1."""
    n = len(values)
    block = [_array_header(n)]
    if len(marks) == 1:                                     # a send loop's batch, mostly
        run = run_pieces(marks[0][1], values, length)
        if run is None:
            return None
        block += run
    else:
        ends = [i for i, _ in marks[1:]]
        ends.append(n)
        for (start, delta), end in zip(marks, ends):
            if end > start:
                run = run_pieces(delta, values[start:end], length)
                if run is None:
                    return None
                block += run
    return build_block_batch(block, n, first_timestamp, max_timestamp, codec, producer_id, producer_epoch,
                             first_sequence)


def wire_records(records: list, marks: list[tuple[int, int]]) -> list:
    """``records`` with each keyless value (bytes) made its wire tuple ``(delta, None, value,
    None)`` at the delta ``marks`` give it; tuples are kept as they are."""
    out: list = []
    ends = [i for i, _ in marks[1:]]
    ends.append(len(records))
    for (start, delta), end in zip(marks, ends):
        out += [r if r.__class__ is not bytes else (delta, None, r, None) for r in records[start:end]]
    return out

