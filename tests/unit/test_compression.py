"""compression: codec names, round trips, interop with the libraries' own formats,
the decompression-bomb guard and corrupt payloads (CompressionError, nothing else)."""

from __future__ import annotations

import gzip
import random
import sys

import lz4.frame
import pytest
import snappy
import zstandard

from rillet.ipc import compression
from rillet.ipc.compression import (
    CODEC_NAMES,
    TOPIC_COMPRESSION_CHOICES,
    Codec,
    compress,
    decompress,
    parse_codec,
    parse_topic_compression,
    snappy_declared_length,
)
from rillet.ipc.errors import CompressionError, InvalidArgument, UnknownCodec

ALL = list(Codec)
COMPRESSED = [c for c in Codec if c is not Codec.NONE]
SAMPLES = {
    "empty": b"",
    "one byte": b"x",
    "text": b"the quick brown fox jumps over the lazy dog " * 200,
    "random": random.Random(7).randbytes(5000),
    "zeros 1 MiB": bytes(1 << 20),
}


# --- names ------------------------------------------------------------------------------

def test_codec_ids_are_the_wire_values():
    assert [(c.name, int(c)) for c in Codec] == [("NONE", 0), ("GZIP", 1), ("SNAPPY", 2), ("LZ4", 3), ("ZSTD", 4)]
    assert CODEC_NAMES == ("none", "gzip", "snappy", "lz4", "zstd")
    assert TOPIC_COMPRESSION_CHOICES == ("any", "none", "gzip", "snappy", "lz4", "zstd")


@pytest.mark.parametrize("name, codec", [
    ("none", Codec.NONE), ("GZIP", Codec.GZIP), ("Snappy", Codec.SNAPPY), ("lz4", Codec.LZ4), ("ZsTd", Codec.ZSTD),
    (0, Codec.NONE), (4, Codec.ZSTD), (Codec.LZ4, Codec.LZ4),
])
def test_parse_codec_accepts_names_ids_and_members(name, codec):
    assert parse_codec(name) is codec


def test_parse_codec_unknown_name_message():
    with pytest.raises(UnknownCodec) as info:
        parse_codec("brotli")
    assert str(info.value) == "unknown compression codec 'brotli' (expected one of none, gzip, snappy, lz4, zstd)"


@pytest.mark.parametrize("name", ["", " lz4", "any", "lz4 "])
def test_parse_codec_is_strict_about_spelling(name):
    with pytest.raises(UnknownCodec, match="unknown compression codec"):
        parse_codec(name)


def test_parse_codec_unknown_id_and_type():
    with pytest.raises(UnknownCodec, match="id 5 .expected 0 to 4"):
        parse_codec(5)
    with pytest.raises(UnknownCodec, match="not NoneType"):
        parse_codec(None)
    with pytest.raises(UnknownCodec, match="not bool"):
        parse_codec(True)


def test_unknown_codec_is_an_invalid_argument():
    # Callers that catch InvalidArgument for bad configuration catch this too.
    with pytest.raises(InvalidArgument):
        parse_codec("brotli")


@pytest.mark.parametrize("name", TOPIC_COMPRESSION_CHOICES)
def test_parse_topic_compression_lowercases(name):
    assert parse_topic_compression(name) == name
    assert parse_topic_compression(name.upper()) == name


def test_parse_topic_compression_unknown():
    with pytest.raises(UnknownCodec) as info:
        parse_topic_compression("Brotli")
    assert str(info.value) == (
        "unknown topic compression 'Brotli' (expected one of any, none, gzip, snappy, lz4, zstd)"
    )
    with pytest.raises(UnknownCodec, match="must be a string, not int"):
        parse_topic_compression(3)


# --- round trips and interop ---------------------------------------------------------------

@pytest.mark.parametrize("codec", ALL)
@pytest.mark.parametrize("sample", SAMPLES)
def test_round_trip(codec, sample):
    data = SAMPLES[sample]
    packed = compress(codec, data)
    assert isinstance(packed, bytes)
    assert decompress(codec, packed, max_size=len(data)) == data


