"""Record batch format: the unit that moves through produce, storage, replication and fetch.

The broker never decodes records: it reads the fixed header below, checks the CRC,
and stamps ``base_offset`` and ``leader_epoch`` in place. Both stamped fields sit
*before* the CRC field, so stamping never invalidates the CRC (as in Kafka v2).

Header, little-endian, 61 bytes (``BATCH_HEADER``)::

    pos size field              meaning
      0   8  base_offset         offset of the first record; written by the leader
      8   4  batch_length        bytes after this field (so a batch is 12 + batch_length bytes)
     12   4  leader_epoch        epoch of the leader that appended it; -1 before append
     16   1  magic               format version, MAGIC (1)
     17   4  crc                 zlib CRC-32 of every byte from ``attributes`` to the end
     21   2  attributes          bits 0-2 codec (compression.Codec), bit 3 timestamp type
     23   4  last_offset_delta   record_count - 1
     27   8  first_timestamp     ms since the epoch, first record
     35   8  max_timestamp       ms since the epoch, largest record timestamp
     43   8  producer_id         idempotent producer's id (>= 0); -1: none (no duplicate detection)
     51   2  producer_epoch      0 for an idempotent producer, else -1 (no fencing: no transactions)
     53   4  first_sequence      the first record's sequence in this partition (int32, wraps to 0); -1: none
     57   4  record_count        records in the batch (>= 1)
     61   -  records             msgpack array of records, compressed as one block per codec

A record is a msgpack array ``[timestamp_delta, key (bin or nil), value (bin),
headers (nil or array of [bin, bin])]``; its offset is ``base_offset`` + its index
and its timestamp ``first_timestamp`` + ``timestamp_delta``. The records block is
one msgpack array of ``record_count`` records.

Producer side, :class:`BatchBuilder` keeps appended records as tuples already in
wire shape and encodes them with one msgspec call in ``build``; nothing is packed
per record. The consumer side (decoding, and the readability check the SPU makes
before it stores a batch) is ipc/record_decoding.py.
"""

from __future__ import annotations

import struct
from itertools import repeat
import zlib
from operator import itemgetter
from typing import Iterable, Iterator, NamedTuple

import msgspec

from .compression import Codec, compress, parse_codec
from .errors import CorruptBatch, InvalidArgument

BATCH_HEADER = struct.Struct("<qiiBIHiqqqhii")
HEADER_SIZE = BATCH_HEADER.size
assert HEADER_SIZE == 61, HEADER_SIZE

PREAMBLE = struct.Struct("<qi")          # base_offset, batch_length
PREAMBLE_SIZE = PREAMBLE.size            # 12
BASE_OFFSET_POS = 0
BATCH_LENGTH_POS = 8
LEADER_EPOCH_POS = 12
MAGIC_POS = 16
CRC_POS = 17
ATTRIBUTES_POS = 21                      # the CRC covers [ATTRIBUTES_POS, end)
MAGIC = 1
CODEC_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
# Idempotent producers: batches an SPU remembers per producer id and partition
# (broker/spu/producer_state.py). A producer keeps fewer than this unanswered per partition,
# so the batch it retries is always still remembered.
IDEMPOTENT_WINDOW = 128
SEQUENCE_MODULUS = 1 << 31               # sequences advance by the record count, modulo this

# A batch larger than this is refused before anything is allocated for it.
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024

# Producers close a batch on its uncompressed size, so a batch the broker accepts never
# legitimately expands past the largest batch it accepts; beyond that is a bomb.
DEFAULT_MAX_UNCOMPRESSED_BYTES = DEFAULT_MAX_BATCH_BYTES

def _crc32_function():
    """ISA-L's CRC-32 when the ``fast`` extra installed it (the same CRC as zlib's, 9x faster
    on this machine: 1.0 against 9.0 µs for 64 KiB, a producer, the SPU and a consumer each
    compute one per batch); zlib's otherwise, or when RILLET_CRC32=zlib."""
    import os
    if os.environ.get("RILLET_CRC32", "").lower() != "zlib":
        try:
            from isal.isal_zlib import crc32 as fast
        except ImportError:
            pass
        else:
            return fast, "isal"
    return zlib.crc32, "zlib"


