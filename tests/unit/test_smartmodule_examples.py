"""rillet's example SmartModules (tests/wat, WAT compiled at test time) against Fluvio's compiled
example modules of the same behaviour: the same input bytes must give byte-identical output
(records, the module's own error, the accumulator) and the same status.

Fluvio's .wasm files are not part of rillet: they are read at test time from a snapshot of
infinyon/fluvio-client-python (``integration-tests/smartmodules-for-ci/``), at $RILLET_FLUVIO_MIRROR
(default /work/.mirror/infinyon+fluvio-client-python/repo, a bare git directory). Without a
snapshot the comparison is skipped; the examples' own behaviour is pinned by the engine tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rillet import _smartmodule_codec as codec
from rillet._smartmodule_engine import Limits, ModuleInstance
from tests.smartmodule_wat import (
    AGGREGATE, ARRAY_MAP, FILTER_MAP, FILTER_ON_A, FILTER_PARAM, FLUVIO_NAMES, MAP, example_wasm,
)

MIRROR = os.environ.get("RILLET_FLUVIO_MIRROR", "/work/.mirror/infinyon+fluvio-client-python/repo")
FLUVIO_DIR = "integration-tests/smartmodules-for-ci"


@pytest.fixture(scope="module")
def fluvio_modules(tmp_path_factory) -> dict[str, bytes]:
    """Fluvio's six compiled modules, read from the snapshot into a temporary directory."""
    if not Path(MIRROR).exists():
        pytest.skip(f"no fluvio-client-python snapshot at {MIRROR} (set $RILLET_FLUVIO_MIRROR)")
    where = tmp_path_factory.mktemp("fluvio-modules")
    found = {}
    for ours, theirs in FLUVIO_NAMES.items():
        shown = subprocess.run(["git", "-C", MIRROR, "show", f"HEAD:{FLUVIO_DIR}/{theirs}.wasm"],
                               capture_output=True, timeout=30)
        if shown.returncode != 0:
            pytest.skip(f"the snapshot at {MIRROR} has no {FLUVIO_DIR}/{theirs}.wasm: "
                        f"{shown.stderr.decode().strip()}")
        (where / f"{theirs}.wasm").write_bytes(shown.stdout)
        found[ours] = (where / f"{theirs}.wasm").read_bytes()
    return found


def _call(name: str, wasm: bytes, records: list[codec.SmRecord], params: dict[str, str],
          accumulator: bytes | None, base: int) -> tuple[int, bytes | None]:
    instance = ModuleInstance(name, wasm, None, params, Limits())
    payload = codec.encode_input(codec.encode_records(records), base, 1_700_000_000_000)
    if accumulator is not None:
        payload = codec.encode_aggregate_input(payload, accumulator)
    status = instance._invoke(instance._fn, payload)
    return status, instance._output


def _records(values, keys=None) -> list[codec.SmRecord]:
    # deltas that are not all zero or equal, keys on some records: every field must round-trip
    return [codec.SmRecord(3 * i + 1, 7 * i, (keys or {}).get(i), v) for i, v in enumerate(values)]


KEYS = {0: b"k0", 2: b"key-two", 5: b""}
CASES = {
    FILTER_ON_A: [
        [b"record-z", b"record-a", b"bob", b"cat", b"", b"\xc3\xa1 a", b"A"],
        [b"apple", b"kiwi", b"\xff\xfe", b"cat"],                # not UTF-8: the module's error
        [b"x\xe2\x82", b"a"], [b"ab\xc3"], [b"a\xe0\x80\x80"], [b"a\xed\xa0\x80"], [b"a\xf4\x90\x80\x80"],
        [b"a\xf0\x9f\x98"], [b"a\xf0\x9f\x98\x80a", b"a\xe2\x82\xac\xe2\x28\xa1"], [],
    ],
    MAP: [[b"foo", b"Bar", b"", "\u00e9 \u00df z".encode(), b"abc\xff", b"x" * 300]],
    FILTER_MAP: [
        [str(i).encode() for i in range(1, 7)],
        [b"-4", b"+6", b"-3", b"-0", b"00012", b"-2147483648", b"2147483647", b"2147483646"],
        [b"2", b"x"], [b""], [b"-"], [b"+"], [b" 4"], [b"2147483648"], [b"-2147483649"],
        [b"99999999999x"], [b"9x9999999999"], [b"\xff"],
    ],
    ARRAY_MAP: [
        [b'["Apple", "Banana", "Cranberry"]', b"[]", b" [ ] ", b'[1, "a", 2.5]'],
        [b'[true,null,-1,1.0,0.25,"a\\"b\\\\c\\n",{"a":1},[1,2],["x","y"]]', b'[ "a,b" ,"c]d" ]'],
        [b"[1]", b""],                                           # empty: serde_json's EOF error
    ],
    AGGREGATE: [[b"a", b"b", b"c"], [b"", b"x" * 200, b"y"], [], [b"a", b"b\xff", b"c"], [b"\xe2\x82"]],
}


