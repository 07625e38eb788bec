"""The SC's SmartModule store (broker/sc/smartmodules.py) on a real directory, without an SC."""

from __future__ import annotations

import pytest

from rillet.broker.sc.smartmodules import SmartModuleStore
from rillet.ipc.errors import InvalidName, InvalidSmartModule, SmartModuleAlreadyExists, SmartModuleNotFound
from tests.smartmodule_wat import MAP, example_wasm, wat_module


def test_create_get_list_delete(tmp_path):
    store = SmartModuleStore(tmp_path / "smartmodules")
    assert store.list([]) == []                                   # no directory yet
    wasm = example_wasm(MAP)
    assert store.create("up", wasm, dry_run=True).transform == "map"
    assert store.list([]) == []
    info = store.create("up", wasm)
    assert (info.name, info.size, info.transform) == ("up", len(wasm), "map")
    assert (tmp_path / "smartmodules" / "up.wasm").read_bytes() == wasm
    assert store.get("up") == (info, wasm)
    with pytest.raises(SmartModuleAlreadyExists):
        store.create("up", wasm)
    (tmp_path / "smartmodules" / ".other.wasm.tmp").write_bytes(b"torn")    # a crash mid-write leaves this
    assert [i.name for i in store.list([])] == ["up"]
    assert [i.name for i in store.list(["nope", "up", "../etc/passwd", "up"])] == ["up"]
    store.delete("up")
    with pytest.raises(SmartModuleNotFound, match="^SmartModule up was not found$"):
        store.get("up")
    with pytest.raises(SmartModuleNotFound, match=r"^SmartModule \.\./x was not found$"):
        store.delete("../x")                                      # never a path outside the store


def test_what_is_not_a_smartmodule_is_not_stored(tmp_path):
    store = SmartModuleStore(tmp_path)
    with pytest.raises(InvalidSmartModule, match="^smartmodule 'bad' refused: not a WebAssembly module"):
        store.create("bad", b"#!/bin/sh\n")
    with pytest.raises(InvalidSmartModule, match="exports none of filter, map, filter_map, array_map, aggregate"):
        store.create("bad", wat_module("drop_all", export="transform"))
    with pytest.raises(InvalidName):
        store.create("Not_A_Name", wat_module("drop_all"))
    assert list(tmp_path.iterdir()) == []
