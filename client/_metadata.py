"""Leader lookup from the shared-memory metadata table (no request to the SC).

The snapshot is re-read only when the table's generation changes or when a caller
asks after a leader-change error; the generation is read only when the table's
seqlock word moved since the last check (one 8-byte read on the hot path).

Restarts. The SC unlinks its table when it stops and a new SC creates a new one,
while a client keeps mapping the object it opened: unlinked, it stays readable but
frozen. So a refresh (the slow path, taken after an error) also checks, at most
every LIVENESS_CHECK_S, that the table's name still names the object mapped
(``TableReader.is_current``: one stat call), and maps the new one when it does
not. While there is none, or it is not published yet, a refresh raises the
retriable ClusterUnavailable; the hot path (no refresh) never checks and keeps
the last snapshot, whose leaders then fail to answer and send the caller here.
"""

from __future__ import annotations

import logging
import threading
import time

from rillet.ipc.errors import ClusterNotRunning, ClusterUnavailable, PartitionNotFound, PartitionOffline, TopicNotFound
from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, TableSnapshot
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import TableReader

LIVENESS_CHECK_S = 0.1      # a refresh stats the table's name at most this often (a stat costs ~2 us)

_log = logging.getLogger("rillet")


class MetadataView:
    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        reader = TableReader.open(paths.shm_name)
        # The reader, its latest snapshot and the table's seqlock word when that snapshot was
        # last checked (-1: check next time), swapped together, so a thread never pairs a new
        # table's generation with an old table's rows.
        self._current: tuple[TableReader, TableSnapshot, int] = (reader, reader.snapshot(), -1)
        self._lock = threading.Lock()          # one thread checks and reopens at a time
        self._checked_at = time.monotonic()
        self._away: str | None = None          # why the cluster is unavailable, as last checked

    def snapshot(self, refresh: bool = False) -> TableSnapshot:
        if refresh:
            self._check_live()
        reader, snapshot, checked = self._current
        # The hot path: the seqlock word (one 8-byte read, moved by every write of the SC)
        # still reads as when the snapshot was last checked, so the table is as it was.
        seq = reader.sequence()
        if seq == checked and not refresh:
            return snapshot
        if refresh or reader.generation() != snapshot.generation:
            snapshot = reader.snapshot()
        with self._lock:
            if self._current[0] is reader:     # not replaced meanwhile by a reopen
                # seq was read before the check, so it is never newer than what was checked;
                # odd (a write under way): check again next time.
                self._current = (reader, snapshot, -1 if seq & 1 else seq)
        return snapshot

    def _check_live(self) -> None:
        """Map the live table if ours was replaced; ClusterUnavailable while there is none."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= LIVENESS_CHECK_S:
                self._checked_at = now
                was_away = self._away
                self._away = None if self._current[0].is_current() else self._reopen()
                if self._away is not None and was_away is None:
                    # once per outage for every stream and producer of this handle
                    _log.warning("%s; waiting for it to come back", self._away)
                elif self._away is None and was_away is not None:
                    _log.info("cluster %r is back", self.paths.cluster)
            away = self._away
        if away is not None:
            raise ClusterUnavailable(away)

    def _reopen(self) -> str | None:
        """Map the table the name now names (lock held); None when done, else why not.

        The old reader is dropped, not closed: another thread may be reading it right
        now, and its mapping is released once the last reference goes.
        """
        try:
            reader = TableReader.open(self.paths.shm_name)
        except ClusterNotRunning as exc:
            return f"cluster {self.paths.cluster!r} is not running ({exc})"
        snapshot = reader.snapshot()
        if snapshot.generation == 0:       # created, not yet written by the new SC: no rows yet
            reader.close()
            return f"cluster {self.paths.cluster!r} is starting: its metadata table is not published yet"
        self._current = (reader, snapshot, -1)
        return None

    def partitions(self, topic: str, refresh: bool = False) -> list[PartitionRow]:
        rows = self.snapshot(refresh).partitions_of(topic)
        if not rows and not refresh:
            # Not found is the slow path: a table replaced by a restart may know the topic.
            rows = self.snapshot(True).partitions_of(topic)
        if not rows:
            raise TopicNotFound(f"Topic not found: {topic}")
        return rows

    def partition_count(self, topic: str) -> int:
        return len(self.partitions(topic))

    def partition(self, topic: str, partition: int, refresh: bool = False) -> PartitionRow:
        row = self.snapshot(refresh).partition(topic, partition)
        if row is None and not refresh:
            row = self.snapshot(True).partition(topic, partition)
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
        self._current[0].close()
