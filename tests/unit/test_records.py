"""records: the batch format as byte vectors, the builder, decoding, and every check
validate_batch / decode_batch make on damaged input."""

from __future__ import annotations

import random
import struct
import zlib

import msgspec
import pytest

from rillet.ipc.compression import Codec, compress
from rillet.ipc.errors import CompressionError, CorruptBatch, InvalidArgument, UnknownCodec
from rillet.ipc.record_decoding import (
    check_readable,
    decode_batch,
    decode_records,
    DecodedRecord,
    iter_records,
    RawRecord,
    VIEW_CHECK_MIN_RECORD_BYTES,
)
from rillet.ipc.records import (
    build_batch,
    ATTRIBUTES_POS,
    BATCH_HEADER,
    CRC_POS,
    HEADER_SIZE,
    MAGIC,
    MAGIC_POS,
    RECORD_OVERHEAD,
    BatchBuilder,
    encode_batch,
    iter_batches,
    peek_header,
    stamp_batch,
    validate_batch,
)

ALL = list(Codec)


def tiny_batch() -> bytes:
    builder = BatchBuilder()
    assert builder.append(b"k", b"v", 1000) == 0
    assert builder.append(None, b"vv", 1005) == 1
    return builder.build()


# The records block of tiny_batch(), written out by hand from the msgpack spec.
TINY_RECORDS = bytes([
    0x92,                                   # array of 2 records
    0x94, 0x00, 0xC4, 0x01, ord("k"), 0xC4, 0x01, ord("v"), 0xC0,             # [0, b"k", b"v", nil]
    0x94, 0x05, 0xC0, 0xC4, 0x02, ord("v"), ord("v"), 0xC0,                   # [5, nil, b"vv", nil]
])


def recrc(buf: bytearray) -> bytearray:
    """Rewrite the CRC after a deliberate edit, so a later check is the one tested."""
    struct.pack_into("<I", buf, CRC_POS, zlib.crc32(bytes(buf[ATTRIBUTES_POS:])))
    return buf


def with_records_block(block: bytes, *, record_count: int = 1, codec: Codec = Codec.NONE) -> bytes:
    """A batch whose header is right (CRC included) around an arbitrary records block."""
    buf = bytearray(HEADER_SIZE) + block
    BATCH_HEADER.pack_into(buf, 0, 0, HEADER_SIZE - 12 + len(block), -1, MAGIC, 0, int(codec),
                           record_count - 1, 1, 1, -1, -1, -1, record_count)
    return bytes(recrc(buf))


def sample_records(n: int = 5, seed: int = 1) -> list[tuple]:
    rng = random.Random(seed)
    keys = [None, b"", b"key", rng.randbytes(300)]
    values = [b"", b"v", rng.randbytes(70000), b"text " * 50]
    headers = [None, [(b"trace", b"abc")], [(b"", b""), (b"h2", rng.randbytes(40))]]
    return [
        (keys[i % len(keys)], values[i % len(values)], 1_700_000_000_000 + rng.randint(-5000, 5000),
         headers[i % len(headers)])
        for i in range(n)
    ]


# --- the header as a byte vector ------------------------------------------------------------

def test_header_layout_constants():
    assert BATCH_HEADER.size == HEADER_SIZE == 61
    assert (MAGIC_POS, CRC_POS, ATTRIBUTES_POS) == (16, 17, 21)


def test_tiny_batch_every_field_by_position():
    b = tiny_batch()
    assert len(b) == 61 + len(TINY_RECORDS) == 79
    assert struct.unpack_from("<q", b, 0) == (0,)                       # base_offset
    assert struct.unpack_from("<i", b, 8) == (79 - 12,)                 # batch_length
    assert struct.unpack_from("<i", b, 12) == (-1,)                     # leader_epoch
    assert b[16] == 1                                                   # magic
    assert struct.unpack_from("<I", b, 17) == (zlib.crc32(b[21:]),)     # crc
    assert struct.unpack_from("<H", b, 21) == (0,)                      # attributes
    assert struct.unpack_from("<i", b, 23) == (1,)                      # last_offset_delta
    assert struct.unpack_from("<q", b, 27) == (1000,)                   # first_timestamp
    assert struct.unpack_from("<q", b, 35) == (1005,)                   # max_timestamp
    assert struct.unpack_from("<q", b, 43) == (-1,)                     # producer_id
    assert struct.unpack_from("<h", b, 51) == (-1,)                     # producer_epoch
    assert struct.unpack_from("<i", b, 53) == (-1,)                     # first_sequence
    assert struct.unpack_from("<i", b, 57) == (2,)                      # record_count
    assert b[61:] == TINY_RECORDS