@pytest.mark.parametrize("codec", ALL)
def test_accepts_bytearray_and_memoryview(codec):
    data = SAMPLES["text"]
    packed = compress(codec, memoryview(bytearray(data)))
    padded = b"##" + packed + b"##"
    view = memoryview(padded)[2:-2]          # a slice of a larger buffer, as in a fetch
    assert decompress(codec, view, max_size=len(data)) == data
    assert decompress(int(codec), bytearray(packed), max_size=len(data)) == data


def test_compressed_data_is_smaller_for_text():
    data = SAMPLES["text"]
    for codec in COMPRESSED:
        assert len(compress(codec, data)) < len(data) // 4, codec


def test_formats_are_the_libraries_own():
    data = SAMPLES["text"]
    assert compress(Codec.GZIP, data)[:2] == b"\x1f\x8b"
    assert gzip.decompress(compress(Codec.GZIP, data)) == data
    assert decompress(Codec.GZIP, gzip.compress(data), max_size=len(data)) == data
    assert snappy.uncompress(compress(Codec.SNAPPY, data)) == data
    assert decompress(Codec.SNAPPY, snappy.compress(data), max_size=len(data)) == data
    assert lz4.frame.decompress(compress(Codec.LZ4, data)) == data
    assert decompress(Codec.LZ4, lz4.frame.compress(data), max_size=len(data)) == data
    assert zstandard.ZstdDecompressor().decompress(compress(Codec.ZSTD, data)) == data
    assert decompress(Codec.ZSTD, zstandard.ZstdCompressor().compress(data), max_size=len(data)) == data


def test_our_frames_declare_their_size():
    # The bomb guard checks the declared size before allocating: keep writing it.
    data = SAMPLES["text"]
    assert lz4.frame.get_frame_info(compress(Codec.LZ4, data))["content_size"] == len(data)
    assert zstandard.frame_content_size(compress(Codec.ZSTD, data)) == len(data)
    assert snappy_declared_length(compress(Codec.SNAPPY, data)) == len(data)


def test_zstd_frame_without_declared_size():
    data = SAMPLES["text"]
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert decompress(Codec.ZSTD, packed, max_size=len(data)) == data
    with pytest.raises(CompressionError, match=f"without a declared size .* max_size={len(data) - 1}"):
        decompress(Codec.ZSTD, packed, max_size=len(data) - 1)


# --- the bomb guard ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ALL)
def test_output_at_the_limit_passes_one_past_fails(codec):
    data = SAMPLES["zeros 1 MiB"]
    packed = compress(codec, data)
    assert decompress(codec, packed, max_size=len(data)) == data
    with pytest.raises(CompressionError) as info:
        decompress(codec, packed, max_size=len(data) - 1)
    message = str(info.value)
    assert message.startswith(codec.name.lower())
    assert f"max_size={len(data) - 1}" in message


@pytest.mark.parametrize("codec", [Codec.NONE, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD])
def test_declared_size_is_named(codec):
    packed = compress(codec, bytes(10 << 20))
    with pytest.raises(CompressionError) as info:
        decompress(codec, packed, max_size=4096)
    assert str(info.value) == f"{codec.name.lower()} payload decompresses to {10 << 20} bytes, more than max_size=4096"


def test_gzip_bomb_stops_at_the_limit():
    packed = compress(Codec.GZIP, bytes(10 << 20))
    with pytest.raises(CompressionError, match=r"^gzip payload decompresses to more than max_size=4096 bytes$"):
        decompress(Codec.GZIP, packed, max_size=4096)


def test_forged_snappy_length_is_refused_before_allocating():
    # 0xffffffff0f declares 2**32 - 1 bytes; nothing follows it.
    with pytest.raises(CompressionError, match=r"decompresses to 4294967295 bytes, more than max_size=1000"):
        decompress(Codec.SNAPPY, b"\xff\xff\xff\xff\x0f", max_size=1000)


@pytest.mark.parametrize("data, expected", [
    (b"\x00", 0), (b"\x7f", 127), (b"\x80\x01", 128), (b"\xff\x7f", 16383), (b"\xff\xff\xff\xff\x0f", (1 << 32) - 1),
])
def test_snappy_declared_length(data, expected):
    assert snappy_declared_length(data + b"tail") == expected


