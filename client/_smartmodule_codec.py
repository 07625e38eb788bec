"""Fluvio's SmartModule ABI encoding, pure: what goes into a module's memory and what comes back.

A Fluvio SmartModule is called as ``fn(ptr, len, version) -> i32``: the host copies an encoded
*input* into memory the module allocated (its exported ``alloc``), and the module hands its
encoded *output* back by calling the imported ``env.copy_records(ptr, len)``. Both sides use
Fluvio's protocol encoding at ``version`` (fields appear or vanish by version); this module
writes and reads those bytes, and nothing else (no wasm runtime here: see _smartmodule_engine).

Fluvio's protocol encoding, as used here (all fixed-width integers big-endian):

| type                 | bytes                                                           |
|----------------------|-----------------------------------------------------------------|
| i8 / bool            | 1 byte (bool: 0 or 1)                                           |
| i64 (Offset, time)   | 8 bytes                                                         |
| String               | u16 length, UTF-8 bytes                                         |
| Vec<u8>, Vec<T>      | u32 count, then the bytes / items                               |
| Option<T>            | bool, then T when true                                          |
| BTreeMap<K, V>       | u16 count, then key, value pairs in key order                   |
| varint               | zigzag, 7 bits a byte, low first (Kafka's)                      |
| RecordData           | varint length, bytes                                            |
| Record               | varint length of the rest, then: attributes i8, timestamp delta |
|                      | varint, offset delta varint, key Option<RecordData>, value      |
|                      | RecordData, header count varint                                 |

Structures at ``VERSION`` 22 (Fluvio's engine default, SMARTMODULE_TIMESTAMPS_VERSION):

    SmartModuleInput      base_offset i64, raw_bytes Vec<u8> (a Vec<Record>), params
                          (ExtraParams, up to v22), join_record Vec<u8> (v16..v22),
                          base_timestamp i64 (from v22)
    ExtraParams           inner BTreeMap<String, String>, lookback Option<Lookback> (from v20)
    AggregateInput        SmartModuleInput, accumulator Vec<u8>
    InitInput             ExtraParams
    SmartModuleOutput     successes Vec<Record>, error Option<TransformRuntimeError>
    AggregateOutput       SmartModuleOutput, accumulator Vec<u8> (from v16)
    InitOutput            error: hint String
    TransformRuntimeError hint String, offset i64, kind u8 tag, record_key Option<RecordData>,
                          record_value RecordData

Why version 22: modules built before v20 (no lookback field) read the same bytes at v22 as at
v19, because the absent lookback (one 0 byte) and the empty join record (four 0 bytes) read as
an empty join record to them; newer modules get the batch's base timestamp.

Every length read is checked against what is left, so a module's garbage output raises
:class:`OutputError`, never an IndexError or a huge allocation.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

VERSION = 22

_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")

# SmartModuleKind tags in a runtime error (fluvio-protocol link/smartmodule.rs)
KIND_NAMES = {0: "Filter", 1: "Map", 2: "ArrayMap", 3: "Aggregate", 4: "FilterMap", 5: "Join", 6: "Generic"}

# negative return codes of a transform call (SmartModuleTransformErrorStatus)
TRANSFORM_STATUS = {
    -1: "encountered unknown error during SmartModule processing",
    -11: "failed to decode SmartModule base input",
    -22: "failed to decode SmartModule record input",
    -33: "failed to encode SmartModule output",
    -44: "failed to parse SmartModule extra params",
    -55: "undefined right record in Join SmartModule",
}
# negative return codes of init (SmartModuleInitErrorStatus); -2 means "read the InitOutput"
INIT_ERROR = -2
INIT_STATUS = {
    -1: "encountered unknown error during SmartModule processing",
    -10: "failed to decode SmartModule init input",
    -11: "failed to encode SmartModule init output",
}


class OutputError(ValueError):
    """A module's output does not decode (truncated, or a length past the end)."""


class SmRecord(NamedTuple):
    """One record as a SmartModule sees it: deltas against the call's base offset and time."""
    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    value: bytes


class RuntimeErrorInfo(NamedTuple):
    """A SmartModule's own error for one record (its ``Err(...)``), as the module encoded it."""
    hint: str
    offset: int
    kind: str
    key: bytes | None
    value: bytes


# --- encoding -------------------------------------------------------------------------

