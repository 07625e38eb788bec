"""The SC's read-only view of its SPUs' positions tables: offsets as they are now.

Status reports reach the SC at most every 50 ms while offsets move, so a HW taken from
them can be a report behind what a consumer has just committed (and its lag would read
0). Every leader publishes log start, HW and LEO in its positions table
(ipc/positions.py) at every append; the SC maps those tables read-only, as direct
readers do, and reads them when it answers `consumer list` or a metrics scrape. A table
that cannot be read (an SPU starting, one that just died) gives nothing, and callers
fall back to the last report.
"""

from __future__ import annotations

import logging

from rillet.ipc.errors import RilletError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.positions import Positions, Role
from rillet.ipc.positions_shm import PositionsReader


class LivePositions:
    def __init__(self, paths: ClusterPaths, log: logging.Logger) -> None:
        self.paths = paths
        self.log = log
        self._readers: dict[int, PositionsReader] = {}

    def leaders(self, spus: dict[int, int]) -> dict[tuple[str, int], Positions]:
        """(topic, partition) -> the row its leader publishes, over ``spus`` (SPU id -> pid of
        the live process). A row of an SPU that is not that pid (a stale object) is left out."""
        out: dict[tuple[str, int], Positions] = {}
        for spu_id, pid in spus.items():
            for row in self._rows(spu_id, pid):
                if row.role == Role.LEADER:
                    out[(row.topic, row.partition)] = row
        return out

    def _rows(self, spu_id: int, pid: int) -> list[Positions]:
        reader = self._readers.get(spu_id)
        if reader is not None and reader.spu_pid != pid:
            del self._readers[spu_id]            # the SPU was restarted: it made a new object
            reader.close()
            reader = None
        try:
            if reader is None:
                reader = self._readers[spu_id] = PositionsReader.open(self.paths.positions_shm_name(spu_id))
            if reader.spu_pid != pid:
                return []
            return reader.rows()
        except RilletError as exc:
            self.log.debug("positions table of SPU %d not readable: %s", spu_id, exc)
            stale = self._readers.pop(spu_id, None)
            if stale is not None:
                stale.close()
            return []

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
