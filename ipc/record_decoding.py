"""Record batches, consumer side: decoding a batch's records and checking that every consumer
can read a batch (ipc/records.py has the format, the header checks and the producer's build).

:func:`decode_batch` checks the batch (``validate_batch``), expands the block and decodes it in
one msgspec call into :class:`RawRecord`. Consumers use :func:`decode_records`: the same checks,
but each record is decoded straight into its final object (a :class:`DecodedRecord` subclass, the
client's ``Record``) and only the offset and a per-batch tuple are set afterwards, so a record
costs one object and two attribute stores in Python. The SPU calls :func:`check_readable` before
it stores a batch (a stored batch is one every consumer can read).
"""

from __future__ import annotations

from typing import Any, Iterator

import msgspec

from .compression import Codec, decompress
from .errors import CompressionError, CorruptBatch, InvalidArgument
from .records import (
    ATTRIBUTES_POS, BATCH_HEADER, CODEC_MASK, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_UNCOMPRESSED_BYTES, HEADER_SIZE,
    MAGIC, PREAMBLE_SIZE, BatchHeader, crc32, iter_batches, validate_batch,
)
from .run_check import runs_readable


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """One decoded record: its offset, timestamp (ms), key, value and headers.

    ``headers`` is None or a tuple of ``(key, value)`` byte pairs.
    """

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[bytes, bytes], ...] | None = None


class _WireRecord(msgspec.Struct, array_like=True, gc=False):
    # The record as encoded. array_like ignores trailing extra elements, so a
    # field appended by a later format version does not break this reader.
    timestamp_delta: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[bytes, bytes], ...] | None


class _WireView(msgspec.Struct, array_like=True, gc=False):
    # _WireRecord with the byte fields as views into the block: the same inputs decode or
    # fail (msgspec reads bin the same way for bytes and memoryview; a test pins it), but no
    # value is copied. check_readable uses it for large records only (see there).
    timestamp_delta: int
    key: memoryview | None
    value: memoryview
    headers: tuple[tuple[memoryview, memoryview], ...] | None


_DECODER = msgspec.msgpack.Decoder(list[_WireRecord])
_VIEW_DECODER = msgspec.msgpack.Decoder(list[_WireView])
# From this many block bytes per record on, check_readable decodes to views: a view costs
# more to make than a small bytes object and less than a copy of a large one (timeit, 200
# records: 300 B 54 -> 61 ns a record, 512 B 68 -> 59, 1 KiB 184 -> 119 with views).
VIEW_CHECK_MIN_RECORD_BYTES = 512
_LAST_CODEC = max(Codec)


