"""Compression codecs for the records block of a batch (only the block, never the header).

Strategy: one ``compress`` / ``decompress`` pair dispatching on :class:`Codec`, the id
stored in bits 0-2 of the batch ``attributes``. Each codec uses its library's
self-describing format, so a payload carries enough to be checked before it is
expanded:

    id  name    format                                   size known before expanding
     0  none    the bytes as they are                    yes (its own length)
     1  gzip    RFC 1952 member, via zlib (wbits=31)     no: inflate stops at max_size + 1
     2  snappy  raw block: varint length, then tags      yes: the varint prefix
     3  lz4     LZ4 frame (lz4.frame)                    when the frame stores it (ours do)
     4  zstd    zstd frame (zstandard)                   when the frame stores it (ours do)

``decompress`` takes a mandatory ``max_size``: a few kilobytes of crafted input can
claim gigabytes, so a declared size is compared with the limit before anything is
allocated, and a codec that cannot declare it is expanded no further than the limit.

Errors: a library failure becomes :class:`CompressionError` naming the codec; a name
or id that is not a codec becomes :class:`UnknownCodec`. The codec libraries are
imported on first use, so ``none`` and ``gzip`` work without them and a missing one
is reported by package name.
"""

from __future__ import annotations

import importlib
import threading
import zlib
from enum import IntEnum
from types import ModuleType

from .errors import CompressionError, InvalidArgument, UnknownCodec


