"""record_runs: keyless records encoded with bytes.join build exactly the batch their wire
tuples build (every codec, one or many marks, mixed lengths, keyed records among them)."""

from __future__ import annotations

import random

import msgspec
import pytest

from rillet.ipc.compression import Codec
from rillet.ipc.errors import InvalidArgument
from rillet.ipc.record_decoding import decode_batch
from rillet.ipc.record_runs import (
    RUN_MAX_LENGTHS, _array_header, build_keyless_batch, run_pieces, wire_records,
)
from rillet.ipc.records import KEYLESS_OVERHEAD, build_batch, keyless_overhead
from rillet._producer_config import EMPTY_BATCH

FIRST = 1_700_000_000_000


def tuples_of(values: list, marks: list[tuple[int, int]]) -> list[tuple]:
    """The wire tuples of keyless ``values`` at the deltas ``marks`` give, one by one."""
    out, delta, at = [], None, dict(marks)
    for i, v in enumerate(values):
        delta = at.get(i, delta)
        out.append((delta, None, v, None))
    return out


@pytest.mark.parametrize("lengths", [[100] * 7, [0], [1, 2, 3, 300, 70_000, 5], [255, 256, 65_535, 65_536, 255]])
@pytest.mark.parametrize("delta", [0, 5, 127, 128, 70_000, -3])
def test_run_encodes_as_its_wire_tuples(lengths, delta):
    values = [random.randbytes(n) for n in lengths]
    joined = b"".join(run_pieces(delta, values))
    expected = msgspec.msgpack.encode([(delta, None, v, None) for v in values])
    assert _array_header(len(values)) + joined == expected


@pytest.mark.parametrize("count", [1, 15, 16, 65_535, 65_536])
def test_array_header_is_msgpacks(count):
    assert msgspec.msgpack.encode([None] * count).startswith(_array_header(count))
    assert len(msgspec.msgpack.encode([None] * count)) == len(_array_header(count)) + count


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("marks", [[(0, 0)], [(0, 0), (3, 1)], [(0, 0), (1, 1), (2, 7), (40, 200), (59, 70_000)]])
@pytest.mark.parametrize("lengths", [[100], [0, 1, 255, 256, 3_000]])
def test_keyless_batch_is_byte_identical_to_the_tuple_build(codec, marks, lengths):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    values = [rng.randbytes(rng.choice(lengths)) for _ in range(60)]
    fields = dict(producer_id=rng.randrange(1 << 62), producer_epoch=0, first_sequence=rng.randrange(1 << 31))
    last = FIRST + max(d for _, d in marks)
    joined = build_keyless_batch(values, marks, FIRST, last, codec, **fields)
    by_tuples = build_batch(tuples_of(values, marks), FIRST, 10_000, codec, max_timestamp=last, **fields)
    assert joined == by_tuples, f"seed {seed}"
    header, records = decode_batch(joined)
    assert header.record_count == 60 and header.max_timestamp == last
    assert [(r.timestamp, r.key, r.value) for r in records] == [(FIRST + d, None, v) for d, _, v, _ in
                                                                tuples_of(values, marks)]


def test_keyless_batch_of_one_record_is_the_linger_0_shape():
    assert build_keyless_batch([b"v"], [(0, 0)], FIRST, FIRST, Codec.NONE) == build_batch(
        [(0, None, b"v", None)], FIRST, 100, Codec.NONE)


def test_keyless_batch_refuses_what_build_batch_refuses():
    with pytest.raises(InvalidArgument, match="no records"):
        build_keyless_batch([], [], FIRST, FIRST, Codec.NONE)
    with pytest.raises(InvalidArgument, match="first_sequence"):
        build_keyless_batch([b"v"], [(0, 0)], FIRST, FIRST, Codec.NONE, first_sequence=1 << 31)


def test_a_run_of_too_many_lengths_is_left_to_tuples():
    values = [b"x" * n for n in range(RUN_MAX_LENGTHS + 1)]
    assert run_pieces(0, values) is None
    assert run_pieces(0, values[:-1]) is not None
    assert build_keyless_batch(values, [(0, 0)], FIRST, FIRST, Codec.NONE) is None


@pytest.mark.parametrize("codec", list(Codec))
def test_mixed_records_become_wire_tuples_and_decode_to_themselves(codec):
    values = [bytes([i]) * (i % 5 * 40) for i in range(30)]
    records = [b"solo"] + values[:10] + [(3, b"key", b"v", ((b"h", b"x"),))] + values[10:]
    marks = [(0, 0), (1, 2), (11, 3), (12, 4)]
    wire = wire_records(records, marks)
    assert wire == ([(0, None, b"solo", None)] + [(2, None, v, None) for v in values[:10]]
                    + [(3, b"key", b"v", ((b"h", b"x"),))] + [(4, None, v, None) for v in values[10:]])
    header, decoded = decode_batch(build_batch(wire, FIRST, 10_000, codec, max_timestamp=FIRST + 4))
    assert header.record_count == 32
    assert [(r.offset, r.timestamp, r.key, r.value) for r in decoded] == [
        (i, FIRST + d, k, v) for i, (d, k, v, _) in enumerate(wire)]


@pytest.mark.parametrize("delta", [0, 127, 1 << 40, -(1 << 62)])
@pytest.mark.parametrize("length", [0, 255, 256, 65_535, 65_536])
def test_keyless_overhead_bounds_what_a_record_takes(delta, length):
    # The producer sizes a keyless record by keyless_overhead: whatever its delta (up to the 9
    # bytes of an int64), the batch is never larger than its estimate.
    values = [b"v" * length] * 3
    batch = build_keyless_batch(values, [(0, 0), (1, delta)], FIRST, FIRST + max(delta, 0), Codec.NONE)
    assert len(batch) <= EMPTY_BATCH + 3 * (length + keyless_overhead(length))
    assert keyless_overhead(length) == KEYLESS_OVERHEAD + (length >= 256) + 2 * (length >= 65_536)
