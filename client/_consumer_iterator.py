"""``Fluvio.consumer_with_config``: a consumer of one topic (one partition or all of
them) that can keep its position under a name, with Fluvio's offset strategies.

Offset bookkeeping (see _offsets.py for the model): records are handed out one at a
time (``next``) or a fetch at a time (``next_batch``); each hand-out marks its records
seen. AUTO commits what was seen before each hand-out, flushes every ``offset_flush``
period (the wait for records wakes up for it; there is no background thread), and
commits and flushes when the stream ends, is closed, or is garbage collected.

``next`` does no bookkeeping of its own: a buffered batch comes from one partition in
offset order, so how far the caller got in it is the position of its list iterator,
and ``_settle`` turns that into the tracker's seen / committed state (exactly what a
commit-then-see per record would have left) before anything reads or changes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import Iterator

from rillet.ipc.errors import InvalidArgument, RilletError

from ._consumer import ASYNC_SLICE_S, MultiPartitionStream, RecordBuffer, chained, open_streams
from ._enums import OffsetManagementStrategy
from ._metadata import MetadataView
from ._offsets import ConsumerConfigExt, OffsetClient, OffsetTracker
from ._record import Record
from ._smartmodule import resolve_modules

_log = logging.getLogger("rillet.consumer")


_warned_names: set[str] = set()


def _warn_stores_nothing(consumer: str) -> None:
    """Once per consumer name and process: a name without a strategy stores nothing (NONE is
    Fluvio's default, kept; the warning is there because the name suggests otherwise)."""
    if consumer in _warned_names:
        return
    _warned_names.add(consumer)
    warnings.warn(
        f"consumer {consumer!r} has no offset strategy, so its position is not stored (the default is "
        "OffsetManagementStrategy.NONE, as in Fluvio); call offset_strategy() for AUTO, or "
        "offset_strategy(OffsetManagementStrategy.MANUAL)", UserWarning, stacklevel=5)


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
        self._buffer = RecordBuffer()          # one batch: one partition, in offset order
        self._settled = 0                      # records of it already given to the tracker
        self._closed = False
        self._ended = False
        self._flush_period_s = config.offset_flush_ms / 1000
        self._next_flush = time.monotonic() + self._flush_period_s
        self._flush_failing = False            # the last periodic flush failed (logged already)
        self._meta = meta
        self._end_offset = end_offset
        self._merged: MultiPartitionStream | None = None
        self.stored_offsets: dict[int, int] | None = None   # partition -> stored last seen, once open
        topic = config.topic
        if config.partition is not None:
            meta.partition(topic, config.partition)          # TopicNotFound / PartitionNotFound now
            self._partitions = [config.partition]
        else:
            self._partitions = list(range(meta.partition_count(topic)))
        if self._strategy == OffsetManagementStrategy.NONE:
            if config.offset_consumer is not None:
                _warn_stores_nothing(config.offset_consumer)
            self._open()
        # A named consumer reads its stored offset when it first reads, not here, as Fluvio's
        # does: a new stream made while an older one of the same name is still alive starts
        # after what the older one stored by then (for example when it is dropped, which
        # flushes AUTO offsets: `stream = fluvio.consumer_with_config(config)` a second time).

    def _open(self) -> MultiPartitionStream:
        """The partition streams, opened on first use (see __init__)."""
        if self._merged is None:
            config, topic = self.config, self.config.topic
            stored = {}
            if self._strategy != OffsetManagementStrategy.NONE:
                stored = self._offsets.fetch(config.offset_consumer, topic)
            self._merged = MultiPartitionStream(open_streams(
                self._meta, [(topic, p) for p in self._partitions], config.offset_start,
                stored={(topic, p): o for p, o in stored.items()},
                max_bytes=config.max_bytes, isolation=config.isolation,
                continuous=not config.disable_continuous, end_offset=self._end_offset,
                skip_damaged=config.skip_damaged, on_skip=config.on_skip,
                smartmodules=resolve_modules(self._meta.paths, list(config.smartmodules))))
            self.stored_offsets = {p: o for p, o in stored.items() if p in self._partitions}
        return self._merged

    # --- reading ---
    def __iter__(self) -> Iterator[Record]:
        return chained(self._refill)

    @property
    def _ready(self) -> int:
        """Records buffered and not handed out yet (the CLI flushes its output at 0)."""
        return len(self._buffer)

    def __next__(self) -> Record:
        for record in self._buffer.it:
            return record
        if self._refill() is None:
            raise StopIteration
        return next(self._buffer.it)

    def _refill(self) -> Iterator[Record] | None:
        """Settle the used-up batch, wait for the next; its iterator, or None at the end."""
        if len(self._buffer):
            return self._buffer.it
        self._settle()
        self._buffer.clear()
        batch = self._wait_batch(None)
        if batch is None:
            self._end()
            return None
        self._put(batch)
        return self._buffer.it

    def next_batch(self) -> list[Record]:
        """The records of one fetch (waiting for one if none is buffered); [] at the end."""
        self._settle()
        if len(self._buffer):
            batch = self._buffer.take()
        else:
            self._buffer.clear()
            batch = self._wait_batch(None)
            if batch is None:
                self._end()
                return []
        self._settled = 0
        if self._strategy == OffsetManagementStrategy.AUTO:
            self._tracker.commit()          # reading the next records commits the previous ones
        last = batch[-1]
        self._tracker.saw(last.partition(), last.offset())
        return batch

    def __aiter__(self) -> "ConsumerIterator":
        return self

    async def __anext__(self) -> Record:
        for record in self._buffer.it:
            return record
        self._settle()
        self._buffer.clear()
        while True:
            batch = await asyncio.to_thread(self._wait_batch, ASYNC_SLICE_S)
            if batch is None:
                await asyncio.to_thread(self._end)
                raise StopAsyncIteration
            if batch:
                self._put(batch)
                return next(self._buffer.it)

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
            batch = self._open()._fill(wait)
            if batch is None or batch or (deadline is not None and time.monotonic() >= deadline):
                return batch

    def _put(self, batch: list[Record]) -> None:
        """Buffer a new batch (the previous one is settled and cleared)."""
        self._buffer.put(batch)
        self._settled = 0

    def _settle(self) -> None:
        """Bring the tracker up to the records ``next`` handed out from the buffered batch.

        Handing out r1..rn one at a time, AUTO commits before each: seen ends at rn,
        committed at r(n-1). The batch is one partition in offset order, so the last
        records stand for all before them.
        """
        buffer = self._buffer
        handed = buffer.handed_out()
        if handed <= self._settled:
            return
        tracker, records = self._tracker, buffer.records
        if self._strategy == OffsetManagementStrategy.AUTO:
            if handed - 1 > self._settled:
                before = records[handed - 2]
                tracker.saw(before.partition(), before.offset())
            tracker.commit()
        last = records[handed - 1]
        tracker.saw(last.partition(), last.offset())
        self._settled = handed

    def _note_dropped(self) -> None:
        """With SmartModules, the source records a module dropped after the last record handed
        out count as seen once everything read was handed out, so the stored position is the
        last source record consumed and a resumed consumer does not read them again. Called
        where offsets are committed (offset_commit, the end of an AUTO stream)."""
        merged = self._merged
        if not self.config.smartmodules or merged is None or len(self._buffer) or len(merged._ready):
            return
        for s in merged._streams:
            if s._transform is None or s._sm_error is not None or s._lost is not None or len(s._buffer):
                continue
            read_to = s.next_offset if s.stop_at is None else min(s.next_offset or 0, s.stop_at)
            if read_to > s.opened_at:      # (records past stop_at in the last batch were not decoded)
                self._tracker.saw(s.partition, read_to - 1)

    # --- offsets ---
    def offset_commit(self) -> None:
        """Mark every record handed out so far as consumed (local; offset_flush stores it)."""
        self._require_strategy("offset_commit")
        self._settle()
        self._note_dropped()
        self._tracker.commit()

    def offset_flush(self) -> None:
        """Send committed offsets to the cluster and wait until they are stored durably."""
        self._require_strategy("offset_flush")
        self._flush()

    def _flush(self, wait: bool = True) -> None:
        self._settle()
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
            # said once per outage, not once per period
            level = logging.DEBUG if self._flush_failing else logging.WARNING
            self._flush_failing = True
            _log.log(level, "periodic offset flush of consumer %r failed: %s; retrying every %g s",
                     self.config.offset_consumer, exc, self._flush_period_s)
        else:
            self._flush_failing = False

    # --- ending ---
    def _end(self, wait: bool = True) -> None:
        """End of stream: AUTO commits and flushes what was read."""
        if not self._ended:
            self._ended = True
            self._settle()
            if self._strategy == OffsetManagementStrategy.AUTO:
                self._note_dropped()
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
            if self._merged is not None:
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
        if getattr(self, "_partitions", None) is not None and not self._closed:
            try:
                self.close(_wait=False)
            except Exception:
                pass


__all__ = ["ConsumerIterator"]