def test_snappy_length_prefix_errors():
    with pytest.raises(CompressionError, match="snappy payload of 0 bytes ends inside its length prefix"):
        snappy_declared_length(b"")
    with pytest.raises(CompressionError, match="snappy payload of 2 bytes ends inside"):
        snappy_declared_length(b"\x80\x80")
    with pytest.raises(CompressionError, match="longer than 5 bytes"):
        snappy_declared_length(b"\x80\x80\x80\x80\x80\x01")


def test_negative_max_size_is_an_argument_error():
    with pytest.raises(InvalidArgument, match="max_size must be >= 0, got -1"):
        decompress(Codec.NONE, b"", max_size=-1)


def test_zero_max_size_allows_only_empty_output():
    for codec in ALL:
        assert decompress(codec, compress(codec, b""), max_size=0) == b""
        with pytest.raises(CompressionError):
            decompress(codec, compress(codec, b"x"), max_size=0)


# --- corrupt payloads --------------------------------------------------------------------------

@pytest.mark.parametrize("codec", COMPRESSED)
def test_truncated_payload(codec):
    data = SAMPLES["random"]
    packed = compress(codec, data)
    for cut in (0, 1, len(packed) // 2, len(packed) - 1):
        with pytest.raises(CompressionError) as info:
            decompress(codec, packed[:cut], max_size=len(data))
        assert codec.name.lower() in str(info.value)


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.LZ4, Codec.ZSTD])
def test_stray_bytes_after_the_payload(codec):
    data = SAMPLES["text"]
    packed = compress(codec, data)
    with pytest.raises(CompressionError, match=codec.name.lower()):
        decompress(codec, packed + b"junk", max_size=len(data))
    with pytest.raises(CompressionError):  # a second member or frame is not ours either
        decompress(codec, packed + packed, max_size=2 * len(data))


@pytest.mark.parametrize("codec", COMPRESSED)
def test_garbage_payload(codec):
    with pytest.raises(CompressionError, match=f"^{codec.name.lower()} "):
        decompress(codec, b"\x01this is not compressed at all", max_size=1 << 20)


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize("seed", range(3))
def test_damaged_payloads_raise_only_compression_error(codec, seed):
    # Flip, cut and splice random bytes: the result decodes (the batch CRC guards
    # integrity, not the codec) or raises CompressionError, never anything else.
    rng = random.Random(seed * 31 + int(codec))
    data = SAMPLES["text"] + SAMPLES["random"]
    packed = compress(codec, data)
    for _ in range(150):
        damaged = bytearray(packed)
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            pos = rng.randrange(len(damaged))
            if action < 0.6:
                damaged[pos] ^= 1 << rng.randrange(8)
            elif action < 0.8:
                del damaged[pos:pos + rng.randint(1, 16)]
            else:
                damaged[pos:pos] = rng.randbytes(rng.randint(1, 16))
        try:
            out = decompress(codec, bytes(damaged), max_size=len(data) + 64)
        except CompressionError:
            continue
        assert isinstance(out, bytes) and len(out) <= len(data) + 64


@pytest.mark.parametrize("codec", [8, "brotli"])
def test_unknown_codec_in_compress_and_decompress(codec):
    with pytest.raises(UnknownCodec):
        compress(codec, b"x")
    with pytest.raises(UnknownCodec):
        decompress(codec, b"x", max_size=10)


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(compression, "_loaded", {})
    monkeypatch.setitem(sys.modules, "snappy", None)   # makes `import snappy` fail
    with pytest.raises(CompressionError) as info:
        compress(Codec.SNAPPY, b"x")
    assert str(info.value) == (
        "snappy compression needs the 'python-snappy' package, which is not installed (pip install python-snappy)"
    )
    assert isinstance(info.value.__cause__, ImportError)
    assert decompress(Codec.GZIP, compress(Codec.GZIP, b"x"), max_size=1) == b"x"   # the stdlib codec still works
