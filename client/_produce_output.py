"""What ``send`` gives back: ``ProduceOutput`` and, once the batch is answered,
``RecordMetadata``.

All records of a batch share one ``_BatchResult``, resolved exactly once by the
producer (from a link thread) with the batch's base offset or the error that
ended it; a record's offset is the base offset plus its index in the batch.
``wait`` blocks on a threading.Event; ``async_wait`` registers a callback that
wakes the event loop with ``call_soon_threadsafe``, so it never blocks the loop.
"""

from __future__ import annotations

import logging
import threading

from rillet.ipc.errors import RilletError, Timeout

log = logging.getLogger("rillet.producer")


class RecordMetadata:
    __slots__ = ("_offset", "_partition")

    def __init__(self, offset: int, partition: int) -> None:
        self._offset, self._partition = offset, partition

    def offset(self) -> int:
        return self._offset

    def partition_id(self) -> int:
        return self._partition

    def __repr__(self) -> str:
        return f"RecordMetadata(partition={self._partition}, offset={self._offset})"


class _BatchResult:
    """Completion of one batch: its base offset, or the error that ended it."""

    __slots__ = ("_event", "base_offset", "error", "_callbacks", "where", "records", "seq")

    def __init__(self, where: str) -> None:
        self._event = threading.Event()
        self.base_offset = -1
        self.error: RilletError | None = None
        self._callbacks: list = []
        self.where = where           # "topic/partition", for messages
        self.records = 0             # set when sealed
        self.seq = -1                # seal order within the producer

    def resolve(self, base_offset: int = -1, error: RilletError | None = None) -> None:
        self.base_offset, self.error = base_offset, error
        self._event.set()
        for cb in self._callbacks:
            try:
                cb()
            except Exception:        # e.g. an event loop closed meanwhile; never kill a link thread
                log.debug("produce completion callback failed", exc_info=True)

    def wait(self, timeout_s: float | None = None) -> None:
        if not self._event.wait(timeout_s):
            raise Timeout(f"record for {self.where} not acknowledged within timeout={timeout_s} s")
        if self.error is not None:
            raise self.error

    def wait_done(self, timeout_s: float | None = None) -> bool:
        """Wait for the answer without raising; False if ``timeout_s`` passed first."""
        return self._event.wait(timeout_s)

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def add_done_callback(self, cb) -> None:
        self._callbacks.append(cb)
        if self._event.is_set():
            cb()


class ProduceOutput:
    """What ``send`` returns. ``wait()`` gives the record's metadata once, then None;
    a failed record raises its error (typed, naming topic, partition and cause)."""

    __slots__ = ("_result", "_index", "_partition", "_taken")

    def __init__(self, result: _BatchResult, index: int, partition: int) -> None:
        self._result, self._index, self._partition = result, index, partition
        self._taken = False

    def wait(self, timeout: float | None = None) -> RecordMetadata | None:
        if self._taken:
            return None
        self._result.wait(timeout)
        self._taken = True
        return RecordMetadata(self._result.base_offset + self._index, self._partition)

    async def async_wait(self) -> RecordMetadata | None:
        import asyncio
        if self._taken:
            return None
        if not self._result.done:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._result.add_done_callback(lambda: loop.call_soon_threadsafe(_set_if_pending, fut))
            await fut
        return self.wait()

    def is_done(self) -> bool:
        return self._result.done

    def partition_id(self) -> int:
        """The partition the record went to (known at once, before the answer)."""
        return self._partition


def _set_if_pending(fut) -> None:
    if not fut.done():
        fut.set_result(None)
