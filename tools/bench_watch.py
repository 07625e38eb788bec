"""`rillet-bench`'s view of a running workload: progress on a terminal, the series for --plot.

A thread in the parent reads the log end offset (LEO) of the workload's partitions from the
SPU's positions table every SAMPLE_S: shared memory mapped read-only, so it sends nothing to
the cluster and takes no CPU from the processes being measured (the parent is not one of
them). The records appended so far drive a progress line on stderr when it is a terminal
(tools/progress.py) and, with --plot, a series of (seconds, records) for the throughput
chart (tools/bench_plot.py). With neither, no thread is started at all.
"""

from __future__ import annotations

import threading
import time

from .progress import Progress

SAMPLE_S = 0.05           # 20 points a second: W1's default run lasts about one


class LogWatch:
    def __init__(self, cluster, run, *, progress: bool, series: bool) -> None:
        self._cluster, self._run = cluster, run
        self._progress = Progress(f"rillet-bench: {run.workload}", total=run.total) if progress else None
        if self._progress is not None and not self._progress.enabled:
            self._progress = None
        self.series: list[tuple[float, int]] | None = [] if series else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._readers: list = []

    @property
    def active(self) -> bool:
        return self._progress is not None or self.series is not None

    def start(self) -> None:
        """Begin sampling (call at the producers' release); a no-op when nothing wants it."""
        if not self.active:
            return
        self._t0 = time.monotonic()
        self._sample()                      # the starting point (records before the release: none)
        self._thread = threading.Thread(target=self._loop, name="rillet-bench-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        appended = self._sample()
        if self._progress is not None and appended is not None:
            self._progress.finish(appended)
        for reader, _rows in self._readers:
            reader.close()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            appended = self._sample()
            if appended is not None and self._progress is not None:
                self._progress.update(appended)

    def _sample(self) -> int | None:
        """Records appended to the workload's partitions so far (None until they can be read)."""
        try:
            if not self._readers:
                self._open()
            total = sum(reader.row(index).leo for reader, rows in self._readers for index in rows)
        except Exception:  # noqa: BLE001 - a table being replaced or not there yet: try at the next tick
            return None
        if self.series is not None:
            self.series.append((round(time.monotonic() - self._t0, 3), total))
        return total

    def _open(self) -> None:
        from rillet.ipc.positions_shm import PositionsReader
        paths = self._cluster.paths
        with self._cluster.admin() as admin:
            leaders = {p.partition: p.leader for p in admin.list_partitions([self._run.topic])}
        by_spu: dict[int, list[int]] = {}
        for partition, leader in sorted(leaders.items()):
            by_spu.setdefault(leader, []).append(partition)
        readers = []
        try:
            for spu_id, partitions in by_spu.items():
                reader = PositionsReader.open(paths.positions_shm_name(spu_id))
                readers.append((reader, []))
                for partition in partitions:
                    index = reader.find(self._run.topic, partition)
                    if index is None:
                        raise LookupError(f"no positions row for {self._run.topic}/{partition}")
                    readers[-1][1].append(index)
        except BaseException:
            for reader, _rows in readers:
                reader.close()
            raise
        self._readers = readers