class Codec(IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_BY_NAME = {codec.name.lower(): codec for codec in Codec}
CODEC_NAMES = tuple(_BY_NAME)                   # ("none", "gzip", "snappy", "lz4", "zstd")
# A topic either pins one codec or, with "any", stores whatever the producer chose.
TOPIC_COMPRESSION_CHOICES = ("any",) + CODEC_NAMES
_EXPECTED = ", ".join(CODEC_NAMES)

# zlib's own default: the usual speed/ratio balance, and what Kafka's gzip uses.
GZIP_LEVEL = 6
# zstd's default level: near-lz4 speed with a clearly better ratio.
ZSTD_LEVEL = 3
_GZIP_WBITS = 31                                 # 16 + 15: a gzip wrapper around a 32 KiB window
_SNAPPY_MAX_PREFIX = 5                           # a uint32 takes at most 5 varint bytes


def parse_codec(name: str | int | Codec) -> Codec:
    """Return the Codec for a name (any case), an id 0-4 or a Codec; raise UnknownCodec."""
    if isinstance(name, str):
        codec = _BY_NAME.get(name.lower())
        if codec is None:
            raise UnknownCodec(f"unknown compression codec {name!r} (expected one of {_EXPECTED})")
        return codec
    if isinstance(name, bool) or not isinstance(name, int):
        raise UnknownCodec(f"compression codec must be a name or an id, not {type(name).__name__}")
    try:
        return Codec(name)
    except ValueError:
        raise UnknownCodec(f"unknown compression codec id {name} (expected 0 to {len(Codec) - 1})") from None


def parse_topic_compression(name: str) -> str:
    """Return a topic's compression setting in lower case: one of TOPIC_COMPRESSION_CHOICES."""
    if not isinstance(name, str):
        raise UnknownCodec(f"topic compression must be a string, not {type(name).__name__}")
    lowered = name.lower()
    if lowered not in TOPIC_COMPRESSION_CHOICES:
        raise UnknownCodec(
            f"unknown topic compression {name!r} (expected one of {', '.join(TOPIC_COMPRESSION_CHOICES)})"
        )
    return lowered


def compress(codec: Codec | int, data) -> bytes:
    """Compress ``data`` (any bytes-like object) with ``codec``; NONE returns it as bytes."""
    codec = parse_codec(codec)
    if codec is Codec.NONE:
        return bytes(data)
    try:
        return _COMPRESS[codec](data)
    except CompressionError:
        raise
    except Exception as exc:  # each library has its own error types; callers see one
        raise CompressionError(f"{codec.name.lower()} compression failed: {exc}") from exc


def decompress(codec: Codec | int, data, *, max_size: int) -> bytes:
    """Expand ``data`` compressed with ``codec``; refuse output longer than ``max_size`` bytes.

    Raises CompressionError naming the codec when the payload is corrupt, truncated,
    followed by stray bytes, or larger than ``max_size`` (then naming size and limit).
    """
    codec = parse_codec(codec)
    if max_size < 0:
        raise InvalidArgument(f"max_size must be >= 0, got {max_size}")
    if codec is Codec.NONE:
        _check_size(codec, len(data), max_size)
        return bytes(data)
    try:
        return _DECOMPRESS[codec](data, max_size)
    except CompressionError:
        raise
    except Exception as exc:  # zlib.error, cramjam, RuntimeError (lz4), ZstdError, ...
        raise CompressionError(f"{codec.name.lower()} payload does not decompress: {exc}") from exc


def _check_size(codec: Codec, size: int, max_size: int) -> None:
    if size > max_size:
        raise CompressionError(
            f"{codec.name.lower()} payload decompresses to {size} bytes, more than max_size={max_size}"
        )


def _too_big(codec: Codec, max_size: int) -> CompressionError:
    # Used where expansion stopped at the limit, so the full size is not known.
    return CompressionError(
        f"{codec.name.lower()} payload decompresses to more than max_size={max_size} bytes"
    )


# --- library loading -------------------------------------------------------------------

_PACKAGES = {"snappy": "python-snappy", "lz4.frame": "lz4", "zstandard": "zstandard"}
_loaded: dict[str, ModuleType] = {}
# zstandard contexts are reusable but not safe to share between threads (its docs).
_local = threading.local()


def _library(module: str, codec: Codec) -> ModuleType:
    lib = _loaded.get(module)
    if lib is None:
        try:
            lib = importlib.import_module(module)
        except ImportError as exc:
            package = _PACKAGES[module]
            raise CompressionError(
                f"{codec.name.lower()} compression needs the {package!r} package, which is not installed"
                f" (pip install {package})"
            ) from exc
        _loaded[module] = lib
    return lib


def _zstd_compressor():
    ctx = getattr(_local, "zstd_compressor", None)
    if ctx is None:
        zstd = _library("zstandard", Codec.ZSTD)
        # write_content_size (the default, made explicit): readers rely on it for the size check.
        ctx = _local.zstd_compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return ctx


def _zstd_decompressor():
    ctx = getattr(_local, "zstd_decompressor", None)
    if ctx is None:
        ctx = _local.zstd_decompressor = _library("zstandard", Codec.ZSTD).ZstdDecompressor()
    return ctx


# --- codecs -------------------------------------------------------------------------------

def _gzip_compress(data) -> bytes:
    return zlib.compress(data, GZIP_LEVEL, _GZIP_WBITS)


def _gzip_decompress(data, max_size: int) -> bytes:
    inflater = zlib.decompressobj(_GZIP_WBITS)
    out = inflater.decompress(data, max_size + 1)   # max_length 0 would mean "no limit"
    if len(out) > max_size:
        raise _too_big(Codec.GZIP, max_size)
    if not inflater.eof:
        raise CompressionError("gzip payload is truncated")
    if inflater.unused_data:
        raise CompressionError(f"gzip payload has {len(inflater.unused_data)} stray bytes after its end")
    return out


def _snappy_compress(data) -> bytes:
    return _library("snappy", Codec.SNAPPY).compress(data)


def _snappy_decompress(data, max_size: int) -> bytes:
    snappy = _library("snappy", Codec.SNAPPY)
    _check_size(Codec.SNAPPY, snappy_declared_length(data), max_size)
    return snappy.uncompress(data)


def snappy_declared_length(data) -> int:
    """The uncompressed length a raw snappy block declares in its varint prefix."""
    length = 0
    with memoryview(data) as view:
        for i in range(min(len(view), _SNAPPY_MAX_PREFIX)):
            byte = view[i]
            length |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return length
    if len(data) < _SNAPPY_MAX_PREFIX:
        raise CompressionError(f"snappy payload of {len(data)} bytes ends inside its length prefix")
    raise CompressionError(f"snappy length prefix is longer than {_SNAPPY_MAX_PREFIX} bytes")


def _lz4_compress(data) -> bytes:
    # store_size (the default, made explicit): readers rely on it for the size check.
    return _library("lz4.frame", Codec.LZ4).compress(data, store_size=True)


def _lz4_decompress(data, max_size: int) -> bytes:
    frame = _library("lz4.frame", Codec.LZ4)
    _check_size(Codec.LZ4, frame.get_frame_info(data)["content_size"], max_size)  # 0: not stored
    inflater = frame.LZ4FrameDecompressor()
    out = inflater.decompress(data, max_length=max_size + 1)
    if len(out) > max_size:
        raise _too_big(Codec.LZ4, max_size)
    if not inflater.eof:
        raise CompressionError("lz4 payload is truncated")
    if inflater.unused_data:
        raise CompressionError(f"lz4 payload has {len(inflater.unused_data)} stray bytes after its frame")
    return out


def _zstd_compress(data) -> bytes:
    return _zstd_compressor().compress(data)


def _zstd_decompress(data, max_size: int) -> bytes:
    zstd = _library("zstandard", Codec.ZSTD)
    declared = zstd.frame_content_size(data)
    if declared >= 0:
        # The frame allocates its declared size at once, so the check must come first.
        _check_size(Codec.ZSTD, declared, max_size)
        return _zstd_decompressor().decompress(data, allow_extra_data=False)
    # A frame without a declared size (not one of ours) is expanded at most to max_size;
    # zstandard then reports overflow and corruption alike, so the message names both.
    try:
        return _zstd_decompressor().decompress(data, max_output_size=max_size, allow_extra_data=False)
    except zstd.ZstdError as exc:
        raise CompressionError(
            f"zstd payload without a declared size is corrupt or larger than max_size={max_size}: {exc}"
        ) from exc


_COMPRESS = {
    Codec.GZIP: _gzip_compress,
    Codec.SNAPPY: _snappy_compress,
    Codec.LZ4: _lz4_compress,
    Codec.ZSTD: _zstd_compress,
}
_DECOMPRESS = {
    Codec.GZIP: _gzip_decompress,
    Codec.SNAPPY: _snappy_decompress,
    Codec.LZ4: _lz4_decompress,
    Codec.ZSTD: _zstd_decompress,
}
