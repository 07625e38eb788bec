"""The I/O side of the live view: one `Snapshot` (tools/view.py) from the admin API.

Three calls to the SC per snapshot (partitions, SPUs, stored consumer offsets), the same
ones `partition list`, `spu list` and `consumer list` make; the SC answers them from memory,
so sampling four times a second costs it little. When the SC cannot be asked (it is being
restarted, or the cluster was stopped) the snapshot carries the error instead of empty lists,
and the next one tries again: `FluvioAdmin` reconnects by itself.
"""

from __future__ import annotations

import time

from rillet.ipc.errors import RilletError
from rillet.ipc.names import ClusterPaths

from .view import Snapshot


class Sampler:
    """Takes snapshots of one cluster. Opening fails at once (ClusterNotRunning) when it is not running."""

    def __init__(self, paths: ClusterPaths) -> None:
        from rillet import FluvioAdmin
        from rillet._offsets import OffsetClient
        self.paths = paths
        self._admin = FluvioAdmin(paths)
        self._offsets = OffsetClient(paths)

    def snapshot(self) -> Snapshot:
        t, wall_ms = time.monotonic(), int(time.time() * 1000)
        try:
            parts = tuple(p.info for p in self._admin.list_partitions())
            spus = tuple(self._admin.list_spus())
            offsets = tuple(self._offsets.list())
        except RilletError as exc:
            return Snapshot(t, wall_ms, error=str(exc))
        return Snapshot(t, wall_ms, parts, spus, offsets)

    def close(self) -> None:
        self._admin.close()
        self._offsets.close()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