def test_tiny_batch_whole_bytes():
    # The same batch assembled independently, as a last guard against a silent format change.
    tail = (struct.pack("<H", 0) + struct.pack("<i", 1) + struct.pack("<qqqhii", 1000, 1005, -1, -1, -1, 2)
            + TINY_RECORDS)
    expected = struct.pack("<qiiB", 0, 67, -1, 1) + struct.pack("<I", zlib.crc32(tail)) + tail
    assert tiny_batch() == expected


def test_producer_fields_land_in_the_header():
    builder = BatchBuilder()
    builder.append(None, b"x", 7)
    b = builder.build(producer_id=1234567890123, producer_epoch=-7, first_sequence=99)
    assert struct.unpack_from("<qhi", b, 43) == (1234567890123, -7, 99)
    validate_batch(b)


@pytest.mark.parametrize("codec", ALL)
def test_attributes_carry_the_codec(codec):
    b = encode_batch([(b"k", b"v" * 100, 1)], codec)
    assert struct.unpack_from("<H", b, ATTRIBUTES_POS) == (int(codec),)
    assert peek_header(b).codec == codec
    validate_batch(b)


def test_compressed_block_is_the_plain_block_compressed():
    records = [(b"k", b"v", 1000), (None, b"vv", 1005)]
    for codec in (Codec.GZIP, Codec.ZSTD):
        b = encode_batch(records, codec)
        assert struct.unpack_from("<i", b, 8) == (len(b) - 12,)
        assert b[61:] == compress(codec, TINY_RECORDS)


# --- the builder ----------------------------------------------------------------------------

def test_builder_counts_and_indexes():
    builder = BatchBuilder("LZ4")
    assert builder.codec is Codec.LZ4 and len(builder) == 0
    assert [builder.append(None, b"%d" % i, i) for i in range(10)] == list(range(10))
    assert len(builder) == 10


def test_build_is_repeatable():
    builder = BatchBuilder()
    builder.append(b"k", b"v", 1)
    first = builder.build()
    assert builder.build() == first
    builder.append(b"k", b"w", 2)
    assert peek_header(builder.build()).record_count == 2


def test_empty_builder_refuses_to_build():
    with pytest.raises(InvalidArgument, match="no records"):
        BatchBuilder().build()


def test_unknown_codec_is_refused_on_construction():
    with pytest.raises(UnknownCodec, match="'brotli'"):
        BatchBuilder("brotli")


@pytest.mark.parametrize("codec", ALL)
def test_estimated_size_bounds_the_plain_batch(codec):
    builder, plain = BatchBuilder(codec), BatchBuilder()
    assert builder.estimated_size >= HEADER_SIZE
    rng = random.Random(3)
    for i, (key, value, ts, headers) in enumerate(sample_records(40)):
        before = builder.estimated_size
        ts += rng.choice([0, 1 << 40])                                   # deltas of 9 bytes too
        builder.append(key, value, ts, headers)
        plain.append(key, value, ts, headers)
        assert builder.estimated_size > before
        assert builder.estimated_size >= len(plain.build())
    assert builder.estimated_size - len(plain.build()) <= 40 * RECORD_OVERHEAD + 40 * 25


def test_appended_buffers_are_copied():
    value, key = bytearray(b"before"), bytearray(b"key")
    builder = BatchBuilder()
    builder.append(memoryview(key), value, 1)
    value[:] = b"after!"
    key[:] = b"KEY"
    [record] = decode_batch(builder.build())[1]
    assert (record.key, record.value) == (b"key", b"before")


