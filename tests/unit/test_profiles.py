"""The profile document (ipc/profiles.py): pure changes, the file format, a damaged file."""

from __future__ import annotations

import pytest

from rillet.ipc import profiles
from rillet.ipc.errors import InvalidArgument, StorageError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.profiles import Profiles


def test_changes():
    p = Profiles().with_cluster_started("a").with_cluster_started("b")
    assert (p.current, p.clusters) == ("b", {"a": "a", "b": "b"})
    assert p.switched_to("a").current_cluster() == "a"
    assert p.without("b").current is None and p.without("a").current == "b"
    assert p.without_cluster("b").clusters == {"a": "a"}
    with pytest.raises(InvalidArgument, match="profile 'c' not found"):
        p.switched_to("c")
    with pytest.raises(InvalidArgument, match="not found"):
        p.without("c")


def test_round_trip_and_default_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("RILLET_CLUSTER", raising=False)
    assert profiles.load(tmp_path) == Profiles()
    assert ClusterPaths.for_cluster(None, tmp_path).cluster == "local"
    profiles.save(tmp_path, Profiles().with_cluster_started("east"))
    assert profiles.load(tmp_path) == Profiles("east", {"east": "east"})
    assert ClusterPaths.for_cluster(None, tmp_path).cluster == "east"
    monkeypatch.setenv("RILLET_CLUSTER", "west")
    assert ClusterPaths.for_cluster(None, tmp_path).cluster == "west"
    assert ClusterPaths.for_cluster("north", tmp_path).cluster == "north"


@pytest.mark.parametrize("data", [b"{not json", b'{"version": 9}', b'{"profiles": {"Bad Name": {"cluster": "x"}}}'])
def test_damaged_file_is_a_clear_error(tmp_path, data):
    profiles.profiles_path(tmp_path).write_bytes(data)
    with pytest.raises(StorageError, match="profiles"):
        profiles.load(tmp_path)