@pytest.mark.parametrize("name", list(FLUVIO_NAMES))
def test_our_examples_give_fluvios_bytes(name, fluvio_modules):
    checked = 0
    for values in CASES.get(name, []):
        for base in (0, 1000):
            records = _records(values, KEYS)
            for accumulator in ([b"", b"1", b"acc-", b"ac\xe2"] if name == AGGREGATE else [None]):
                ours = _call(name, example_wasm(name), records, {}, accumulator, base)
                theirs = _call(name, fluvio_modules[name], records, {}, accumulator, base)
                assert ours == theirs, (values, base, accumulator)
                checked += 1
    if name == FILTER_PARAM:
        values = [b"foo", b"bar", b"fooquux", b"baz", b"\xff", b"wiki"]
        for params in ({}, {"key": "o"}, {"key": "wi"}, {"key": ""}, {"key": "z", "other": "x"}, {"a": "b"}):
            for cut in (4, 5):                       # before and at the bad byte
                records = _records(values[:cut], KEYS)
                ours = _call(name, example_wasm(name), records, params, None, 10)
                assert ours == _call(name, fluvio_modules[name], records, params, None, 10), (params, cut)
                checked += 1
    assert checked


@pytest.mark.parametrize("name", list(FLUVIO_NAMES))
def test_our_examples_import_and_export_what_fluvios_do(name, fluvio_modules):
    from rillet._smartmodule_engine import compile_module

    def interface(wasm):
        module = compile_module(wasm, name)
        return sorted(e.name for e in module.exports), sorted((i.module, i.name) for i in module.imports)
    assert interface(example_wasm(name)) == interface(fluvio_modules[name])


def test_examples_error_path_is_fluvios():
    """Without the snapshot too: an error record carries the hint, offset, kind, key and value."""
    records = [codec.SmRecord(0, 0, None, b"2"), codec.SmRecord(4, 9, b"k", b"x")]
    status, out = _call(FILTER_MAP, example_wasm(FILTER_MAP), records, {}, None, 100)
    assert status == 1                         # Fluvio's modules return the count of records out
    kept, error = codec.decode_output(out)
    assert kept == [codec.SmRecord(0, 0, None, b"1")]
    assert error == codec.RuntimeErrorInfo("invalid digit found in string", 104, "FilterMap", b"k", b"x")
    _, out = _call(ARRAY_MAP, example_wasm(ARRAY_MAP), [codec.SmRecord(0, 0, None, b'["a", 1')], {}, None, 0)
    assert codec.decode_output(out) == ([], codec.RuntimeErrorInfo("not a JSON array", 0, "ArrayMap", None, b'["a", 1'))