@pytest.mark.parametrize("key, value, timestamp, message", [
    (None, "text", 1, "record value must be bytes, bytearray or memoryview, not str"),
    (None, 5, 1, "record value must be bytes, bytearray or memoryview, not int"),  # bytes(5) would be 5 zeros
    ("k", b"v", 1, "record key must be bytes, bytearray or memoryview, not str"),
    (None, b"v", 1.5, "record timestamp_ms must be an int, not float"),
    (None, b"v", True, "record timestamp_ms must be an int, not bool"),
    (None, b"v", None, "record timestamp_ms must be an int, not NoneType"),
])
def test_append_refuses_wrong_types(key, value, timestamp, message):
    with pytest.raises(InvalidArgument) as info:
        BatchBuilder().append(key, value, timestamp)
    assert str(info.value) == message


@pytest.mark.parametrize("headers, message", [
    ([(b"k",)], "record headers must be"),
    (5, "record headers must be"),
    ([("k", b"v")], "record header key must be bytes"),
    ([(b"k", 1)], "record header value must be bytes"),
])
def test_append_refuses_bad_headers(headers, message):
    with pytest.raises(InvalidArgument, match=message):
        BatchBuilder().append(None, b"v", 1, headers)


@pytest.mark.parametrize("field, value", [
    ("producer_epoch", 1 << 15), ("first_sequence", -(1 << 31) - 1), ("producer_id", 1 << 63),
])
def test_build_refuses_header_fields_out_of_range(field, value):
    builder = BatchBuilder()
    builder.append(None, b"v", 1)
    with pytest.raises(InvalidArgument, match=f"^{field} {value} is outside"):
        builder.build(**{field: value})


def test_build_refuses_timestamps_out_of_range():
    builder = BatchBuilder()
    builder.append(None, b"v", 0)
    builder.append(None, b"v", 1 << 63)
    with pytest.raises(InvalidArgument, match=f"record timestamp_ms {1 << 63} is outside"):
        builder.build()
    builder = BatchBuilder()
    builder.append(None, b"v", (1 << 63) - 1)
    builder.append(None, b"v", -(1 << 63))                              # delta below msgpack's int64
    with pytest.raises(InvalidArgument, match="too far apart"):
        builder.build()


def test_int_subclass_timestamp_is_accepted():
    class Millis(int):
        pass
    b = encode_batch([(None, b"v", Millis(42))])
    assert decode_batch(b)[1][0].timestamp == 42


def test_one_record_batch_the_linger_0_shape():
    # build() takes a shorter way for one record (no min/max over deltas); same bytes, same checks.
    built = {BatchBuilder(c) for c in (Codec.NONE, 0, "none")}
    for b in built:
        b.append(b"k", b"v", 1_700_000_000_123)
    [one] = {b.build() for b in built}
    header, [rec] = decode_batch(one)
    assert header.first_timestamp == header.max_timestamp == rec.timestamp == 1_700_000_000_123
    assert header.last_offset_delta == 0 and (rec.key, rec.value) == (b"k", b"v")
    far = BatchBuilder(Codec.NONE)
    far.append(None, b"v", 1 << 63)
    with pytest.raises(InvalidArgument, match=f"record timestamp_ms {1 << 63} is outside"):
        far.build()


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ALL)
def test_round_trip_every_codec(codec):
    records = sample_records(12)
    b = bytearray(encode_batch(records, codec))
    stamp_batch(b, 0, 500, 3)
    header, decoded = decode_batch(b)
    assert (header.base_offset, header.leader_epoch, header.record_count) == (500, 3, 12)
    assert header.first_timestamp == records[0][2]
    assert header.max_timestamp == max(r[2] for r in records)
    assert [r.offset for r in decoded] == list(range(500, 512))
    for (key, value, ts, headers), record in zip(records, decoded):
        assert isinstance(record, RawRecord)
        assert (record.key, record.value, record.timestamp) == (key, value, ts)
        assert record.headers == (tuple(headers) if headers else None)


def test_round_trip_edge_values():
    records = [
        (None, b"", 0, None),
        (b"", b"\x00", -1, []),                                           # empty headers become None
        (memoryview(b"mv"), bytearray(b"ba"), (1 << 63) - 1 - (1 << 62), {b"a": b"1", b"b": b"2"}),
    ]
    _, decoded = decode_batch(encode_batch(records))
    assert [(r.key, r.value, r.timestamp, r.headers) for r in decoded] == [
        (None, b"", 0, None),
        (b"", b"\x00", -1, None),
        (b"mv", b"ba", (1 << 63) - 1 - (1 << 62), ((b"a", b"1"), (b"b", b"2"))),
    ]


