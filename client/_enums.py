"""Enums with the Fluvio Python client's names (``Compression.None_`` included)."""

from __future__ import annotations

from enum import Enum, IntEnum


class Compression(IntEnum):
    """Producer-side batch compression. Values are the batch header's codec ids."""
    None_ = 0
    Gzip = 1
    Snappy = 2
    Lz4 = 3
    Zstd = 4

    @classmethod
    def parse(cls, value: "Compression | str | int") -> "Compression":
        from rillet.ipc.compression import parse_codec
        return cls(int(parse_codec(value.value if isinstance(value, Compression) else value)))


class CompressionType(str, Enum):
    """A topic's compression rule: ANY accepts every codec, others require theirs."""
    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ANY = "any"
    ZSTD = "zstd"


def _parse_member(cls, value, spellings: tuple[str, ...], what: str):
    """``value`` as a member of ``cls``: the member itself, or a spelling such as
    "read_committed", "read-committed" or "ReadCommitted" (case, "-" and "_" ignored)."""
    if isinstance(value, cls):
        return value
    key = str(value).replace("-", "").replace("_", "").lower()
    for member in cls:
        if member.name.lower() == key:
            return member
    from rillet.ipc.errors import InvalidArgument
    raise InvalidArgument(f"unknown {what} {value!r} (expected {' or '.join(spellings)})")


class Isolation(IntEnum):
    ReadUncommitted = 0
    ReadCommitted = 1

    @classmethod
    def parse(cls, value: "Isolation | str") -> "Isolation":
        return _parse_member(cls, value, ("read_uncommitted", "read_committed"), "isolation")


class DeliverySemantic(IntEnum):
    AtMostOnce = 0
    AtLeastOnce = 1

    @classmethod
    def parse(cls, value: "DeliverySemantic | str") -> "DeliverySemantic":
        return _parse_member(cls, value, ("at-most-once", "at-least-once"), "delivery semantic")


class OffsetManagementStrategy(IntEnum):
    NONE = 0
    MANUAL = 1
    AUTO = 2
