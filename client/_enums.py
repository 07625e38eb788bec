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


class Isolation(IntEnum):
    ReadUncommitted = 0
    ReadCommitted = 1

    @classmethod
    def parse(cls, value: "Isolation | str") -> "Isolation":
        if isinstance(value, Isolation):
            return value
        key = str(value).replace("-", "_").lower()
        names = {"read_uncommitted": cls.ReadUncommitted, "readuncommitted": cls.ReadUncommitted,
                 "read_committed": cls.ReadCommitted, "readcommitted": cls.ReadCommitted}
        if key not in names:
            from rillet.ipc.errors import InvalidArgument
            raise InvalidArgument(f"unknown isolation {value!r} (expected read_uncommitted or read_committed)")
        return names[key]


class DeliverySemantic(IntEnum):
    AtMostOnce = 0
    AtLeastOnce = 1

    @classmethod
    def parse(cls, value: "DeliverySemantic | str") -> "DeliverySemantic":
        if isinstance(value, DeliverySemantic):
            return value
        key = str(value).replace("_", "-").lower()
        names = {"at-most-once": cls.AtMostOnce, "atmostonce": cls.AtMostOnce,
                 "at-least-once": cls.AtLeastOnce, "atleastonce": cls.AtLeastOnce}
        if key not in names:
            from rillet.ipc.errors import InvalidArgument
            raise InvalidArgument(f"unknown delivery semantic {value!r} (expected at-most-once or at-least-once)")
        return names[key]


class OffsetManagementStrategy(IntEnum):
    NONE = 0
    MANUAL = 1
    AUTO = 2
