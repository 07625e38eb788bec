"""ipc/env.py: the RILLET_* switches and sizes clients read, refused clearly when not understood."""

from __future__ import annotations

import pytest

from rillet import InvalidArgument
from rillet._ring_channel import ring_capacity, ring_min_bytes, ring_wanted
from rillet.ipc import env, heap


@pytest.mark.parametrize("value, expected", [("1", True), ("on", True), (" YES ", True), ("0", False),
                                             ("off", False), ("False", False), ("", True)])
def test_a_switch_takes_the_usual_spellings(value, expected):
    assert env.switch("X", True, {"X": value}) is expected
    assert env.switch("X", False, {}) is False


@pytest.mark.parametrize("value", ["2", "maybe", "of"])
def test_a_switch_refuses_anything_else_naming_the_variable(value):
    with pytest.raises(InvalidArgument, match=f"X={value!r}: use 0 or 1"):
        env.switch("X", True, {"X": value})


def test_a_byte_count_takes_zero_or_more_and_refuses_the_rest():
    assert env.byte_count("N", 7, {}) == 7 and env.byte_count("N", 7, {"N": " 0 "}) == 0
    for bad in ("-5", "4k", "x"):
        with pytest.raises(InvalidArgument, match="use a number of bytes, 0 or more"):
            env.byte_count("N", 7, {"N": bad})


def test_the_ring_and_heap_switches_read_through_it(monkeypatch):
    assert not ring_wanted({"RILLET_PRODUCE_RING": "off"})      # "off" used to leave rings on
    with pytest.raises(InvalidArgument, match="RILLET_PRODUCE_RING_MIN_BYTES='abc'"):
        ring_min_bytes(4096, {"RILLET_PRODUCE_RING_MIN_BYTES": "abc"})
    with pytest.raises(InvalidArgument, match="RILLET_PRODUCE_RING_BYTES='-1'"):
        ring_capacity(1 << 20, {"RILLET_PRODUCE_RING_BYTES": "-1"})
    monkeypatch.setattr(heap, "_done", False)                   # as in a process with no producer yet
    with pytest.raises(InvalidArgument, match="RILLET_MALLOC_TUNING='sometimes'"):
        heap.keep_freed_heap({"RILLET_MALLOC_TUNING": "sometimes"})