def test_decode_at_a_position_inside_a_larger_buffer():
    batch = tiny_batch()
    buf = bytearray(b"\xAA" * 13) + batch + b"\xBB" * 7
    for source in (buf, bytes(buf), memoryview(buf)):
        header, records = decode_batch(source, 13)
        assert header.total_size == len(batch)
        assert [(r.offset, r.timestamp, r.key, r.value) for r in records] == [(0, 1000, b"k", b"v"), (1, 1005, None, b"vv")]
    del source
    buf.extend(b"x")                       # decode_batch left no view of buf behind (it stays resizable)


# --- stamping -----------------------------------------------------------------------------------

def test_stamp_batch_keeps_the_crc():
    buf = bytearray(tiny_batch())
    crc = struct.unpack_from("<I", buf, CRC_POS)
    stamp_batch(buf, 0, 1 << 40, 77)
    assert struct.unpack_from("<I", buf, CRC_POS) == crc
    header = validate_batch(buf)
    assert (header.base_offset, header.leader_epoch, header.last_offset, header.next_offset) == (1 << 40, 77, (1 << 40) + 1, (1 << 40) + 2)


# --- validate_batch on damage ------------------------------------------------------------------

def test_every_single_bit_flip_outside_the_stamped_fields_is_caught():
    batch = tiny_batch()
    stamped = set(range(0, 8)) | set(range(12, 16))          # base_offset, leader_epoch: not covered by design
    for pos in range(len(batch)):
        for bit in range(8):
            damaged = bytearray(batch)
            damaged[pos] ^= 1 << bit
            if pos in stamped:
                validate_batch(damaged)
            else:
                with pytest.raises(CorruptBatch):
                    validate_batch(damaged)


def test_flipped_bit_in_records_names_the_crc():
    damaged = bytearray(tiny_batch())
    damaged[70] ^= 0x10
    with pytest.raises(CorruptBatch, match=r"^batch CRC mismatch at position 0: stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}$"):
        validate_batch(damaged)


def test_wrong_magic():
    damaged = bytearray(tiny_batch())
    damaged[MAGIC_POS] = 2
    with pytest.raises(CorruptBatch, match="^batch magic 2, expected 1$"):
        validate_batch(damaged)


def test_truncated_batch_at_every_length():
    batch = tiny_batch()
    for cut in range(len(batch)):
        with pytest.raises(CorruptBatch):
            validate_batch(batch[:cut])
    with pytest.raises(CorruptBatch, match="needs 61 bytes, 60 available at position 0"):
        validate_batch(batch[:60])
    with pytest.raises(CorruptBatch, match="batch of 79 bytes at position 0 is cut short: 78 bytes present"):
        validate_batch(batch[:78])


@pytest.mark.parametrize("length", [48, 0, -1, -(1 << 31)])
def test_batch_length_too_small(length):
    damaged = bytearray(tiny_batch())
    struct.pack_into("<i", damaged, 8, length)
    with pytest.raises(CorruptBatch, match=f"batch_length {length} is smaller than the header"):
        validate_batch(damaged)


@pytest.mark.parametrize("count, last_delta", [(3, 1), (0, -1), (2, 2)])
def test_record_count_mismatch(count, last_delta):
    damaged = bytearray(tiny_batch())
    struct.pack_into("<i", damaged, 57, count)
    struct.pack_into("<i", damaged, 23, last_delta)
    with pytest.raises(CorruptBatch, match="does not match last_offset_delta"):
        validate_batch(recrc(damaged))


def test_over_max_batch_bytes():
    batch = tiny_batch()
    validate_batch(batch, max_batch_bytes=len(batch))
    with pytest.raises(CorruptBatch, match=f"^batch of 79 bytes exceeds max_batch_bytes=78$"):
        validate_batch(batch, max_batch_bytes=78)
    damaged = bytearray(batch)
    struct.pack_into("<i", damaged, 8, (1 << 31) - 1)          # claims 2 GiB: refused before any read
    with pytest.raises(CorruptBatch, match="exceeds max_batch_bytes"):
        validate_batch(damaged)


