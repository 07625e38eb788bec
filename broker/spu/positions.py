"""The SPU's side of direct reads: it publishes each replica's offsets in its own
positions table (ipc/positions.py) and wakes the consumers sleeping on it.

One object per SPU, created at start (replacing one a SIGKILLed predecessor left),
unlinked at stop; the launcher's cleanup removes it after a SIGKILL of the whole
cluster. A row per replica: leaders publish log start, HW, LEO and the active
segment's base after every change; followers publish only their role and epoch
(no reader uses a follower's offsets, and a role flip must reach readers at once).
A publish that would write what the row already says is skipped, so the hot path
pays one tuple comparison when nothing moved.

If the table cannot be created (a full /dev/shm, a foreign object), the SPU runs
without it and says so in its log: consumers then use the socket fetch.
"""

from __future__ import annotations

import logging
import os

from rillet.ipc.errors import RilletError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.positions import Positions, Role
from rillet.ipc.positions_shm import PositionsWriter


class PositionsPublisher:
    def __init__(self, paths: ClusterPaths, spu_id: int, logger: logging.Logger) -> None:
        self._log = logger
        self._rows: dict[tuple[str, int], int] = {}
        # Per row, what it says now: (leader_epoch, role, log_start, hw, leo, active_base, active_used).
        self._last: dict[int, tuple] = {}
        self._free: list[int] = []
        self._next = 0
        self._writer: PositionsWriter | None = None
        try:
            self._writer = PositionsWriter.create(paths.positions_shm_name(spu_id), spu_id, os.getpid())
        except RilletError as exc:
            logger.warning("no positions table (%s): consumers will fetch over the socket", exc)

    def publish(self, replica) -> None:
        """Publish ``replica``'s offsets (a Replica); a no-op when nothing changed."""
        writer = self._writer
        if writer is None:
            return
        spec = replica.spec
        key = (spec.topic, spec.partition)
        index = self._rows.get(key)
        if index is None:
            index = self._allocate(key)
            if index is None:
                return
        log = replica.log
        if log.closed:
            return
        if spec.leader == replica.spu_id:
            active = log.active_segment
            now = (spec.leader_epoch, Role.LEADER, log.log_start_offset, replica.hw, active.next_offset,
                   active.base_offset, active.used)
        else:
            now = (spec.leader_epoch, Role.FOLLOWER, -1, -1, -1, -1, -1)
        last = self._last.get(index)
        if last == now:
            return
        self._last[index] = now
        try:
            if last is not None and last[:2] == now[:2]:
                # Only offsets moved (every append of a leader): rewrite just those.
                writer.publish_offsets(index, *now[2:])
            else:
                writer.publish(index, Positions(spec.topic, spec.partition, *now))
        except (RilletError, OSError) as exc:
            self._last.pop(index, None)     # unknown what the row says now: the next publish writes it whole
            self._log.error("publishing %s/%d in the positions table failed: %s", *key, exc)

    def remove(self, key: tuple[str, int]) -> None:
        """Free the row of a replica this SPU no longer holds (readers see FREE and re-look)."""
        index = self._rows.pop(key, None)
        if index is None or self._writer is None:
            return
        self._last.pop(index, None)
        self._free.append(index)
        try:
            self._writer.publish(index, Positions("", 0, -1, Role.FREE, -1, -1, -1, -1, -1))
        except (RilletError, OSError) as exc:
            self._log.error("freeing %s/%d in the positions table failed: %s", *key, exc)

    def _allocate(self, key: tuple[str, int]) -> int | None:
        if self._free:
            index = self._free.pop()
        elif self._next < self._writer.max_rows:
            index, self._next = self._next, self._next + 1
        else:
            self._log.warning("positions table full (%d rows): %s/%d is served over the socket only",
                              self._writer.max_rows, *key)
            return None
        self._rows[key] = index
        return index

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
