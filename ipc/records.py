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
     43   8  producer_id         -1: no idempotent producer (reserved for later)
     51   2  producer_epoch      -1
     53   4  first_sequence      -1
     57   4  record_count        records in the batch (>= 1)
     61   -  records             msgpack array of records, compressed as one block per codec

A record is a msgpack array ``[timestamp_delta, key (bin or nil), value (bin),
headers (nil or array of [bin, bin])]``; its offset is ``base_offset`` + its index
and its timestamp ``first_timestamp`` + ``timestamp_delta``. The records block is
one msgpack array of ``record_count`` records.

Producer side, :class:`BatchBuilder` keeps appended records as tuples already in
wire shape and encodes them with one msgspec call in ``build``; nothing is packed
per record. Consumer side, :func:`decode_batch` checks the batch (validate_batch),
expands the block and decodes it in one msgspec call into :class:`RawRecord`.
"""

from __future__ import annotations

import struct
import zlib
from operator import itemgetter
from typing import Iterable, Iterator, NamedTuple

import msgspec

from .compression import Codec, decompress, compress, parse_codec
from .errors import CompressionError, CorruptBatch, InvalidArgument

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
# A batch larger than this is refused before anything is allocated for it.
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024

# Producers close a batch on its uncompressed size, so a batch the broker accepts never
# legitimately expands past the largest batch it accepts; beyond that is a bomb.
DEFAULT_MAX_UNCOMPRESSED_BYTES = DEFAULT_MAX_BATCH_BYTES

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
        crc = zlib.crc32(view[pos + ATTRIBUTES_POS:pos + total])
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