# --- decode_batch on damage (CRC intact: the producer wrote nonsense) ----------------------

def test_records_block_that_is_not_msgpack():
    b = with_records_block(b"\xc1\xc1\xc1")                      # 0xc1 is never used in msgpack
    with pytest.raises(CorruptBatch, match="^batch at position 0: records block does not decode") as info:
        decode_batch(b)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize("block", [
    msgspec.msgpack.encode([[0, "str key", b"v", None]]),
    msgspec.msgpack.encode([[0, None, b"v"]]),
    msgspec.msgpack.encode([[0.5, None, b"v", None]]),
    msgspec.msgpack.encode({"not": "an array"}),
    msgspec.msgpack.encode([[0, None, b"v", [[b"only key"]]]]),
    msgspec.msgpack.encode([[0, None, b"v", None]]) + b"\x00",  # trailing byte
    msgspec.msgpack.encode([[0, None, b"v", None]])[:-1],       # cut inside
    b"\xdd\xff\xff\xff\xff",                                     # claims 4 billion records
])
def test_records_of_the_wrong_shape(block):
    with pytest.raises(CorruptBatch, match="records block does not decode"):
        decode_batch(with_records_block(block))


def test_record_count_disagreeing_with_the_block():
    block = msgspec.msgpack.encode([[0, None, b"a", None], [1, None, b"b", None]])
    with pytest.raises(CorruptBatch, match="^batch at position 0 holds 2 records, its header says 3$"):
        decode_batch(with_records_block(block, record_count=3))


def test_later_format_fields_are_ignored():
    block = msgspec.msgpack.encode([[0, None, b"a", None, "future field"]])
    assert decode_batch(with_records_block(block))[1][0].value == b"a"


def test_codec_id_that_does_not_exist():
    block = msgspec.msgpack.encode([[0, None, b"a", None]])
    with pytest.raises(CorruptBatch, match="names codec 5, which does not exist"):
        decode_batch(with_records_block(block, codec=5))


@pytest.mark.parametrize("codec", [c for c in Codec if c is not Codec.NONE])
def test_compressed_block_that_does_not_decompress(codec):
    with pytest.raises(CompressionError, match=f"^batch at position 0: {codec.name.lower()} "):
        decode_batch(with_records_block(b"\x00garbage garbage", codec=codec))


@pytest.mark.parametrize("codec", [c for c in Codec if c is not Codec.NONE])
def test_decompression_bomb_in_a_batch(codec):
    b = encode_batch([(None, bytes(1 << 20), 1)], codec)
    assert len(b) < 64 << 10
    decode_batch(b, max_uncompressed_bytes=(1 << 20) + 64)
    with pytest.raises(CompressionError, match="max_size=65536"):
        decode_batch(b, max_uncompressed_bytes=1 << 16)


@pytest.mark.parametrize("codec", ALL)
def test_damaged_batches_raise_only_rillet_errors(codec):
    # Random edits with the CRC rewritten, so the damage reaches the codec and the decoder.
    rng = random.Random(1000 + int(codec))
    batch = encode_batch(sample_records(8, seed=5), codec)
    for _ in range(120):
        damaged = bytearray(batch)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(HEADER_SIZE, len(damaged))
            damaged[pos] ^= 1 << rng.randrange(8)
        try:
            decode_batch(recrc(damaged))
        except (CorruptBatch, CompressionError):
            pass


# --- iterating many batches -------------------------------------------------------------------

def several_batches() -> tuple[bytearray, list[int]]:
    """Four stamped batches, one per codec but the last, with consecutive offsets."""
    buf, positions, next_offset = bytearray(), [], 0
    for i, codec in enumerate([Codec.NONE, Codec.GZIP, Codec.LZ4, Codec.ZSTD]):
        records = [(b"k%d" % i, b"batch %d record %d" % (i, j), 100 * i + j) for j in range(i + 1)]
        batch = bytearray(encode_batch(records, codec))
        stamp_batch(batch, 0, next_offset, 1)
        positions.append(len(buf))
        buf += batch
        next_offset += len(records)
    return buf, positions


