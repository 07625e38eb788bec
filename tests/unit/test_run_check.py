"""run_check: the SPU's readability check without a decode accepts a records block only when
the consumers' decode accepts it with the header's record count (seeded fuzzing: the seed is
in each failure), and accepts what producers build of keyless records."""

from __future__ import annotations

import random

import msgspec
import pytest

from rillet.ipc.compression import Codec
from rillet.ipc.errors import CorruptBatch
from rillet.ipc.record_decoding import _DECODER, check_readable, decode_batch
from rillet.ipc.record_runs import _array_header, build_keyless_batch, run_pieces
from rillet.ipc.records import ATTRIBUTES_POS, CRC_POS, HEADER_SIZE, crc32, validate_batch
from rillet.ipc.run_check import MAX_RUNS, MIN_RUN, runs_readable

FIRST = 1_700_000_000_000


def block_of(runs: list[tuple[int, list[bytes]]]) -> bytes:
    """A records block of keyless runs, as the producer encodes them."""
    count = sum(len(values) for _, values in runs)
    return _array_header(count) + b"".join(b"".join(run_pieces(d, values)) for d, values in runs)


def decodes(block: bytes, count: int) -> bool:
    """What the consumers' decode says: ``count`` records of the wire shape."""
    try:
        return len(_DECODER.decode(block)) == count
    except msgspec.DecodeError:
        return False


@pytest.mark.parametrize("delta", [0, 127, 128, 70_000, 1 << 31, -1, -33, -(1 << 40)])
@pytest.mark.parametrize("length", [0, 100, 255, 256, 65_536])
def test_a_run_of_any_delta_and_length_is_shown_readable(delta, length):
    block = block_of([(delta, [bytes([i]) * length for i in range(20)])])
    assert runs_readable(block, 20) and decodes(block, 20)
    assert not runs_readable(block, 19) and not runs_readable(block, 21)


def test_runs_as_a_send_loop_makes_them_are_shown_readable():
    values = [bytes([i % 256]) * 100 for i in range(300)]
    block = block_of([(0, values[:100]), (1, values[100:250]), (3, values[250:])])
    assert runs_readable(block, 300)
    last_run_short = block_of([(0, values[:100]), (1, values[100:102])])      # the last may be short
    assert runs_readable(last_run_short, 102)
    assert runs_readable(block_of([(0, values[:1])]), 1)


def test_what_it_does_not_show_is_left_to_the_decode():
    values = [b"v" * n for n in range(40)]
    varied = block_of([(0, [v]) for v in values])         # each length its own run of one
    assert not runs_readable(varied, 40) and decodes(varied, 40)
    short_runs = block_of([(0, values[:MIN_RUN - 1]), (1, values[:5])])
    assert not runs_readable(short_runs, MIN_RUN + 4) and decodes(short_runs, MIN_RUN + 4)
    keyed = msgspec.msgpack.encode([(0, b"k", b"v", None)] * 10)
    with_headers = msgspec.msgpack.encode([(0, None, b"v", [[b"h", b"x"]])] * 10)
    future = msgspec.msgpack.encode([(0, None, b"v", None, "later field")] * 10)
    huge_delta = msgspec.msgpack.encode([((1 << 64) - 1, None, b"v", None)] * 10)
    for block in (keyed, with_headers, future, huge_delta):
        assert not runs_readable(block, 10) and decodes(block, 10)


def test_a_block_of_more_runs_than_it_parses_is_left_to_the_decode():
    runs = [(d, [b"v" * 3] * MIN_RUN) for d in range(MAX_RUNS + 1)]
    count = MIN_RUN * (MAX_RUNS + 1)
    assert not runs_readable(block_of(runs), count) and decodes(block_of(runs), count)
    assert runs_readable(block_of(runs[:MAX_RUNS]), count - MIN_RUN)


@pytest.mark.parametrize("seed", range(6))
def test_every_block_it_accepts_decodes_to_the_count(seed):
    # Damage valid blocks at random (a byte changed, cut, extended, bytes inserted or removed)
    # and compare with the decode: runs_readable may say False to a readable block, never True
    # to one the consumers refuse or count differently.
    rng = random.Random(seed)
    accepted = refused = 0
    for _ in range(1_500):
        runs = [(rng.choice([0, 1, 200, -5, 70_000]), [rng.randbytes(length)] * rng.randint(1, 30))
                for length in rng.choices([0, 1, 5, 255, 256], k=rng.randint(1, 3))]
        count = sum(len(v) for _, v in runs)
        block = bytearray(block_of(runs))
        how = rng.randrange(5)
        at = rng.randrange(len(block))
        if how == 0:
            block[at] = rng.choice([0xC0, 0x94, 0xC4, 0xC5, 0x00, 0x7F, 0xCC, 0xD3, rng.randrange(256)])
        elif how == 1:
            del block[at:]
        elif how == 2:
            block += rng.randbytes(rng.randint(1, 4))
        elif how == 3:
            block[at:at] = rng.randbytes(rng.randint(1, 3))
        else:
            del block[at:at + rng.randint(1, 3)]
        claimed = count + rng.choice([0, 0, 0, -1, 1])
        if runs_readable(bytes(block), claimed):
            accepted += 1
            assert decodes(bytes(block), claimed), f"seed {seed}: {bytes(block)[:80]!r}"
        else:
            refused += 1
    assert accepted > 50 and refused > 50            # both sides were exercised


@pytest.mark.parametrize("marks", [[(0, 0)], [(0, 0), (70, 1)]])
def test_check_readable_takes_producer_batches_and_still_refuses_damage(marks):
    values = [bytes([i]) * 100 for i in range(135)]
    batch = build_keyless_batch(values, marks, FIRST, FIRST + 1, Codec.NONE)
    check_readable(batch, 0, validate_batch(batch))     # shown readable, no decode
    assert [r.value for r in decode_batch(batch)[1]] == values
    # A value whose bin header says one byte more: the CRC is right, the records are not.
    bad = bytearray(batch)
    bad[HEADER_SIZE + 3 + 4] = 101
    bad[CRC_POS:CRC_POS + 4] = crc32(bytes(bad[ATTRIBUTES_POS:])).to_bytes(4, "little")
    with pytest.raises(CorruptBatch, match="does not decode"):
        check_readable(bytes(bad), 0, validate_batch(bytes(bad)))
