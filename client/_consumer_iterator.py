"""``Fluvio.consumer_with_config``: a consumer of one topic (one partition or all of
them) that can keep its position under a name, with Fluvio's offset strategies.

Offset bookkeeping (see _offsets.py for the model): records are handed out one at a
time (``next``) or a fetch at a time (``next_batch``); each hand-out marks its records
seen. AUTO commits what was seen before each hand-out, flushes every ``offset_flush``
period (the wait for records wakes up for it; there is no background thread), and
commits and flushes when the stream ends, is closed, or is garbage collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from rillet.ipc.errors import InvalidArgument, RilletError

from ._consumer import ASYNC_SLICE_S, MultiPartitionStream, open_streams
from ._enums import OffsetManagementStrategy
from ._metadata import MetadataView
from ._offsets import ConsumerConfigExt, OffsetClient, OffsetTracker
from ._record import Record

_log = logging.getLogger("rillet.consumer")


class ConsumerIterator:
    """Iterator of :class:`Record` with ``offset_commit()`` and ``offset_flush()``.

    Also: ``next_batch()``, ``close()``, ``with``, ``async for``, ``async with``.
    """

    def __init__(self, meta: MetadataView, offsets: OffsetClient, config: ConsumerConfigExt, *,
                 end_offset: int | None = None) -> None:
        self.config = config
        self._strategy = OffsetManagementStrategy(config.offset_strategy)
        self._offsets = offsets
        self._tracker = OffsetTracker()
        self._ready: deque[Record] = deque()
        self._closed = False
        self._ended = False
        self._flush_period_s = config.offset_flush_ms / 1000
        self._next_flush = time.monotonic() + self._flush_period_s
        topic = config.topic
        if config.partition is not None:
            meta.partition(topic, config.partition)          # TopicNotFound / PartitionNotFound
            partitions = [config.partition]
        else:
            partitions = list(range(meta.partition_count(topic)))
        stored = {}
        if self._strategy != OffsetManagementStrategy.NONE:
            stored = {(topic, p): o for p, o in offsets.fetch(config.offset_consumer, topic).items()}
        self._merged = MultiPartitionStream(open_streams(
            meta, [(topic, p) for p in partitions], config.offset_start, stored=stored,
            max_bytes=config.max_bytes, isolation=config.isolation,
            continuous=not config.disable_continuous, end_offset=end_offset))

    # --- reading ---
    def __iter__(self) -> "ConsumerIterator":
        return self

    def __next__(self) -> Record:
        if not self._ready:
            batch = self._wait_batch(None)
            if batch is None:
                self._end()
                raise StopIteration
            self._ready.extend(batch)
        record = self._ready.popleft()
        self._hand_out((record,))
        return record

    def next_batch(self) -> list[Record]:
        """The records of one fetch (waiting for one if none is buffered); [] at the end."""
        if self._ready:
            batch = list(self._ready)
            self._ready.clear()
        else:
            batch = self._wait_batch(None)
            if batch is None:
                self._end()
                return []
        self._hand_out(batch)
        return batch

    def __aiter__(self) -> "ConsumerIterator":
        return self

    async def __anext__(self) -> Record:
        while not self._ready:
            batch = await asyncio.to_thread(self._wait_batch, ASYNC_SLICE_S)
            if batch is None:
                await asyncio.to_thread(self._end)
                raise StopAsyncIteration
            self._ready.extend(batch)
        record = self._ready.popleft()
        self._hand_out((record,))
        return record

    def _wait_batch(self, max_wait_s: float | None) -> list[Record] | None:
        """A batch; [] when ``max_wait_s`` passed; None at the end. Flushes when AUTO's period is due."""
        deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
        while True:
            if self._closed:
                return None
            wait = None
            if self._strategy == OffsetManagementStrategy.AUTO:
                self._auto_flush_if_due()
                wait = max(0.0, self._next_flush - time.monotonic())
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            batch = self._merged._fill(wait)
            if batch is None or batch or (deadline is not None and time.monotonic() >= deadline):
                return batch

    def _hand_out(self, records) -> None:
        if self._strategy == OffsetManagementStrategy.AUTO:
            self._tracker.commit()          # reading the next record commits the previous one
        for record in records:
            self._tracker.saw(record.partition(), record.offset())

    # --- offsets ---
    def offset_commit(self) -> None:
        """Mark every record handed out so far as consumed (local; offset_flush stores it)."""
        self._require_strategy("offset_commit")
        self._tracker.commit()

    def offset_flush(self) -> None:
        """Send committed offsets to the cluster and wait until they are stored durably."""
        self._require_strategy("offset_flush")
        self._flush()

    def _flush(self, wait: bool = True) -> None:
        pending = self._tracker.pending()
        if pending:
            self._offsets.commit(self.config.offset_consumer, self.config.topic, pending, wait=wait)
            self._tracker.mark_flushed(pending)

    async def async_offset_flush(self) -> None:
        await asyncio.to_thread(self.offset_flush)

    def _require_strategy(self, what: str) -> None:
        if self._strategy == OffsetManagementStrategy.NONE:
            raise InvalidArgument(f"{what}: offset management is disabled for this consumer "
                                  "(set offset_consumer and offset_strategy MANUAL or AUTO)")

    def _auto_flush_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_flush:
            return
        self._next_flush = now + self._flush_period_s
        try:
            self.offset_flush()
        except RilletError as exc:      # the SC may be restarting; the next period tries again
            _log.warning("periodic offset flush of consumer %r failed: %s", self.config.offset_consumer, exc)

    # --- ending ---
    def _end(self, wait: bool = True) -> None:
        """End of stream: AUTO commits and flushes what was read."""
        if not self._ended:
            self._ended = True
            if self._strategy == OffsetManagementStrategy.AUTO:
                self._tracker.commit()
                self._flush(wait)

    def close(self, *, _wait: bool = True) -> None:
        """Stop reading; AUTO commits and flushes every record handed out first."""
        if self._closed:
            return
        self._closed = True
        try:
            self._end(_wait)
        finally:
            self._merged.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> "ConsumerIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "ConsumerIterator":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A finalizer may run inside another call on the same SC connection (a garbage
        # collection pass can start anywhere): never wait for that connection here.
        if getattr(self, "_merged", None) is not None and not self._closed:
            try:
                self.close(_wait=False)
            except Exception:
                pass


__all__ = ["ConsumerIterator"]