def test_iter_batches_over_concatenated_batches():
    buf, positions = several_batches()
    assert [pos for pos, _ in iter_batches(buf)] == positions
    assert [h.base_offset for _, h in iter_batches(buf)] == [0, 1, 3, 6]
    assert [pos for pos, _ in iter_batches(buf, positions[2])] == positions[2:]


def test_iteration_stops_cleanly_at_a_partial_batch_and_a_zero_tail():
    buf, positions = several_batches()
    whole = list(iter_records(buf))
    assert [r.offset for r in whole] == list(range(10))
    assert [r.value for r in whole[:3]] == [b"batch 0 record 0", b"batch 1 record 0", b"batch 1 record 1"]
    assert whole[-1].timestamp == 303
    cut = bytes(buf) + encode_batch([(None, b"partial", 1)])[:-5]   # a fetch cut by max_bytes
    assert [pos for pos, _ in iter_batches(cut)] == positions
    assert list(iter_records(cut)) == whole
    for tail in (bytes(5), bytes(HEADER_SIZE), bytes(4096)):        # preallocated segment space
        assert list(iter_records(bytes(buf) + tail)) == whole
    for end in range(positions[1] + 1, positions[2]):               # every cut inside the second batch
        assert [r.offset for r in iter_records(buf[:end])] == [0]


def test_iter_records_raises_on_a_damaged_batch():
    buf, positions = several_batches()
    buf[positions[1] + HEADER_SIZE + 2] ^= 0xFF
    records = iter_records(buf)
    assert next(records).offset == 0                                # the good batch before it
    with pytest.raises(CorruptBatch, match=f"CRC mismatch at position {positions[1]}"):
        next(records)


# --- decode_records: straight into the consumer's record objects --------------------------------

def as_tuples(records) -> list[tuple]:
    return [(r._offset, r._batch[0], r._key, r._value, r._batch[1] + r._timestamp_delta, r._headers)
            for r in records]


def raw_tuples(raw, partition: int) -> list[tuple]:
    return [(r.offset, partition, r.key, r.value, r.timestamp, r.headers) for r in raw]


@pytest.mark.parametrize("codec", ALL)
def test_decode_records_agrees_with_decode_batch(codec):
    b = bytearray(encode_batch(sample_records(12), codec))
    stamp_batch(b, 0, 500, 3)
    records = decode_records(b, 7)
    assert all(type(r) is DecodedRecord for r in records)
    assert as_tuples(records) == raw_tuples(decode_batch(b)[1], 7)


def test_decode_records_over_several_batches_and_a_partial_tail():
    buf, _positions = several_batches()
    whole = raw_tuples(iter_records(buf), 2)
    assert as_tuples(decode_records(buf, 2)) == whole
    cut = bytes(buf) + encode_batch([(None, b"partial", 1)])[:-5]
    assert as_tuples(decode_records(cut, 2)) == whole
    assert decode_records(b"", 0) == []


def test_decode_records_keeps_only_the_offset_range():
    buf, _positions = several_batches()                              # offsets 0 | 1 2 | 3 4 5 | 6 7 8 9
    offsets = lambda **bounds: [r._offset for r in decode_records(buf, 0, **bounds)]  # noqa: E731
    assert offsets(first_offset=4) == [4, 5, 6, 7, 8, 9]             # a batch may start earlier
    assert offsets(first_offset=3, end_offset=6) == [3, 4, 5]
    assert offsets(first_offset=2, end_offset=8) == [2, 3, 4, 5, 6, 7]
    assert offsets(end_offset=1) == [0]
    assert offsets(first_offset=10) == []
    assert offsets(first_offset=5, end_offset=5) == []
    for first in range(11):
        for end in range(first, 11):
            assert offsets(first_offset=first, end_offset=end) == list(range(first, end))


