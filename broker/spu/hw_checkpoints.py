"""High-watermark checkpoints written on one worker thread, off the SPU's event loop.

A checkpoint is a small file written with two fsyncs (broker/storage/files.py write_atomic):
0.6-7 ms on the development VM's disk, more while segment pages are being written back. Each
replicated partition writes one at most once a second (Replica.save_hw), and on the event
loop that was a stall of that long in every produce, fetch and follower answer of the SPU,
once a second per partition (Redis moves its AOF fsync to a thread for the same reason).

One thread, so checkpoints are written in the order they were asked for (a later value never
overtaken by an earlier one). A replica that closes drains the queue first (``drain``), then
writes its last checkpoint itself: nothing of an old replica is written after it closed (its
directory may be deleted, or taken by a new replica of the same name). A checkpoint is a
hint (a lost one only makes a newly elected leader wait for its followers before its HW moves
on), so a write that fails is logged, as before, and nothing else.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from rillet.ipc.errors import RilletError


class HwCheckpoints:
    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._pool: ThreadPoolExecutor | None = None      # started by the first checkpoint

    def submit(self, replica, value: int) -> None:
        """Write ``value`` as ``replica``'s checkpoint soon, on the worker thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rillet-hw-checkpoint")
        self._pool.submit(self._write, replica, value)

    def _write(self, replica, value: int) -> None:
        try:
            replica.log.write_high_watermark(value)
        except RilletError as exc:       # closed meanwhile, or its files are gone: a hint lost
            self._log.warning("%s: cannot checkpoint the high watermark: %s", replica.name, exc)
        except Exception:                # never kill the worker: later checkpoints still count
            self._log.exception("%s: checkpointing the high watermark failed", replica.name)

    def drain(self) -> None:
        """Return once every checkpoint asked for so far is written (or has failed)."""
        if self._pool is not None:
            self._pool.submit(lambda: None).result()

    def close(self) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