crc32, CRC32_IMPLEMENTATION = _crc32_function()

# The header in two parts: up to the CRC, and the part the CRC covers (build_block_batch).
_HEADER_HEAD = struct.Struct("<qiiBI")
_HEADER_TAIL = struct.Struct("<Hiqqqhii")
assert _HEADER_HEAD.size == ATTRIBUTES_POS and _HEADER_HEAD.size + _HEADER_TAIL.size == HEADER_SIZE
_OFFSET = struct.Struct("<q")
_EPOCH = struct.Struct("<i")
_CRC = struct.Struct("<I")


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    first_sequence: int
    record_count: int

    @property
    def total_size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return PREAMBLE_SIZE + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK


def peek_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos`` without any check beyond its own size."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatch(f"batch header needs {HEADER_SIZE} bytes, {len(buf) - pos} available at position {pos}")
    return BatchHeader._make(BATCH_HEADER.unpack_from(buf, pos))


def validate_batch(buf, pos: int = 0, *, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> BatchHeader:
    """Check the batch at ``pos``: length, magic, record count and CRC.

    Returns its header; raises CorruptBatch naming the first check that failed.
    """
    header = peek_header(buf, pos)
    total = header.total_size
    if header.batch_length < HEADER_SIZE - PREAMBLE_SIZE:
        raise CorruptBatch(f"batch_length {header.batch_length} is smaller than the header")
    if total > max_batch_bytes:
        raise CorruptBatch(f"batch of {total} bytes exceeds max_batch_bytes={max_batch_bytes}")
    if total > len(buf) - pos:
        raise CorruptBatch(f"batch of {total} bytes at position {pos} is cut short: {len(buf) - pos} bytes present")
    if header.magic != MAGIC:
        raise CorruptBatch(f"batch magic {header.magic}, expected {MAGIC}")
    if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
        raise CorruptBatch(
            f"batch record_count {header.record_count} does not match last_offset_delta {header.last_offset_delta}"
        )
    with memoryview(buf) as view:
        crc = crc32(view[pos + ATTRIBUTES_POS:pos + total])
    if crc != header.crc:
        raise CorruptBatch(f"batch CRC mismatch at position {pos}: stored {header.crc:#010x}, computed {crc:#010x}")
    return header


def stamp_batch(buf, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Write the leader's base offset and epoch into a (writable) batch in place."""
    _OFFSET.pack_into(buf, pos + BASE_OFFSET_POS, base_offset)
    _EPOCH.pack_into(buf, pos + LEADER_EPOCH_POS, leader_epoch)


def iter_batches(buf, start: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` for each whole batch in ``buf`` from ``start``.

    Stops silently at a partial trailing batch (a fetch cut by max_bytes) and at a
    zeroed header (preallocated space). Does not check CRCs: use validate_batch.
    """
    pos, end = start, len(buf)
    while end - pos >= HEADER_SIZE:
        header = BatchHeader._make(BATCH_HEADER.unpack_from(buf, pos))
        if header.batch_length < HEADER_SIZE - PREAMBLE_SIZE or header.magic != MAGIC:
            return
        if pos + header.total_size > end:
            return
        yield pos, header
        pos += header.total_size


# --- building (producer side) ---------------------------------------------------------

# Upper bound of the msgpack bytes around one record's key and value: record array
# header 1, timestamp delta up to 9, key and value bin headers up to 5 each (nil: 1),
# nil headers 1. A small record costs about 14 bytes less; close enough to decide
# "batch full" without encoding anything.
RECORD_OVERHEAD = 21
# The same bound for a keyless record, whose key is a nil (1 byte): array 1, delta up to 9, nil
# key 1, the value's bin header (2 bytes under 256, 3 under 64 KiB, else 5), nil headers 1.
# The producer sizes keyless records by it: 14 bytes around a small value instead of 21, so a
# 16 KiB batch of 100 B values holds 143 of them instead of 135.
KEYLESS_OVERHEAD = 14                    # a value under 256 bytes


def keyless_overhead(length: int) -> int:
    """Upper bound of the msgpack bytes around a keyless record's value of ``length`` bytes."""
    return KEYLESS_OVERHEAD if length < 0x100 else KEYLESS_OVERHEAD + 1 if length < 0x10000 else KEYLESS_OVERHEAD + 3


_BLOCK_ARRAY_MAX = 5                     # array32 header of the records block
_HEADERS_ARRAY_MAX = 5                   # array32 header replacing a record's nil headers
_HEADER_PAIR_OVERHEAD = 11               # fixarray 1 + two bin32 headers 5 + 5
_INT16 = (-(1 << 15), (1 << 15) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_DELTA = itemgetter(0)
_ENCODER = msgspec.msgpack.Encoder()


class BatchBuilder:
    """The producer's accumulator for one batch: ``append`` records, then ``build``.

    ``append`` stores a tuple already in wire shape, ``(timestamp_delta, key, value,
    headers)``; the only per-record work is a type check and, for a bytearray or
    memoryview, a copy (so the caller may reuse its buffer). ``build`` encodes the
    list in one msgspec call; it may be called again and does not reset the builder.
    """

    __slots__ = ("_codec", "_records", "_first_timestamp", "_size")

    def __init__(self, codec: Codec | int | str = Codec.NONE) -> None:
        # A Codec as given: the producer makes a builder per batch, one per record at linger 0.
        self._codec = codec if codec.__class__ is Codec else parse_codec(codec)
        self._records: list[tuple] = []
        self._first_timestamp = 0
        self._size = HEADER_SIZE + _BLOCK_ARRAY_MAX

    def __len__(self) -> int:
        return len(self._records)

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def estimated_size(self) -> int:
        """An upper bound, in bytes, of the batch built now without compression."""
        return self._size

    def append(self, key, value, timestamp_ms: int, headers=None) -> int:
        """Add a record; return its index in the batch (its offset delta).

        ``key`` is bytes-like or None, ``value`` bytes-like, ``timestamp_ms`` an int,
        ``headers`` None or (key, value) byte pairs (a dict works; empty means None).
        Raises InvalidArgument on another type.
        """
        if value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        size = len(value) + RECORD_OVERHEAD
        if key is not None:
            if key.__class__ is not bytes:
                key = _as_bytes(key, "key")
            size += len(key)
        if timestamp_ms.__class__ is not int:
            timestamp_ms = _as_timestamp(timestamp_ms)
        if headers is not None:
            headers, headers_size = _as_headers(headers)
            size += headers_size
        records = self._records
        index = len(records)
        if not index:
            self._first_timestamp = timestamp_ms
        records.append((timestamp_ms - self._first_timestamp, key, value, headers))
        self._size += size
        return index

    def extend(self, keys, values, timestamp_ms: int, size: int) -> int:
        """Add records that share one timestamp, in bulk; return the first one's index.

        The producer's ``send_all`` path, so nothing is checked per record: the caller has made
        ``values`` bytes and ``keys`` bytes or None (``keys`` None: every record keyless), and
        ``size`` is what ``append`` would have added to ``estimated_size`` for them.
        """
        records = self._records
        index = len(records)
        if not index:
            self._first_timestamp = timestamp_ms
        delta = timestamp_ms - self._first_timestamp
        records.extend(zip(repeat(delta), repeat(None) if keys is None else keys, values, repeat(None)))
        self._size += size
        return index

    def build(self, *, producer_id: int = -1, producer_epoch: int = -1, first_sequence: int = -1) -> bytes:
        """Encode the records, compress them with the codec and return the whole batch.

        The header gets base_offset 0 and leader_epoch -1 (the leader stamps both),
        first and max timestamps, the record count and the CRC. Raises InvalidArgument
        on an empty builder or a field out of its range.
        """
        return build_batch(self._records, self._first_timestamp, self._size, self._codec, producer_id=producer_id,
                           producer_epoch=producer_epoch, first_sequence=first_sequence)


def build_batch(records: list, first_timestamp: int, size: int, codec: Codec, *, producer_id: int = -1,
                producer_epoch: int = -1, first_sequence: int = -1, max_timestamp: int | None = None) -> bytes:
    """:meth:`BatchBuilder.build` over records its caller accumulated itself (the producer,
    which appends in its own ``send`` to skip a call per record): ``records`` are wire
    tuples ``(timestamp_ms - first_timestamp, key, value, headers)`` of checked types (bytes,
    bytes or None, None or byte pairs), ``size`` is what ``estimated_size`` would say for
    them (it sizes the buffer; too small only costs a reallocation), ``codec`` a Codec.
    ``max_timestamp``: the records' greatest timestamp when the caller kept it, vouching that
    none is out of range (the producer's come from the clock); else the records are scanned
    (28 ns a record: two fifths of a build of 100 B records)."""
    count = len(records)
    if count == 1:               # linger 0: one record per batch, its delta is 0
        low = high = first_timestamp
    elif max_timestamp is not None and count:
        low, high = first_timestamp, max_timestamp
    elif count:
        low, high = first_timestamp + min(map(_DELTA, records)), first_timestamp + max(map(_DELTA, records))
    else:
        raise InvalidArgument("cannot build a record batch with no records")
    # One chained comparison for the fields in range (the common case: five _check_range
    # calls were a third of a one-record build); _check_fields names the first one out.
    if not (_INT64[0] <= producer_id <= _INT64[1] and _INT16[0] <= producer_epoch <= _INT16[1]
            and _INT32[0] <= first_sequence <= _INT32[1] and _INT64[0] <= low and high <= _INT64[1]
            and count <= _INT32[1]):
        _check_fields(producer_id, producer_epoch, first_sequence, low, high, count)
    fields = (first_timestamp, high, producer_id, producer_epoch, first_sequence)
    try:
        if codec is Codec.NONE:
            return _build_plain(records, size, fields)
        return _build_compressed(records, codec, fields)
    except OverflowError as exc:  # from msgspec: two timestamps too far apart for a delta
        raise InvalidArgument(f"record timestamps are too far apart to encode: {exc}") from exc


def build_block_batch(block: list, count: int, first_timestamp: int, max_timestamp: int, codec: Codec,
                      producer_id: int = -1, producer_epoch: int = -1, first_sequence: int = -1) -> bytes:
    """:func:`build_batch` over a records block its caller encoded (ipc/record_runs.py): ``block``
    is the msgpack array of ``count`` records as pieces to join, ``max_timestamp`` the records'
    greatest timestamp. The same checks, the same bytes. The header is packed in its two
    parts, the one the CRC covers first: no buffer to patch, one join at the end."""
    if not count:
        raise InvalidArgument("cannot build a record batch with no records")
    if not (_INT64[0] <= producer_id <= _INT64[1] and _INT16[0] <= producer_epoch <= _INT16[1]
            and _INT32[0] <= first_sequence <= _INT32[1] and _INT64[0] <= first_timestamp
            and max_timestamp <= _INT64[1] and count <= _INT32[1]):
        _check_fields(producer_id, producer_epoch, first_sequence, first_timestamp, max_timestamp, count)
    if codec is not Codec.NONE:
        block = [compress(codec, b"".join(block))]
    size = sum(map(len, block))
    batch_length = HEADER_SIZE - PREAMBLE_SIZE + size
    if batch_length > _INT32[1]:
        _check_range("batch_length", batch_length, _INT32)
    tail = _HEADER_TAIL.pack(int(codec), count - 1, first_timestamp, max_timestamp, producer_id, producer_epoch,
                             first_sequence, count)
    crc = crc32(tail)
    for piece in block:                  # a few pieces: the runs' joins and their ends
        crc = crc32(piece, crc)
    return b"".join((_HEADER_HEAD.pack(0, batch_length, -1, MAGIC, crc), tail, *block))


def _check_fields(producer_id: int, producer_epoch: int, first_sequence: int, low: int, high: int,
                  count: int) -> None:
    _check_range("producer_id", producer_id, _INT64)
    _check_range("producer_epoch", producer_epoch, _INT16)
    _check_range("first_sequence", first_sequence, _INT32)
    _check_range("record timestamp_ms", low, _INT64)
    _check_range("record timestamp_ms", high, _INT64)
    _check_range("record_count", count, _INT32)


def _build_plain(records: list, size: int, fields: tuple) -> bytes:
    # Encode straight after the header in a buffer sized by the upper bound;
    # encode_into trims it to the encoded end. One copy left: bytes(buf).
    buf = bytearray(size)
    _ENCODER.encode_into(records, buf, HEADER_SIZE)
    _pack_header(buf, len(buf) - HEADER_SIZE, len(records), Codec.NONE, fields)
    with memoryview(buf) as view:
        crc = crc32(view[ATTRIBUTES_POS:])
    _CRC.pack_into(buf, CRC_POS, crc)
    return bytes(buf)


def _build_compressed(records: list, codec: Codec, fields: tuple) -> bytes:
    # The CRC runs over header then payload without joining them first, so the
    # payload is copied once, into the result.
    payload = compress(codec, _ENCODER.encode(records))
    head = bytearray(HEADER_SIZE)
    _pack_header(head, len(payload), len(records), codec, fields)
    with memoryview(head) as view:
        crc = crc32(payload, crc32(view[ATTRIBUTES_POS:]))
    _CRC.pack_into(head, CRC_POS, crc)
    return b"".join((head, payload))


def encode_batch(records: Iterable[tuple], codec: Codec | int | str = Codec.NONE) -> bytes:
    """Build one batch from ``(key, value, timestamp_ms[, headers])`` tuples."""
    builder = BatchBuilder(codec)
    append = builder.append
    for record in records:
        append(*record)
    return builder.build()


def _pack_header(buf: bytearray, records_size: int, count: int, codec: Codec, fields: tuple) -> None:
    first_timestamp, max_timestamp, producer_id, producer_epoch, first_sequence = fields
    batch_length = HEADER_SIZE - PREAMBLE_SIZE + records_size
    if batch_length > _INT32[1] or count > _INT32[1]:       # never negative: sizes and counts
        _check_range("batch_length", batch_length, _INT32)
        _check_range("record_count", count, _INT32)
    BATCH_HEADER.pack_into(
        buf, 0,
        0,                    # base_offset: stamped by the leader
        batch_length,
        -1,                   # leader_epoch: stamped by the leader
        MAGIC,
        0,                    # crc: written last, over the finished bytes
        int(codec),           # attributes: codec, timestamp type 0 (create time)
        count - 1,            # last_offset_delta
        first_timestamp, max_timestamp, producer_id, producer_epoch, first_sequence,
        count,
    )


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgument(f"{name} {value} is outside [{low}, {high}]")


def coerce_bytes(value, what: str, *, text: bool = False) -> bytes:
    """``value`` as bytes: bytes as is, bytearray and memoryview copied. With ``text`` (the
    producer's send, which always took them): a str as UTF-8 and a list of ints too, and a
    TypeError for anything else; without, InvalidArgument (BatchBuilder's contract)."""
    if value.__class__ is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if text:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, list):
            return bytes(value)
        raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")
    raise InvalidArgument(f"record {what} must be bytes, bytearray or memoryview, not {type(value).__name__}")


def _as_bytes(value, what: str) -> bytes:
    return coerce_bytes(value, what)


def _as_timestamp(timestamp_ms) -> int:
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
        raise InvalidArgument(f"record timestamp_ms must be an int, not {type(timestamp_ms).__name__}")
    return int(timestamp_ms)


def _as_headers(headers) -> tuple[tuple[tuple[bytes, bytes], ...] | None, int]:
    """Normalise record headers to a tuple of byte pairs (None if empty) and its size bound."""
    if isinstance(headers, dict):
        headers = headers.items()
    try:
        pairs = tuple((_as_bytes(k, "header key"), _as_bytes(v, "header value")) for k, v in headers)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"record headers must be (key, value) pairs of bytes: {exc}") from None
    if not pairs:
        return None, 0
    size = _HEADERS_ARRAY_MAX + sum(len(k) + len(v) + _HEADER_PAIR_OVERHEAD for k, v in pairs)
    return pairs, size