def test_decode_records_stops_before_end_offset_but_checks_what_it_skips():
    buf, positions = several_batches()
    buf[positions[3] + HEADER_SIZE + 2] ^= 0xFF                      # damage batch 3 (offsets 6-9)
    assert [r._offset for r in decode_records(buf, 0, first_offset=1, end_offset=6)] == [1, 2, 3, 4, 5]
    with pytest.raises(CorruptBatch):
        decode_records(buf, 0, first_offset=1)
    buf, positions = several_batches()
    struct.pack_into("<i", buf, positions[1] + 57, 1)                # batch 1 (offsets 1-2) now claims 1 record
    with pytest.raises(CorruptBatch):                                # so it seems to end before 2: still checked
        decode_records(buf, 0, first_offset=2)


def test_decode_records_on_damage_keeps_the_batches_before_it():
    buf, positions = several_batches()
    buf[positions[2] + HEADER_SIZE + 2] ^= 0xFF
    out: list = []
    with pytest.raises(CorruptBatch, match=f"CRC mismatch at position {positions[2]}"):
        decode_records(buf, 0, out=out)
    assert [r._offset for r in out] == [0, 1, 2]


@pytest.mark.parametrize("block", [
    msgspec.msgpack.encode([[0, None, b"v"]]),                       # a field missing
    msgspec.msgpack.encode([[0, "str key", b"v", None]]),
    msgspec.msgpack.encode([[0, None, b"v", None]]) + b"\x00",
])
def test_decode_records_refuses_records_of_the_wrong_shape(block):
    with pytest.raises(CorruptBatch, match="records block does not decode"):
        decode_records(with_records_block(block), 0)


def test_decode_records_ignores_fields_of_a_later_format():
    # Trailing elements land in the fields the wire does not carry; both are overwritten.
    block = msgspec.msgpack.encode([[0, None, b"a", None, "future", {"more": 1}, 3]])
    [record] = decode_records(with_records_block(block), 4)
    assert (record._offset, record._batch, record._value) == (0, (4, 1), b"a")


def test_decoded_records_share_their_batch_tuple_and_cost_the_gc_nothing():
    import gc
    records = decode_records(encode_batch([(None, b"a", 10), (b"k", b"b", 12)]), 1)
    assert records[0]._batch is records[1]._batch == (1, 10)
    assert not any(gc.is_tracked(r) for r in records)
    assert records[0] != records[1] and records[0] == records[0]     # identity, as a plain object
    assert len({records[0], records[1]}) == 2
    with pytest.raises(TypeError):
        DecodedRecord(0, None, b"v", None)                           # positional: refused, not misfilled


def test_decode_records_needs_a_decoded_record_type():
    with pytest.raises(InvalidArgument, match="record_type must be a DecodedRecord subclass"):
        decode_records(tiny_batch(), 0, record_type=RawRecord)


def test_extend_builds_the_same_batch_as_appends():
    from rillet.ipc.records import RECORD_OVERHEAD, BatchBuilder
    keys = [b"k1", None, b"", b"key-3"]
    values = [b"v1", b"value-2", b"", b"x" * 300]
    one, bulk = BatchBuilder(), BatchBuilder()
    one.append(b"first", b"v0", 1_000)
    bulk.append(b"first", b"v0", 1_000)
    for k, v in zip(keys, values):
        one.append(k, v, 1_007)
    size = sum(len(v) + (len(k) if k is not None else 0) + RECORD_OVERHEAD for k, v in zip(keys, values))
    assert bulk.extend(keys, values, 1_007, size) == 1
    assert bulk.extend(None, [b"a", b"b"], 1_009, 2 + 2 * RECORD_OVERHEAD) == 5
    one.append(None, b"a", 1_009)
    one.append(None, b"b", 1_009)
    assert len(bulk) == len(one) == 7
    assert bulk.estimated_size == one.estimated_size
    assert bulk.build() == one.build()


def _shapes(v: bytes) -> list:
    """Record arrays around a value ``v``: the consumer's shape, and ones it refuses."""
    return [
        [0, None, v, None], [0, b"key", v, []], [0, None, v, [[b"k", v]]], [0, None, v, None, "future"],
        [0, "str key", v, None], [0, None, v.decode(), None], [0, None, v], [0.5, None, v, None],
        [0, None, v, [[b"k"]]], [0, None, v, [["k", v]]], [0, None, None, None], [0, None, [v], None],
        [0, None, msgspec.msgpack.Ext(1, v), None], [True, None, v, None], {"value": v}, [0, 7, v, None],
        [0, None, v, [[1, v]]],
    ]


