"""Leader lookup from the shared-memory metadata table (no request to the SC).

The snapshot is re-read only when the table's generation changes (one integer
read) or when a caller asks after a leader-change error.
"""

from __future__ import annotations

from rillet.ipc.errors import PartitionNotFound, PartitionOffline, TopicNotFound
from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, TableSnapshot
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import TableReader


class MetadataView:
    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._reader = TableReader.open(paths.shm_name)
        self._snapshot = self._reader.snapshot()

    def snapshot(self, refresh: bool = False) -> TableSnapshot:
        if refresh or self._reader.generation() != self._snapshot.generation:
            self._snapshot = self._reader.snapshot()
        return self._snapshot

    def partitions(self, topic: str, refresh: bool = False) -> list[PartitionRow]:
        rows = self.snapshot(refresh).partitions_of(topic)
        if not rows:
            raise TopicNotFound(f"Topic not found: {topic}")
        return rows

    def partition_count(self, topic: str) -> int:
        return len(self.partitions(topic))

    def partition(self, topic: str, partition: int, refresh: bool = False) -> PartitionRow:
        row = self.snapshot(refresh).partition(topic, partition)
        if row is None:
            count = len(self.partitions(topic))
            raise PartitionNotFound(f"partition {partition} of topic {topic!r} not found (it has {count})")
        return row

    def leader(self, topic: str, partition: int, refresh: bool = False) -> PartitionRow:
        """The partition's row, if it has an Online leader; else PartitionOffline."""
        row = self.partition(topic, partition, refresh)
        if row.status != PartitionStatus.ONLINE or row.leader < 0:
            raise PartitionOffline(f"partition {topic}/{partition} is {row.status.label}: no online leader")
        return row

    def spu_socket(self, spu_id: int) -> str:
        return str(self.paths.spu_socket(spu_id))

    def close(self) -> None:
        self._reader.close()