def decode_batch(
    buf,
    pos: int = 0,
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> tuple[BatchHeader, list[RawRecord]]:
    """Check and decode the batch at ``pos``; return its header and records.

    Raises CorruptBatch when a check of validate_batch fails or the records block
    does not decode to ``record_count`` records, and CompressionError (naming the
    position) when the block does not decompress or expands past max_uncompressed_bytes.
    """
    header = validate_batch(buf, pos, max_batch_bytes=max_batch_bytes)
    wire = _decode_block(buf, pos, header, max_uncompressed_bytes, _DECODER)
    base, first = header.base_offset, header.first_timestamp
    return header, [
        RawRecord(base + i, first + r.timestamp_delta, r.key, r.value, r.headers) for i, r in enumerate(wire)
    ]


def check_readable(buf, pos: int, header: BatchHeader, *,
                   max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES) -> None:
    """Raise unless every consumer can read the (CRC-checked) batch at ``pos``.

    The SPU's last check before it stores a batch: the codec exists, the block decompresses
    within ``max_uncompressed_bytes``, and it decodes to exactly ``record_count`` records of
    the wire shape, so a batch with a valid CRC over garbage is refused instead of making
    its partition unreadable. It decodes into the consumer's record shape and drops the
    result (values as views when records are large: no copy of them), so the broker still
    stores and serves the bytes exactly as they came. An uncompressed block of small keyless
    records in runs (what producers build of them) is shown to have that shape without a
    decode (ipc/run_check.py): 3.3 instead of 10 µs for 135 records of 100 B. Large records
    are not: decoded to views they cost about what the copy of the block the check needs does.
    """
    large = header.batch_length >= VIEW_CHECK_MIN_RECORD_BYTES * header.record_count
    if header.codec == Codec.NONE and not large:    # keyless runs: shown readable without a decode
        with memoryview(buf) as view:
            block = bytes(view[pos + HEADER_SIZE:pos + header.total_size])
        if runs_readable(block, header.record_count):
            return
    _decode_block(buf, pos, header, max_uncompressed_bytes, _VIEW_DECODER if large else _DECODER)


def _decode_block(buf, pos: int, header: BatchHeader, max_uncompressed_bytes: int, decoder) -> list:
    """The records block of a validated batch, decoded by ``decoder`` and counted."""
    codec = header.codec
    if codec > _LAST_CODEC:
        raise CorruptBatch(f"batch at position {pos} names codec {codec}, which does not exist")
    with memoryview(buf) as view:
        block = view[pos + HEADER_SIZE:pos + header.total_size]
        try:
            if codec != Codec.NONE:
                block = decompress(codec, block, max_size=max_uncompressed_bytes)
            records = decoder.decode(block)
        except CompressionError as exc:
            raise CompressionError(f"batch at position {pos}: {exc.message}") from exc
        except msgspec.DecodeError as exc:  # ValidationError included: a record of the wrong shape
            raise CorruptBatch(f"batch at position {pos}: records block does not decode: {exc}") from exc
        finally:
            del block                       # no view of buf outlives the call (buf stays resizable)
    if len(records) != header.record_count:
        raise CorruptBatch(
            f"batch at position {pos} holds {len(records)} records, its header says {header.record_count}"
        )
    return records


class DecodedRecord(msgspec.Struct, array_like=True, gc=False, eq=False, kw_only=True):
    """A record decoded in one step from its wire array by :func:`decode_records`.

    The first four fields are the wire record ``[timestamp_delta, key, value,
    headers]``, so msgspec builds the final object directly; ``decode_records``
    then sets ``_offset`` and ``_batch``, the ``(partition, first_timestamp)``
    tuple shared by every record of a batch (one store per record instead of a
    partition and a timestamp each). Fields are private because the client's
    ``Record`` subclass exposes them as Fluvio's methods (``offset()``, ...).

    ``gc=False``: a record holds only bytes, ints and tuples of bytes, never a
    cycle, so a million of them cost the garbage collector nothing. ``eq=False``
    keeps identity equality and hashing. ``kw_only``: positional construction
    fails loudly instead of filling fields in wire order.
    """

    _timestamp_delta: int
    _key: bytes | None
    _value: bytes
    _headers: tuple[tuple[bytes, bytes], ...] | None
    # Not on the wire. Typed Any because array_like puts trailing wire elements here:
    # a field a later format version appends is accepted, then overwritten.
    _offset: Any = -1
    _batch: Any = None


_RECORD_DECODERS: dict[type, msgspec.msgpack.Decoder] = {}


def _record_decoder(record_type: type) -> msgspec.msgpack.Decoder:
    decoder = _RECORD_DECODERS.get(record_type)
    if decoder is None:
        if not (isinstance(record_type, type) and issubclass(record_type, DecodedRecord)):
            raise InvalidArgument(f"record_type must be a DecodedRecord subclass, got {record_type!r}")
        decoder = _RECORD_DECODERS[record_type] = msgspec.msgpack.Decoder(list[record_type])
    return decoder


def decode_records(
    buf,
    partition: int,
    *,
    record_type: type[DecodedRecord] = DecodedRecord,
    first_offset: int | None = None,
    end_offset: int | None = None,
    out: list | None = None,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> list:
    """The records of every whole batch in ``buf`` as ``record_type`` objects, in order.

    Only offsets in [``first_offset``, ``end_offset``) are kept (None: no bound). The
    bounds are applied per batch, from its header: a batch is checked as decode_batch
    checks it (raising as it does), decoded only if it holds a kept offset, and the
    batches from ``end_offset`` on are not looked at. Records are appended to ``out``
    (a new list by default), which is returned; on an error it holds the records of
    the batches before the bad one. Stops where iter_batches stops (a partial
    trailing batch, a zeroed tail).
    """
    decoder = _record_decoder(record_type)
    if out is None:
        out = []
    # iter_batches, validate_batch and _decode_block inlined: one header unpack per batch
    # and no BatchHeader, 2.6 -> 1.3 µs a batch (a linger-0 consumer decodes one per record).
    # Any check that fails goes to validate_batch, which raises naming it.
    unpack, end, pos = BATCH_HEADER.unpack_from, len(buf), 0
    min_length = HEADER_SIZE - PREAMBLE_SIZE
    with memoryview(buf) as view:
        while end - pos >= HEADER_SIZE:
            base, length, _e, magic, crc, attributes, last_delta, first_ts, _m, _p, _pe, _s, count = unpack(buf, pos)
            total = PREAMBLE_SIZE + length
            if length < min_length or magic != MAGIC or pos + total > end:
                break                       # where iter_batches stops: zeros, a partial tail
            if end_offset is not None and base >= end_offset:
                break
            if (total > max_batch_bytes or count < 1 or last_delta != count - 1
                    or crc32(view[pos + ATTRIBUTES_POS:pos + total]) != crc):
                validate_batch(buf, pos, max_batch_bytes=max_batch_bytes)      # raises
            skip = 0 if first_offset is None else first_offset - base
            if skip >= count:               # the count is CRC-checked: never skip on a damaged one
                pos += total
                continue
            if attributes & CODEC_MASK == Codec.NONE:
                try:
                    records = decoder.decode(view[pos + HEADER_SIZE:pos + total])
                except msgspec.DecodeError as exc:
                    raise CorruptBatch(f"batch at position {pos}: records block does not decode: {exc}") from exc
                if len(records) != count:
                    raise CorruptBatch(f"batch at position {pos} holds {len(records)} records, its header says {count}")
            else:
                header = BatchHeader._make(unpack(buf, pos))
                records = _decode_block(buf, pos, header, max_uncompressed_bytes, decoder)
            keep = count if end_offset is None else min(count, end_offset - base)
            if skip > 0 or keep < count:
                skip = max(skip, 0)
                records = records[skip:keep]
                base += skip
            shared = (partition, first_ts)
            for record in records:          # the only per-record Python: two stores
                record._offset = base
                record._batch = shared
                base += 1
            out += records
            pos += total
    return out


def iter_records(
    buf,
    start: int = 0,
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> Iterator[RawRecord]:
    """Yield every record of every whole batch in ``buf`` from ``start``, in order.

    Stops where iter_batches stops (a partial trailing batch, a zeroed tail); each
    batch is checked by decode_batch, which raises on damage.
    """
    for pos, _header in iter_batches(buf, start):
        yield from decode_batch(
            buf, pos, max_batch_bytes=max_batch_bytes, max_uncompressed_bytes=max_uncompressed_bytes
        )[1]