@pytest.mark.parametrize("size", [10, VIEW_CHECK_MIN_RECORD_BYTES])
def test_check_readable_accepts_exactly_what_consumers_decode(size):
    # Large records are checked by decoding to views instead of bytes (no copy of each
    # value): whichever decoder runs, a batch passes exactly when a consumer can decode it.
    agreed, large = [], 0
    for shape in _shapes(b"v" * size):
        batch = with_records_block(msgspec.msgpack.encode([shape]))
        header = validate_batch(batch)
        large += header.batch_length >= VIEW_CHECK_MIN_RECORD_BYTES
        try:
            decode_records(batch, 0)
            readable = True
        except CorruptBatch:
            readable = False
        try:
            check_readable(batch, 0, header)
            passed = True
        except CorruptBatch:
            passed = False
        assert passed == readable, shape
        agreed.append(passed)
    assert agreed.count(True) == 4
    assert large == (0 if size < VIEW_CHECK_MIN_RECORD_BYTES else len(agreed) - 1)   # all but the one without v


# --- the batch CRC: ISA-L's when installed, zlib's otherwise ----------------------------------

def test_batch_crc_is_isal_when_installed_and_agrees_with_zlib():
    pytest.importorskip("isal")      # the test and fast extras install it
    from rillet.ipc import records
    assert records.CRC32_IMPLEMENTATION == "isal"
    data = bytearray(random.randbytes(70_000))
    for start, seed in ((0, 0), (17, 0), (3, 0xDEADBEEF)):
        assert records.crc32(memoryview(data)[start:], seed) == zlib.crc32(memoryview(data)[start:], seed)
    batch = encode_batch([(None, bytes(data[:5_000]), 1)])
    assert decode_batch(batch)[1][0].value == bytes(data[:5_000])


@pytest.mark.parametrize("how", ["env", "missing"])
def test_batch_crc_falls_back_to_zlib(how):
    # In a fresh interpreter: RILLET_CRC32=zlib, or isal made unimportable.
    import os
    import subprocess
    import sys
    block = "import sys; sys.modules['isal'] = None; " if how == "missing" else ""
    code = (block + "from rillet.ipc import records as r, compression; import zlib; "
            "b = r.encode_batch([(None, b'v', 1)]); r.validate_batch(b); "
            "print(r.CRC32_IMPLEMENTATION, r.crc32 is zlib.crc32)")
    env = dict(os.environ, RILLET_CRC32="zlib") if how == "env" else dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["zlib", "True"]


@pytest.mark.parametrize("damage", ["crc", "count", "delta", "too_big", "short_block"])
def test_decode_records_raises_what_validate_batch_raises(damage):
    # decode_records checks a batch in its own loop; whatever fails, the error is validate_batch's.
    buf, positions = several_batches()
    pos, limit = positions[0], 1 << 20             # the first batch: Codec.NONE
    if damage == "crc":
        buf[pos + HEADER_SIZE + 1] ^= 0x01
    elif damage == "count":
        struct.pack_into("<i", buf, pos + 57, 9)
    elif damage == "delta":
        struct.pack_into("<i", buf, pos + 23, 5)
    elif damage == "too_big":
        limit = positions[1] - 1
    else:                                    # a valid CRC over a block holding fewer records
        good = bytearray(with_records_block(msgspec.msgpack.encode([[0, None, b"v", None]])))
        struct.pack_into("<ii", good, 53, -1, 2)                       # first_sequence, record_count 2
        struct.pack_into("<i", good, 23, 1)                            # last_offset_delta 1
        struct.pack_into("<I", good, CRC_POS, zlib.crc32(memoryview(good)[ATTRIBUTES_POS:]))
        with pytest.raises(CorruptBatch, match="holds 1 records, its header says 2"):
            decode_records(good, 0)
        return
    with pytest.raises(CorruptBatch) as expected:
        validate_batch(buf, pos, max_batch_bytes=limit)
    with pytest.raises(CorruptBatch) as raised:
        decode_records(buf, 0, max_batch_bytes=limit)
    assert str(raised.value) == str(expected.value)
