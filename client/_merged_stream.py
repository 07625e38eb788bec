"""A merged reader of several partition streams (client/_consumer.py's PartitionStream): each
partition in order, no order across partitions, one waiter at a time.

The wait is on every partition at once: their sockets with one ``poll()``, or the leaders'
futex words when they all read directly (client/_direct.py ``wait_streams``).
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
from typing import TYPE_CHECKING, Iterable, Iterator

from ._direct import wait_streams
from ._record import Record
from ._record_buffer import RecordBuffer, chained

if TYPE_CHECKING:
    from ._consumer import PartitionStream

WAIT_SLICE_S = 1.0                   # a multi-partition wait re-checks for stuck fetches this often
ASYNC_SLICE_S = 0.25                 # async waits run in worker threads in slices this long, so
                                     # cancellation and loop shutdown never wait on an idle stream


def _wait_readable(fds: list[int], timeout_s: float) -> None:
    """Block until one of ``fds`` is readable or ``timeout_s`` passes (Ctrl-C interrupts)."""
    poller = select.poll()
    for fd in fds:
        if fd >= 0:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    poller.poll(max(0, int(timeout_s * 1000)))


class MultiPartitionStream:
    """Records of several partition streams as they arrive: each partition in order,
    no order across partitions (as Fluvio's ``select_all``). Iterate it, ask for
    ``next_batch()``, or ``async for`` over it."""

    def __init__(self, streams: Iterable[PartitionStream]) -> None:
        self._streams = list(streams)
        self._turn = 0
        self._ready = RecordBuffer()
        self._lock = threading.Lock()      # one waiter at a time (async waits run in threads)
        self._closed = False

    def __iter__(self) -> Iterator[Record]:
        return chained(self._refill)

    def __next__(self) -> Record:
        for record in self._ready.it:
            return record
        if self._refill() is None:
            raise StopIteration
        return next(self._ready.it)

    def _refill(self) -> Iterator[Record] | None:
        """The buffer's iterator once a batch is in it; None (closed) at the end."""
        if len(self._ready):
            return self._ready.it
        self._ready.clear()
        while not len(self._ready):
            batch = self._fill(None)
            if batch is None:
                self.close()
                return None
            self._ready.put(batch)
        return self._ready.it

    def next_batch(self) -> list[Record]:
        """The records of one fetch of one partition (waiting if needed); [] at the end."""
        if len(self._ready):
            return self._ready.take()
        while True:
            batch = self._fill(None)
            if batch is None:
                self.close()
                return []
            if batch:
                return batch

    def __aiter__(self) -> "MultiPartitionStream":
        return self

    async def __anext__(self) -> Record:
        for record in self._ready.it:
            return record
        self._ready.clear()
        while not len(self._ready):
            batch = await asyncio.to_thread(self._fill, ASYNC_SLICE_S)
            if batch is None:
                self.close()
                raise StopAsyncIteration
            self._ready.put(batch)
        return next(self._ready.it)

    @property
    def finished(self) -> bool:
        return not len(self._ready) and all(s.finished for s in self._streams)

    def close(self) -> None:
        self._closed = True
        for s in self._streams:
            s.close()

    def __enter__(self) -> "MultiPartitionStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "MultiPartitionStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    # --- internals ---
    def _take(self) -> list[Record]:
        """One stream's buffered records, taking streams in turn; [] when none has any."""
        n = len(self._streams)
        for i in range(n):
            stream = self._streams[(self._turn + i) % n]
            if len(stream._buffer):
                self._turn = (self._turn + i + 1) % n
                return stream._buffer.take()
        return []

    def _fill(self, max_wait_s: float | None) -> list[Record] | None:
        """A batch of records; [] if ``max_wait_s`` passed first; None when every stream ended."""
        with self._lock:
            deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
            while True:
                if self._closed:
                    return None
                batch = self._take()
                if batch:
                    return batch
                live = [s for s in self._streams if not s._at_end()]
                if not live:
                    return None
                if any([s._step(block=False) for s in live]):
                    continue
                # a stream in an outage has nothing to watch: wake when its next try is due
                timeout = min([WAIT_SLICE_S, *(s._failover.wait_s() for s in live if s._failover.active)])
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                    if timeout <= 0:
                        return []
                wait_streams(live, timeout, _wait_readable)
