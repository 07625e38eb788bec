"""Fluvio's SmartModule encoding (client/_smartmodule_codec.py) and the wasm export reader
(ipc/wasm.py), pure: byte vectors, round trips, and damaged input that must raise one error."""

from __future__ import annotations

import random

import pytest

from rillet._smartmodule_codec import (
    OutputError, SmRecord, decode_aggregate_output, decode_init_output, decode_output, encode_aggregate_input,
    encode_input, encode_params, encode_record, encode_records, transform_status, varint,
)
from rillet.ipc.wasm import WasmFormatError, check_smartmodule, exports, smartmodule_transform


@pytest.mark.parametrize("n, encoded", [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (64, b"\x80\x01"),
                                        (-65, b"\x81\x01"), (300, b"\xd8\x04")])
def test_varint_is_kafkas_zigzag(n, encoded):
    assert varint(n) == encoded


def test_a_record_has_fluvios_layout():
    # length 10 (zigzag 20): attributes, ts delta 2 (zigzag 4), offset delta 1 (2), key Some("k"), value "ab", 0 headers
    assert encode_record(SmRecord(1, 2, b"k", b"ab")) == b"\x14" + b"\x00\x04\x02" + b"\x01\x02k" + b"\x04ab" + b"\x00"
    assert encode_record(SmRecord(0, 0, None, b"")) == b"\x0c" + b"\x00\x00\x00" + b"\x00" + b"\x00" + b"\x00"


def test_input_at_version_22_carries_params_join_and_base_timestamp():
    raw = encode_records([SmRecord(0, 0, None, b"x")])
    data = encode_input(raw, 7, 1000)
    assert data[:8] == (7).to_bytes(8, "big")
    assert data[8:12] == len(raw).to_bytes(4, "big") and data[12:12 + len(raw)] == raw
    rest = data[12 + len(raw):]
    assert rest == b"\x00\x00" + b"\x00" + b"\x00\x00\x00\x00" + (1000).to_bytes(8, "big")
    # before v20 no lookback byte; from v23 no params or join record
    assert encode_input(raw, 7, 1000, version=19)[12 + len(raw):] == b"\x00\x00" + b"\x00\x00\x00\x00"
    assert encode_input(raw, 7, 1000, version=23)[12 + len(raw):] == (1000).to_bytes(8, "big")
    assert encode_aggregate_input(b"in", b"acc") == b"in" + b"\x00\x00\x00\x03acc"


def test_params_are_in_key_order():
    assert encode_params({"b": "2", "a": "1"}) == b"\x00\x02" + b"\x00\x01a\x00\x011" + b"\x00\x01b\x00\x012" + b"\x00"


def _output(records, error=None, accumulator=None):
    out = encode_records(records)
    if error is None:
        out += b"\x00"
    else:
        hint, offset, tag, key, value = error
        out += b"\x01" + len(hint).to_bytes(2, "big") + hint + offset.to_bytes(8, "big") + bytes([tag])
        out += (b"\x01" + varint(len(key)) + key if key is not None else b"\x00") + varint(len(value)) + value
    if accumulator is not None:
        out += len(accumulator).to_bytes(4, "big") + accumulator
    return out


def test_output_round_trips_records_and_the_modules_error():
    records = [SmRecord(0, 5, None, b"a"), SmRecord(3, -2, b"key", b"b" * 300)]
    assert decode_output(_output(records)) == (records, None)
    got, error = decode_output(_output(records[:1], (b"bad utf-8", 41, 0, None, b"\xff")))
    assert got == records[:1]
    assert (error.hint, error.offset, error.kind, error.key, error.value) == ("bad utf-8", 41, "Filter", None, b"\xff")
    assert decode_aggregate_output(_output(records, None, b"acc")) == (records, None, b"acc")
    assert decode_init_output(b"\x00\x0bMissing key") == "Missing key"


def test_damaged_output_raises_one_error_at_every_cut():
    data = _output([SmRecord(0, 0, b"k", b"value"), SmRecord(1, 0, None, b"v2")], (b"h", 1, 1, b"k", b"v"))
    for cut in range(len(data)):
        with pytest.raises(OutputError):
            decode_output(data[:cut])
    rng = random.Random(13)
    for _ in range(300):                    # random garbage: decodes or raises OutputError, nothing else
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            decode_output(junk)
        except OutputError:
            pass
    for _ in range(2000):                   # a valid output with bytes changed: the same
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            decode_output(bytes(damaged))
        except OutputError:
            pass
    with pytest.raises(OutputError, match="records announced"):
        decode_output(b"\xff\xff\xff\xff")


def test_negative_statuses_read_as_fluvios_messages():
    assert transform_status(-22) == "failed to decode SmartModule record input"
    assert "status -7" in transform_status(-7)


def _section(section_id: int, body: bytes) -> bytes:
    return bytes([section_id]) + bytes([len(body)]) + body


def _wasm_with_exports(*names_kinds) -> bytes:
    body = bytes([len(names_kinds)])
    for name, kind in names_kinds:
        body += bytes([len(name)]) + name.encode() + bytes([kind, 0])
    return b"\x00asm\x01\x00\x00\x00" + _section(0, b"\x04note") + _section(7, body)


def test_exports_are_read_from_the_export_section():
    data = _wasm_with_exports(("memory", 2), ("alloc", 0), ("map", 0))
    assert exports(data) == {"memory": "memory", "alloc": "func", "map": "func"}
    assert check_smartmodule(data) == "map"
    assert smartmodule_transform({"filter", "map"}) == "filter"          # Fluvio's order
    assert smartmodule_transform({"filter", "map"}, "map") == "map"      # the kind asked for, if exported


@pytest.mark.parametrize("data, message", [
    (b"hello world", "no \\\\0asm magic"),
    (b"\x00asm\x0d\x00\x01\x00", "unsupported WebAssembly version"),
    (b"\x00asm\x01\x00\x00\x00\x07\x20\x01", "runs past the end"),
    (_wasm_with_exports(("memory", 2), ("alloc", 0)), "exports none of filter, map"),
    (_wasm_with_exports(("filter", 0), ("alloc", 0)), "exports no memory 'memory'"),
])
def test_files_that_are_not_smartmodules_are_refused_saying_why(data, message):
    with pytest.raises(WasmFormatError, match=message):
        check_smartmodule(data)


def test_the_example_modules_export_what_fluvio_looks_for():
    from tests.smartmodule_wat import AGGREGATE, ARRAY_MAP, FILTER_MAP, FILTER_ON_A, FILTER_PARAM, MAP, example_wasm
    found = {name: check_smartmodule(example_wasm(name))
             for name in (FILTER_ON_A, FILTER_PARAM, MAP, FILTER_MAP, ARRAY_MAP, AGGREGATE)}
    assert found == {FILTER_ON_A: "filter", FILTER_PARAM: "filter", MAP: "map", FILTER_MAP: "filter_map",
                     ARRAY_MAP: "array_map", AGGREGATE: "aggregate"}
