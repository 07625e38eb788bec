"""Fluvio's client-side API shapes that need no cluster: SmartModule argument checks
(types and messages exactly as Fluvio's tests expect them), SmartModuleKind, FluvioConfig,
and the pure watch diff."""

from __future__ import annotations

import pytest

from rillet import ConsumerConfig, FluvioConfig, InvalidName, RilletError, SmartModuleKind
from rillet._admin import MetadataTopicSpec, topic_changes
from rillet.ipc import messages as m


def test_smartmodule_needs_a_name_or_a_path():
    with pytest.raises(Exception) as info:
        ConsumerConfig().smartmodule()
    assert info.value.args == ("Require either a path or a name for a smartmodule.",)


def test_smartmodule_refuses_both_a_name_and_a_path():
    with pytest.raises(Exception) as info:
        ConsumerConfig().smartmodule(name="foo", path="bar")
    assert info.value.args == ("Only specify one of path or name not both.",)


def test_smartmodule_kind_must_be_the_enum():
    # Fluvio reads kind.value before any other check, so a str fails with AttributeError
    with pytest.raises(AttributeError, match="'str' object has no attribute 'value'"):
        ConsumerConfig().smartmodule(kind="foobar")


def test_smartmodule_path_is_read_at_once(tmp_path):
    with pytest.raises(RilletError, match=r"No such file or directory \(os error 2\)"):
        ConsumerConfig().smartmodule(path=str(tmp_path / "does_not_exist.wasm"), kind=SmartModuleKind.Filter)
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(b"\0asm")
    config = ConsumerConfig()
    config.smartmodule(path=str(wasm), kind=SmartModuleKind.Map, params={"k": "v"})
    config.smartmodule(name="by-name", aggregate=b"0")
    assert [(s.path, s.wasm, s.kind, s.params) for s in config._smartmodules][0] == (str(wasm), b"\0asm", "map", {"k": "v"})
    assert config._smartmodules[1].name == "by-name" and config._smartmodules[1].aggregate == b"0"


def test_smartmodule_kind_members():
    assert [k.name for k in SmartModuleKind] == ["Filter", "Map", "ArrayMap", "FilterMap", "Aggregate"]


def test_fluvio_config_load_names_the_default_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("RILLET_CLUSTER", "elsewhere")
    monkeypatch.setenv("RILLET_HOME", str(tmp_path))
    config = FluvioConfig.load()
    assert (config.cluster, config.home) == ("elsewhere", tmp_path.resolve())
    monkeypatch.delenv("RILLET_CLUSTER")
    assert FluvioConfig.load().cluster == "local"
    assert FluvioConfig("other").paths().cluster == "other"
    with pytest.raises(InvalidName):
        FluvioConfig("Not_Valid")


def _topic(name: str, status: str = "provisioned", partitions: int = 1) -> MetadataTopicSpec:
    return MetadataTopicSpec(m.TopicInfo(name, m.TopicConfig(partitions=partitions), status))


def test_topic_changes_are_updates_then_deletes():
    a, b, b2, c = _topic("a"), _topic("b", "pending"), _topic("b"), _topic("c")
    assert topic_changes(None, {"a": a}) == []                         # the first item: all(), no changes
    assert topic_changes({"a": a}, {"a": _topic("a")}) == []           # equal listings: nothing
    changes = topic_changes({"a": a, "b": b}, {"b": b2, "c": c})
    assert [(x.metadata_topic_spec().name(), x.is_update(), x.is_delete()) for x in changes] == [
        ("b", True, False), ("c", True, False), ("a", False, True)]