def _bad_input_statuses(name: str, wasm: bytes) -> list[int]:
    instance = ModuleInstance(name, wasm, None, {}, Limits())
    bad_record = codec.encode_input(b"\x00\x00\x00\x01\x7e", 0, 0)         # a record of 63 bytes, none there
    if name == AGGREGATE:
        bad_record += b"\x00\x00\x00\x00"
    # a good record (whose value is an error for most examples), then one cut short: nothing is processed
    first = codec.encode_record(codec.SmRecord(0, 0, None, b"\xff"))
    second_cut = codec.encode_input(b"\x00\x00\x00\x02" + first + b"\x7e\x00", 0, 0)
    no_timestamp = codec.encode_input(codec.encode_records([codec.SmRecord(0, 0, None, b"a")]), 0, 0)[:-8]
    if name == AGGREGATE:
        second_cut += b"\x00\x00\x00\x00"
    return [instance._invoke(instance._fn, payload) for payload in (b"\x00" * 7, bad_record, second_cut, no_timestamp)]


# -11 when the input does not decode (no base offset); a record that does not decode is -11 too,
# but in aggregate (-22): Fluvio's generated code reports them so
BAD_INPUT_STATUSES = {FILTER_ON_A: [-11] * 4, MAP: [-11] * 4, FILTER_MAP: [-11] * 4, ARRAY_MAP: [-11] * 4,
                      AGGREGATE: [-11, -22, -22, -11]}


@pytest.mark.parametrize("name", list(BAD_INPUT_STATUSES))
def test_input_that_does_not_decode_gets_fluvios_status(name):
    assert _bad_input_statuses(name, example_wasm(name)) == BAD_INPUT_STATUSES[name]


@pytest.mark.parametrize("name", list(BAD_INPUT_STATUSES))
def test_fluvios_modules_give_the_same_status_on_bad_input(name, fluvio_modules):
    assert _bad_input_statuses(name, fluvio_modules[name]) == BAD_INPUT_STATUSES[name]


@pytest.mark.parametrize("name", list(FLUVIO_NAMES))
def test_lengths_are_cut_to_32_bits_as_in_fluvios_modules(name, fluvio_modules):
    # a key length of 4 GiB + 1 is read as 1 (usize is 32 bits on wasm32): the key is "k"
    body = b"\x00\x00\x00\x01" + codec.varint((1 << 32) + 1) + b"k\x06[2]\x00"
    payload = codec.encode_input(b"\x00\x00\x00\x01" + codec.varint(len(body)) + body, 0, 0)
    if name == AGGREGATE:
        payload += b"\x00\x00\x00\x00"
    outputs = []
    for wasm in (example_wasm(name), fluvio_modules[name]):
        instance = ModuleInstance(name, wasm, None, {}, Limits())
        outputs.append((instance._invoke(instance._fn, payload), instance._output))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] >= 0


def _random_value(rng, name: str) -> bytes:
    if name == FILTER_MAP:
        return rng.choice([str(rng.randint(-2**33, 2**33)), str(rng.randint(-99, 99)), rng.choice(["", "-", "1x", "+8"])]).encode()
    if name == ARRAY_MAP:
        items = [rng.choice(['"%s"' % "".join(rng.choice("ab ,]c") for _ in range(rng.randint(0, 5))),
                             str(rng.randint(-999, 999)), "true", "null", "0.5"]) for _ in range(rng.randint(0, 4))]
        return ("[" + rng.choice([",", ", ", " ,\n"]).join(items) + "]").encode()
    return bytes(rng.choice(b"abcAZ09 \x80\xc3\xa9\xe2\xf0\x9f\xff") for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("name", list(FLUVIO_NAMES))
def test_random_batches_give_fluvios_bytes(name, fluvio_modules):
    import random
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for _ in range(40):
        records = [codec.SmRecord(rng.randint(0, 5000), rng.randint(-5000, 5000),
                                  rng.choice([None, b"", b"key"]), _random_value(rng, name))
                   for _ in range(rng.randint(1, 8))]
        params = {"key": rng.choice(["a", "", "b0", "\u00e9"])} if name == FILTER_PARAM and rng.random() < 0.7 else {}
        accumulator = rng.choice([b"", b"acc"]) if name == AGGREGATE else None
        base = rng.randint(0, 1 << 40)
        ours = _call(name, example_wasm(name), records, params, accumulator, base)
        assert ours == _call(name, fluvio_modules[name], records, params, accumulator, base), (seed, records, params)
