"""What ``send`` gives back: ``ProduceOutput`` and, once the batch is answered,
``RecordMetadata``.

All records of a batch share one ``_BatchResult``, resolved exactly once by the
producer (from a link thread) with the batch's base offset or the error that
ended it; a record's offset is the base offset plus its index in the batch.

Costs, since the producer makes one ``ProduceOutput`` per record and one
``_BatchResult`` per batch (with ``linger(0)``, per record too):

* ``ProduceOutput`` is a msgspec Struct: ``send_all`` makes a run of them with one
  ``map`` call in C (about 60 ns each, a Python class costs 200 ns or more).
  ``gc=False``: it holds a result, two ints and a flag, so the collector never
  needs to see it; the one cycle it could close (an ``async_wait`` pending on the
  result's callback list) is cut when the result resolves, which always happens.
* ``_BatchResult`` waits on a latch, a lock taken at creation and released once
  by ``resolve`` (0.4 us to make, a threading.Event 5 us); each waiter takes it and
  hands it on at once. ``async_wait`` registers a callback that wakes the event loop
  with ``call_soon_threadsafe``, so it never blocks the loop.
"""

from __future__ import annotations

import logging
import time
from _thread import allocate_lock

import msgspec

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

    __slots__ = ("_latch", "_done", "base_offset", "error", "_callbacks", "partition", "where", "records", "seq",
                 "urge", "read_wait", "waited")

    def __init__(self, partition: int, where: str) -> None:
        self._latch = allocate_lock()
        self._latch.acquire()            # released once, by resolve
        self._done = False
        self.base_offset = -1
        self.error: RilletError | None = None
        self._callbacks: list | None = []
        self.partition = partition
        self.where = where           # "topic/partition", for messages
        self.records = 0             # set when sealed
        self.seq = -1                # seal order within the producer
        # Set by the producer once the batch is on a link: tells the link that someone waits,
        # so it reads the answer at once (links leave young answers to the producer's caller).
        self.urge = None
        # Set with it: the link's wait_answer, with which a waiter reads the answer itself.
        self.read_wait = None
        self.waited = False          # someone waits (or a callback is due): urge the link it goes to

    def resolve(self, base_offset: int = -1, error: RilletError | None = None) -> None:
        """Record the outcome and wake every waiter; the producer calls it exactly once."""
        self.base_offset, self.error = base_offset, error
        self._done = True
        self._latch.release()
        callbacks, self._callbacks = self._callbacks, None   # run once, then drop (no cycle outlives this)
        for cb in callbacks:
            try:
                cb()
            except Exception:        # e.g. an event loop closed meanwhile; never kill a link thread
                log.debug("produce completion callback failed", exc_info=True)

    def wait(self, timeout_s: float | None = None) -> None:
        if not self.wait_done(timeout_s):
            raise Timeout(f"record for {self.where} not acknowledged within timeout={timeout_s} s")
        if self.error is not None:
            raise self.error

    def wait_done(self, timeout_s: float | None = None) -> bool:
        """Wait for the answer without raising; False if ``timeout_s`` passed first."""
        if self._done:
            return True
        self.waited = True
        # Read the answer in this thread (the link's wait_answer): woken by the socket, not by
        # the link thread. A retry moves the batch to another link: read there then.
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (read_wait := self.read_wait) is not None:
            got = read_wait(lambda: self._done or self.read_wait is not read_wait,
                            None if deadline is None else deadline - time.monotonic())
            if got is None:
                break                        # it cannot: wait as before, for the time left
            if self._done or not got:
                return self._done
        if deadline is not None:
            timeout_s = deadline - time.monotonic()
        if self.urge is not None:
            self.urge()
        if not self._latch.acquire(True, -1 if timeout_s is None else max(0.0, timeout_s)):
            return False
        self._latch.release()        # hand it on to the next waiter
        return True

    @property
    def done(self) -> bool:
        return self._done

    def add_done_callback(self, cb) -> None:
        """Call ``cb()`` once resolved (at once if it already is; rarely twice, so make it idempotent)."""
        callbacks = self._callbacks
        if callbacks is not None:
            callbacks.append(cb)
            self.waited = True
            if self.urge is not None:
                self.urge()
        if self._done:
            cb()


class ProduceOutput(msgspec.Struct, gc=False, eq=False):
    """What ``send`` returns. ``wait()`` gives the record's metadata once, then None;
    a failed record raises its error (typed, naming topic, partition and cause)."""

    _result: _BatchResult
    _index: int                      # the record's index in its batch: offset = base offset + index
    _taken: bool = False

    def wait(self, timeout: float | None = None) -> RecordMetadata | None:
        if self._taken:
            return None
        self._result.wait(timeout)
        self._taken = True
        return RecordMetadata(self._result.base_offset + self._index, self._result.partition)

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
        return self._result.partition

    def __repr__(self) -> str:
        return f"ProduceOutput(partition={self._result.partition}, index={self._index}, done={self._result.done})"


def _set_if_pending(fut) -> None:
    if not fut.done():
        fut.set_result(None)
