"""The I/O side of the live view: one `Snapshot` (tools/view.py) from the SC's admin socket.

Three requests per snapshot on one connection of its own (partitions, SPUs, stored consumer
offsets: what `partition list`, `spu list` and `consumer list` ask); the SC answers them from
memory, so sampling four times a second costs it little. Each answer is awaited at most
ANSWER_TIMEOUT_S, not the admin API's minute: a view must say at once that the SC does not
answer (paused, being restarted) rather than freeze. Then the snapshot carries the error
instead of empty lists, the connection is dropped, and the next snapshot connects again
(waiting up to RECONNECT_WAIT_S for an SC being restarted).
"""

from __future__ import annotations

import time

from rillet.ipc import messages as m
from rillet.ipc.admin_link import admin_connection
from rillet.ipc.errors import RilletError
from rillet.ipc.names import ClusterPaths

from .view import Snapshot

ANSWER_TIMEOUT_S = 2.0      # the SC answers these in well under a millisecond when it runs
RECONNECT_WAIT_S = 1.0      # short, so a view of a stopped cluster keeps redrawing its error


class Sampler:
    """Takes snapshots of one cluster. Opening fails at once (ClusterNotRunning) when it is not running."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._conn = admin_connection(paths, wait_s=RECONNECT_WAIT_S)

    def _ask(self, make):
        if self._conn is None or self._conn.closed:
            self._conn = admin_connection(self.paths, wait_s=RECONNECT_WAIT_S)
        return self._conn.call(make(self._conn.next_cid()), timeout_s=ANSWER_TIMEOUT_S)

    def snapshot(self) -> Snapshot:
        t, wall_ms = time.monotonic(), int(time.time() * 1000)
        try:
            parts = self._ask(lambda cid: m.ListPartitions(cid, [])).partitions
            spus = self._ask(lambda cid: m.ListSpus(cid)).spus
            offsets = self._ask(lambda cid: m.ListConsumerOffsets(cid)).offsets
        except RilletError as exc:
            self._drop()
            return Snapshot(t, wall_ms, error=f"{type(exc).__name__}: {exc}")
        return Snapshot(t, wall_ms, tuple(parts), tuple(spus), tuple(offsets))

    def _drop(self) -> None:
        """Forget the connection: an answer that comes late must not be taken for the next one's."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
