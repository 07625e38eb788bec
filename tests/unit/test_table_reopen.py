"""A client's view of the metadata table across SC restarts: real /dev/shm objects
(always unlinked afterwards) standing for the tables of a stopped and a new SC."""

from __future__ import annotations

import os

import pytest

from rillet import _metadata
from rillet._metadata import MetadataView
from rillet.ipc.errors import ClusterUnavailable, PartitionOffline
from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, SpuRow, SpuStatus, TableLayout
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import SharedTable, TableReader, unlink_if_exists

LAYOUT = TableLayout(max_spus=4, max_partitions=8)


@pytest.fixture
def paths(tmp_path):
    paths = ClusterPaths.for_cluster(f"reopen-{os.getpid()}", tmp_path)
    try:
        yield paths
    finally:
        unlink_if_exists(paths.shm_name)


def publish(table: SharedTable, leader: int, writes: int = 1) -> None:
    """``writes`` snapshots (so the generation is ``writes``), the last led by ``leader``."""
    for _ in range(writes):
        table.write([SpuRow(leader, 1234, SpuStatus.ONLINE)],
                    [PartitionRow("t", 0, leader, 1, PartitionStatus.ONLINE, (leader,), (leader,))])


def new_sc(paths: ClusterPaths) -> SharedTable:
    return SharedTable.create(paths.shm_name, LAYOUT, os.getpid())


def stop(table: SharedTable) -> None:
    table.close()
    table.unlink()


def test_is_current_follows_the_name_not_the_mapping(paths):
    first = new_sc(paths)
    publish(first, 5001)
    reader = TableReader.open(paths.shm_name)
    try:
        assert reader.is_current()
        stop(first)
        assert not reader.is_current()                  # unlinked: still mapped, frozen
        assert reader.snapshot().partition("t", 0).leader == 5001
        second = new_sc(paths)
        assert not reader.is_current()                  # a new object under the same name
        stop(second)
    finally:
        reader.close()


def test_view_maps_the_new_table_after_a_restart(paths, monkeypatch):
    monkeypatch.setattr(_metadata, "LIVENESS_CHECK_S", 0.0)
    first = new_sc(paths)
    publish(first, 5001, writes=2)
    view = MetadataView(paths)
    try:
        assert view.leader("t", 0).leader == 5001
        stop(first)
        assert view.leader("t", 0).leader == 5001       # the hot path never checks: last snapshot
        with pytest.raises(ClusterUnavailable, match="not running"):
            view.leader("t", 0, refresh=True)
        second = new_sc(paths)
        with pytest.raises(ClusterUnavailable, match="not published yet"):
            view.leader("t", 0, refresh=True)           # created, no rows yet
        publish(second, 5002, writes=2)                 # the same generation as the old table's
        assert view.leader("t", 0, refresh=True).leader == 5002
        publish(second, 5003)
        assert view.leader("t", 0).leader == 5003       # generation changes are seen as before
        stop(second)
    finally:
        view.close()


def test_view_checks_at_most_every_liveness_period(paths, monkeypatch):
    monkeypatch.setattr(_metadata, "LIVENESS_CHECK_S", 3600.0)
    first = new_sc(paths)
    publish(first, 5001)
    view = MetadataView(paths)
    try:
        stop(first)
        # within the period a refresh re-reads the mapped table and does not stat the name
        assert view.leader("t", 0, refresh=True).leader == 5001
        monkeypatch.setattr(_metadata, "LIVENESS_CHECK_S", 0.0)
        with pytest.raises(ClusterUnavailable):
            view.partition("t", 0, refresh=True)
        # still away: every refresh says so (a retriable error the caller backs off on)
        error = pytest.raises(ClusterUnavailable, view.leader, "t", 0, refresh=True).value
        assert error.retriable and not isinstance(error, PartitionOffline)
    finally:
        view.close()


def test_a_topic_created_after_a_restart_is_found_without_an_error_first(paths, monkeypatch):
    monkeypatch.setattr(_metadata, "LIVENESS_CHECK_S", 0.0)
    first = new_sc(paths)
    publish(first, 5001)
    view = MetadataView(paths)
    try:
        stop(first)
        second = new_sc(paths)
        second.write([SpuRow(5001, 1234, SpuStatus.ONLINE)],
                     [PartitionRow("u", 0, 5001, 1, PartitionStatus.ONLINE, (5001,), (5001,))])
        assert view.partition_count("u") == 1          # not in the old table: the lookup refreshes
        assert view.leader("u", 0).leader == 5001
        stop(second)
    finally:
        view.close()


def test_the_view_sees_every_write_though_its_hot_path_reads_only_the_seqlock_word(paths):
    table = new_sc(paths)
    try:
        publish(table, 5001)
        view = MetadataView(paths)
        try:
            for _ in range(3):                   # the first call checks the generation, the next ones do not
                assert view.leader("t", 0).leader == 5001
            publish(table, 5002)
            assert view.leader("t", 0).leader == 5002
            assert view.snapshot() is view.snapshot()      # unchanged table: the same snapshot, not a new read
        finally:
            view.close()
    finally:
        stop(table)
