"""The SmartModule engine (client/_smartmodule_engine.py) on wasmtime, without a cluster: the six
example modules (tests/wat, which behave as Fluvio's example modules) give Fluvio's results, and every call is bounded (fuel, memory), a trap or a
module's own error naming the module and the exact source offset."""

from __future__ import annotations

import sys
import time

import pytest

from rillet import InvalidSmartModule, SmartModuleError
from rillet._smartmodule_codec import SmRecord
from rillet._smartmodule_engine import INSTALL_HINT, Limits, ModuleSpec, SmartModuleChain
from tests.smartmodule_wat import (
    AGGREGATE, ARRAY_MAP, FILTER_MAP, FILTER_ON_A, FILTER_PARAM, MAP, WASI_IMPORT, example_wasm, wat_module,
)


def spec(name, params=None, accumulator=b"", kind=None, wasm=None):
    return ModuleSpec(f"SmartModule {name!r}", wasm or example_wasm(name), kind, params or {}, accumulator)


def run(specs, values, base=100, limits=None):
    chain = SmartModuleChain(specs if isinstance(specs, list) else [specs], limits)
    records = [SmRecord(i, 0, None, v if isinstance(v, bytes) else v.encode()) for i, v in enumerate(values)]
    return [(base + r.offset_delta, r.value.decode()) for r in chain.process(records, base, 0)], chain


def test_the_six_example_modules_give_fluvios_results():
    assert run(spec(FILTER_ON_A), ["record-z", "record-a", "bob", "cat"])[0] == [(101, "record-a"), (103, "cat")]
    assert run(spec(FILTER_PARAM, {"key": "o"}), ["foo", "bar", "fooquux", "baz"])[0] == [(100, "foo"), (102, "fooquux")]
    assert run(spec(FILTER_PARAM), ["foo", "bar", "fooquux", "baz"])[0] == [(101, "bar"), (103, "baz")]
    assert run(spec(MAP), ["foo", "bar"])[0] == [(100, "FOO"), (101, "BAR")]
    assert run(spec(FILTER_MAP), [str(i) for i in range(1, 7)])[0] == [(101, "1"), (103, "2"), (105, "3")]
    assert run(spec(ARRAY_MAP), ['["Apple", "Banana", "Cranberry"]'])[0] == [
        (100, '"Apple"'), (100, '"Banana"'), (100, '"Cranberry"')]
    out, chain = run(spec(AGGREGATE, accumulator=b"1"), ["a", "b", "c"])
    assert out == [(100, "1a"), (101, "1ab"), (102, "1abc")]
    assert chain.accumulators == [b"1abc"]                   # carried to the next call
    assert run(spec(AGGREGATE), ["a", "b"])[0] == [(100, "a"), (101, "ab")]


def test_modules_chain_in_order():
    assert run([spec(FILTER_ON_A), spec(MAP)], ["apple", "kiwi", "banana"])[0] == [(100, "APPLE"), (102, "BANANA")]


def test_a_modules_own_error_names_it_and_the_offset_and_keeps_what_came_before():
    with pytest.raises(SmartModuleError) as info:
        run(spec(FILTER_ON_A), ["apple", "kiwi", "banana", b"\xff\xfe", "cat"], base=40)
    error = info.value
    assert error.offset == 42 + 1
    assert str(error).startswith("SmartModule 'filter_on_a' failed at offset 43: ")
    assert "utf-8" in str(error).lower()
    assert [(40 + r.offset_delta, r.value) for r in error.delivered] == [(40, b"apple"), (42, b"banana")]


def test_a_trap_in_a_chunk_is_replayed_to_name_the_exact_record():
    values = ["small"] * 10 + ["x" * 400] + ["small"] * 5
    with pytest.raises(SmartModuleError, match=r"^SmartModule 'trap' failed at offset 110: it trapped: .*unreachable"):
        run(spec("trap", wasm=wat_module("traps_on_big_input")), values)


def test_a_module_that_never_returns_runs_out_of_fuel():
    started = time.monotonic()
    with pytest.raises(SmartModuleError, match=r"failed at offset 100: it used up its fuel \(10,000,000 units"):
        run(spec("loop", wasm=wat_module("never_returns")), ["a"], limits=Limits(fuel=10_000_000))
    assert time.monotonic() - started < 5


def test_a_module_that_allocates_without_end_hits_the_memory_limit():
    with pytest.raises(SmartModuleError, match=r"failed at offset 100: it ran out of memory \(the limit is 4,194,304 bytes"):
        run(spec("hog", wasm=wat_module("allocates_forever")), ["a"], limits=Limits(memory_bytes=4 << 20))


def test_params_go_to_init():
    # filter_param's init takes "key"; without it the module uses its default ("a")
    assert run(spec(FILTER_PARAM, {"key": "z"}), ["zoo", "bar"])[0] == [(100, "zoo")]


def test_a_module_without_a_smartmodule_export_is_refused():
    with pytest.raises(InvalidSmartModule, match="exports none of filter, map, filter_map, array_map, aggregate"):
        SmartModuleChain([spec("odd", wasm=wat_module("drop_all", export="something_else"))])
    with pytest.raises(InvalidSmartModule, match="not a valid WebAssembly module"):
        SmartModuleChain([spec("junk", wasm=b"\x00asm\x01\x00\x00\x00\x07\x01")])


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RILLET_SMARTMODULE_FUEL", "1234")
    monkeypatch.setenv("RILLET_SMARTMODULE_MEMORY", "65536")
    assert Limits.from_env() == Limits(1234, 65536)
    monkeypatch.setenv("RILLET_SMARTMODULE_FUEL", "lots")
    with pytest.raises(InvalidSmartModule, match=r"\$RILLET_SMARTMODULE_FUEL must be a positive integer, got 'lots'"):
        Limits.from_env()


def test_without_wasmtime_the_error_says_how_to_install_it(monkeypatch):
    wasm = example_wasm(MAP)                       # compiled while wasmtime is there
    monkeypatch.setitem(sys.modules, "wasmtime", None)
    with pytest.raises(InvalidSmartModule) as info:
        SmartModuleChain([spec(MAP, wasm=wasm)])
    assert str(info.value) == INSTALL_HINT == (
        "SmartModules need wasmtime, a dependency of rillet missing from this environment: pip install 'wasmtime>=20'")


def test_wasmtime_is_a_core_dependency():
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert "wasmtime>=20" in project["dependencies"]


def test_modules_built_for_wasi_get_wasi():
    assert run(spec("wasi", wasm=wat_module("drop_all", imports=WASI_IMPORT)), ["a", "b"])[0] == []
