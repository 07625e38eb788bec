"""A batch the SPU acknowledges is one every consumer can read (issue 10: no poison batch).

Each request carries a batch whose header and CRC are right around a records block that no
consumer could read; the SPU refuses it before storing anything, and the partition keeps
serving the good records around it, through the API and the CLI.
"""

from __future__ import annotations

import zlib

import msgspec
import pytest

from rillet import ConsumerConfig, Offset
from rillet.ipc import messages as m
from rillet.ipc.compression import Codec, compress
from rillet.ipc.connection import Connection
from rillet.ipc.errors import CompressionError, CorruptBatch
from rillet.ipc.records import ATTRIBUTES_POS, BATCH_HEADER, HEADER_SIZE, MAGIC, encode_batch
from tests.conftest import run_cli

SPU = 5001


def poison(block: bytes, *, count: int = 1, codec: int = 0) -> bytes:
    buf = bytearray(HEADER_SIZE) + block
    BATCH_HEADER.pack_into(buf, 0, 0, HEADER_SIZE - 12 + len(block), -1, MAGIC, 0, codec,
                           count - 1, 1, 1, -1, -1, -1, count)
    return bytes(_with_crc(buf, zlib.crc32(memoryview(buf)[ATTRIBUTES_POS:])))


def _with_crc(buf: bytearray, crc: int) -> bytearray:
    fields = list(BATCH_HEADER.unpack_from(buf, 0))
    fields[4] = crc                                         # base, length, epoch, magic, crc, ...
    BATCH_HEADER.pack_into(buf, 0, *fields)
    return buf


POISONS = {
    "garbage block": (poison(b"\xc1\xc1\xc1"), CorruptBatch),
    "wrong record shape": (poison(msgspec.msgpack.encode([[0, "str key", b"v", None]])), CorruptBatch),
    "count disagrees": (poison(msgspec.msgpack.encode([[0, None, b"a", None]] * 2), count=3), CorruptBatch),
    "unknown codec": (poison(msgspec.msgpack.encode([[0, None, b"a", None]]), codec=6), CorruptBatch),
    "does not decompress": (poison(b"\x00not lz4 at all", codec=int(Codec.LZ4)), CompressionError),
    "decompression bomb": (poison(compress(Codec.ZSTD, msgspec.msgpack.encode([[0, None, bytes(65 << 20), None]])),
                                  codec=int(Codec.ZSTD)), CompressionError),    # past the 64 MiB bound
}


@pytest.mark.parametrize("name", list(POISONS))
def test_a_poison_batch_is_refused_and_the_partition_stays_readable(cluster, name):
    topic = f"pz-{list(POISONS).index(name)}"
    cluster.create_topic(topic)
    batch, error = POISONS[name]
    assert zlib.crc32(batch[ATTRIBUTES_POS:]) == BATCH_HEADER.unpack_from(batch)[4]    # the CRC is right
    conn = Connection(cluster.paths.spu_socket(SPU))
    good = encode_batch([(None, b"before", 1)])
    assert conn.call(m.ProduceRequest(conn.next_cid(), topic, 0, 0, 1000, memoryview(good))).base_offset == 0
    with pytest.raises(error):
        conn.call(m.ProduceRequest(conn.next_cid(), topic, 0, 0, 1000, memoryview(batch)))
    after = encode_batch([(None, b"after", 1)])
    assert conn.call(m.ProduceRequest(conn.next_cid(), topic, 0, 0, 1000, memoryview(after))).base_offset == 1
    conn.close()
    config = ConsumerConfig().disable_continuous()
    stream = cluster.fluvio().partition_consumer(topic, 0).stream_with_config(Offset.beginning(), config)
    assert [(r.offset(), r.value()) for r in stream] == [(0, b"before"), (1, b"after")]
    done = run_cli(cluster, "consume", topic, "-B", "-d")
    assert done.returncode == 0 and done.stdout.split() == [b"before", b"after"], done.stderr