def _varint_slow(n: int) -> bytes:
    v = ((n << 1) ^ (n >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _small_varints() -> list[bytes]:
    out = []
    for n in range(-8192, 8192):
        z = (n << 1) ^ (n >> 63)
        out.append(bytes((z,)) if z < 0x80 else bytes(((z & 0x7F) | 0x80, z >> 7)))
    return out


_SMALL_VARINTS = _small_varints()           # every one- and two-byte varint, index n + 8192


def varint(n: int) -> bytes:
    """Zigzag varint (Kafka's): small magnitudes take one byte. Lengths and deltas of ordinary
    records are two bytes at most, so those come from a table (this runs per record)."""
    if -8192 <= n < 8192:
        return _SMALL_VARINTS[n + 8192]
    return _varint_slow(n)


def _record_data(data: bytes) -> bytes:
    return varint(len(data)) + data


def encode_record(record: SmRecord) -> bytes:
    key = record.key
    value = record.value
    body = b"".join((
        b"\x00", varint(record.timestamp_delta), varint(record.offset_delta),
        b"\x00" if key is None else b"\x01" + varint(len(key)) + key,
        varint(len(value)), value, b"\x00",          # no headers
    ))
    return varint(len(body)) + body


def encode_records(records: list[SmRecord]) -> bytes:
    """A Vec<Record>: what SmartModuleInput's raw_bytes holds."""
    return _U32.pack(len(records)) + b"".join(map(encode_record, records))


def _string(s: str) -> bytes:
    data = s.encode()
    if len(data) > 0x7FFF:
        raise ValueError(f"string of {len(data)} bytes exceeds Fluvio's limit of 32767")
    return _U16.pack(len(data)) + data


def encode_params(params: dict[str, str], version: int = VERSION) -> bytes:
    """SmartModuleExtraParams: the map in key order, then no lookback (from v20)."""
    if len(params) > 0xFFFF:
        raise ValueError(f"{len(params)} SmartModule params exceed the limit of 65535")
    out = [_U16.pack(len(params))]
    for key in sorted(params):
        out += [_string(key), _string(params[key])]
    if version >= 20:
        out.append(b"\x00")
    return b"".join(out)


def encode_input(raw_records: bytes, base_offset: int, base_timestamp: int, version: int = VERSION) -> bytes:
    """SmartModuleInput around already encoded records (:func:`encode_records`)."""
    out = [_I64.pack(base_offset), _U32.pack(len(raw_records)), raw_records]
    if version <= 22:
        out.append(encode_params({}, version))
        if version >= 16:
            out.append(_U32.pack(0))                 # no join record
    if version >= 22:
        out.append(_I64.pack(base_timestamp))
    return b"".join(out)


def encode_aggregate_input(input_bytes: bytes, accumulator: bytes) -> bytes:
    return input_bytes + _U32.pack(len(accumulator)) + accumulator


# --- decoding -------------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise OutputError(f"needs {n} bytes at byte {self.pos}, only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def fixed(self, s: struct.Struct) -> int:
        return s.unpack(self.take(s.size))[0]

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 63:
                raise OutputError(f"varint longer than 10 bytes at byte {self.pos}")
        return (value >> 1) ^ -(value & 1)

    def record_data(self) -> bytes:
        return self.take(self.varint())

    def option(self) -> bool:
        flag = self.byte()
        if flag > 1:
            raise OutputError(f"bad Option flag {flag} at byte {self.pos - 1}")
        return flag == 1

    def string(self) -> str:
        return self.take(self.fixed(_U16)).decode("utf-8", "replace")

    def vec_u8(self) -> bytes:
        return self.take(self.fixed(_U32))


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the zigzag varint at ``pos``."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise OutputError(f"varint runs past the end at byte {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise OutputError(f"varint longer than 10 bytes at byte {pos}")


def decode_records(r: _Reader) -> list[SmRecord]:
    """A Vec<Record>. The hot path of every call (one per output record), so it walks the bytes
    with local variables; every length is checked against the record's own end."""
    data, pos, n = r.data, r.pos, len(r.data)
    if pos + 4 > n:
        raise OutputError(f"needs 4 bytes at byte {pos}, only {n - pos} left")
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    if count > n - pos:                               # a record takes at least one byte
        raise OutputError(f"{count} records announced, only {n - pos} bytes left")
    out = []
    varint_at = _varint_at
    # Varints of one or two bytes (lengths under 8 KiB, deltas under 8192) are decoded inline:
    # a function call per varint was half of this loop's time.
    for i in range(count):
        if pos >= n:
            raise OutputError(f"record {i} of {count} is missing: the output ends at byte {pos}")
        b = data[pos]
        if b < 0x80:
            length, pos = (b >> 1) ^ -(b & 1), pos + 1
        elif pos + 1 < n and data[pos + 1] < 0x80:
            u = (b & 0x7F) | (data[pos + 1] << 7)
            length, pos = (u >> 1) ^ -(u & 1), pos + 2
        else:
            length, pos = varint_at(data, pos)
        end = pos + length
        if length < 3 or end > n:
            raise OutputError(f"record of {length} bytes at byte {pos} runs past the end or is too short")
        p = pos + 1                                   # after the attributes byte
        b = data[p]
        if b < 0x80:
            ts, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            ts, p = varint_at(data, p)
        b = data[p] if p < end else 0x80
        if b < 0x80:
            od, p = (b >> 1) ^ -(b & 1), p + 1
        elif p + 1 < end and data[p + 1] < 0x80:
            u = (b & 0x7F) | (data[p + 1] << 7)
            od, p = (u >> 1) ^ -(u & 1), p + 2
        else:
            od, p = varint_at(data, p)
        if p >= end:
            raise OutputError(f"record at byte {pos} ends before its key")
        flag = data[p]
        key = None
        if flag == 1:
            klen, p = varint_at(data, p + 1)
            if klen < 0 or p + klen > end:
                raise OutputError(f"key of {klen} bytes at byte {p} runs past its record")
            key = data[p:p + klen]
            p += klen
        elif flag != 0:
            raise OutputError(f"bad Option flag {flag} at byte {p}")
        else:
            p += 1
        b = data[p] if p < end else 0x80
        if b < 0x80:
            vlen, p = (b >> 1) ^ -(b & 1), p + 1
        elif p + 1 < end and data[p + 1] < 0x80:
            u = (b & 0x7F) | (data[p + 1] << 7)
            vlen, p = (u >> 1) ^ -(u & 1), p + 2
        else:
            vlen, p = varint_at(data, p)
        if vlen < 0 or p + vlen > end:
            raise OutputError(f"value of {vlen} bytes at byte {p} runs past its record")
        out.append(SmRecord(od, ts, key, data[p:p + vlen]))
        pos = end                                     # header count, and whatever a newer encoder added
    r.pos = pos
    return out


def _runtime_error(r: _Reader) -> RuntimeErrorInfo:
    hint, offset, tag = r.string(), r.fixed(_I64), r.byte()
    key = r.record_data() if r.option() else None
    return RuntimeErrorInfo(hint, offset, KIND_NAMES.get(tag, f"kind {tag}"), key, r.record_data())


def decode_output(data: bytes) -> tuple[list[SmRecord], RuntimeErrorInfo | None]:
    """SmartModuleOutput: the records that passed, and the module's error if it stopped on one."""
    r = _Reader(bytes(data))
    records = decode_records(r)
    return records, (_runtime_error(r) if r.option() else None)


def decode_aggregate_output(data: bytes) -> tuple[list[SmRecord], RuntimeErrorInfo | None, bytes]:
    """SmartModuleAggregateOutput: the base output, then the new accumulator."""
    r = _Reader(bytes(data))
    records = decode_records(r)
    error = _runtime_error(r) if r.option() else None
    return records, error, r.vec_u8()


def decode_init_output(data: bytes) -> str:
    """SmartModuleInitOutput: the hint of the module's init error."""
    return _Reader(data).string()


def transform_status(code: int) -> str:
    return TRANSFORM_STATUS.get(code, f"{TRANSFORM_STATUS[-1]} (status {code})")


def init_status(code: int) -> str:
    return INIT_STATUS.get(code, f"{INIT_STATUS[-1]} (status {code})")


__all__ = [
    "VERSION", "SmRecord", "RuntimeErrorInfo", "OutputError", "encode_record", "encode_records", "encode_params",
    "encode_input", "encode_aggregate_input", "decode_output", "decode_aggregate_output", "decode_init_output",
    "transform_status", "init_status", "INIT_ERROR", "varint",
]
