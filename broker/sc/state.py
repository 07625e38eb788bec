"""The SC's persistent state: topics, their partition placement, leaders and epochs.

Stored as one JSON document (``<cluster>/sc/metadata.json``), rewritten atomically
(temp file, fsync, rename, fsync of the directory) on every change, so a crash
leaves the old or the new state, never a torn one.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from rillet.ipc.errors import StorageError
from rillet.ipc.messages import TopicConfig
from rillet.broker.storage.checkpoint import write_atomic

STATE_VERSION = 1


class PartitionAssignment(msgspec.Struct, kw_only=True):
    partition: int
    replicas: list[int]          # SPU ids; the first is the preferred leader
    leader: int                  # -1: no leader
    leader_epoch: int
    in_sync: list[int] = []      # as the leader last reported it; elections choose from it


class TopicState(msgspec.Struct, kw_only=True):
    name: str
    config: TopicConfig
    partitions: list[PartitionAssignment]
    created_ms: int


class ClusterState(msgspec.Struct, kw_only=True):
    version: int = STATE_VERSION
    spus: list[int] = []
    topics: dict[str, TopicState] = {}


def load_state(path: Path) -> ClusterState:
    if not path.exists():
        return ClusterState()
    try:
        state = msgspec.json.decode(path.read_bytes(), type=ClusterState)
    except (OSError, msgspec.DecodeError) as exc:
        raise StorageError(f"cannot read cluster metadata {path}: {exc}") from exc
    if state.version != STATE_VERSION:
        raise StorageError(f"cluster metadata {path} has version {state.version}, this rillet reads {STATE_VERSION}")
    return state


def save_state(path: Path, state: ClusterState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, msgspec.json.format(msgspec.json.encode(state), indent=2))
