"""Test batches built by hand: the header struct, a payload and the CRC, nothing else.

Storage never decodes records, so a payload of arbitrary bytes is a valid batch for it;
this keeps sizes and record counts exactly under the test's control.
"""

from __future__ import annotations

import random
import struct
import zlib

from rillet.ipc.records import ATTRIBUTES_POS, BATCH_HEADER, CRC_POS, HEADER_SIZE, MAGIC, PREAMBLE_SIZE

_CRC = struct.Struct("<I")


def make_batch(payload: bytes = b"x", *, record_count: int = 1, base_offset: int = 0,
               leader_epoch: int = -1, timestamp_ms: int = 1_700_000_000_000) -> bytes:
    """BATCH_HEADER + payload, with the CRC over [ATTRIBUTES_POS:end]."""
    buf = bytearray(BATCH_HEADER.pack(
        base_offset, HEADER_SIZE - PREAMBLE_SIZE + len(payload), leader_epoch, MAGIC, 0, 0,
        record_count - 1, timestamp_ms, timestamp_ms, -1, -1, -1, record_count,
    ))
    buf += payload
    _CRC.pack_into(buf, CRC_POS, zlib.crc32(memoryview(buf)[ATTRIBUTES_POS:]))
    return bytes(buf)


def sized_batch(total_size: int, rng: random.Random, *, record_count: int = 1, **kw) -> bytes:
    """A batch of exactly ``total_size`` bytes whose payload is random and ends non-zero."""
    n = total_size - HEADER_SIZE
    assert n >= 1, total_size
    payload = rng.randbytes(n - 1) + bytes([rng.randrange(1, 256)])
    return make_batch(payload, record_count=record_count, **kw)


def stamped(batch: bytes, base_offset: int, leader_epoch: int) -> bytes:
    """``batch`` as the leader stores it (stamping does not touch the CRC-covered bytes)."""
    buf = bytearray(batch)
    struct.pack_into("<q", buf, 0, base_offset)
    struct.pack_into("<i", buf, 12, leader_epoch)
    return bytes(buf)


def split(buf) -> list[bytes]:
    """The whole batches in ``buf`` as separate byte strings."""
    out, pos = [], 0
    while pos < len(buf):
        size = PREAMBLE_SIZE + struct.unpack_from("<i", buf, pos + 8)[0]
        out.append(bytes(buf[pos:pos + size]))
        pos += size
    return out


def base_of(batch) -> int:
    return struct.unpack_from("<q", batch, 0)[0]


def epoch_of(batch) -> int:
    return struct.unpack_from("<i", batch, 12)[0]


def count_of(batch) -> int:
    return struct.unpack_from("<i", batch, 57)[0]
