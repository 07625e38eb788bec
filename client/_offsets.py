"""Named consumers: their configuration, offset bookkeeping, and the SC calls that store offsets.

Fluvio's model (research/fluvio.md §6.4), kept exactly:

* the stored value is the last offset a consumer has *seen*; it resumes at stored + 1;
* a stream keeps three numbers per partition: ``seen`` (the highest offset handed
  out), ``committed`` (``seen`` as of the last ``offset_commit()``, local only) and
  ``flushed`` (what the SC has acknowledged);
* NONE stores nothing; MANUAL stores on ``offset_commit()`` + ``offset_flush()``;
  AUTO commits the previous record when the next one is handed out, flushes every
  ``offset_flush`` period, and commits and flushes when the stream ends or closes.

Offsets are kept by the SC (broker/sc/offsets.py), which fsyncs them before it
acknowledges a flush. :class:`OffsetTracker` and :func:`start_position` are pure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

from rillet.ipc import messages as m
from rillet.ipc.admin_link import admin_connection
from rillet.ipc.lag import consumer_lag
from rillet.ipc.errors import BrokenConnection, InvalidArgument, OffsetOutOfRange, RilletError
from rillet.ipc.names import ClusterPaths, validate_name

from ._enums import Isolation, OffsetManagementStrategy
from ._record import Offset

DEFAULT_MAX_BYTES = 1024 * 1024          # Fluvio's default fetch size
DEFAULT_OFFSET_FLUSH_MS = 10_000         # Fluvio's library default auto-flush period (its CLI uses 2 s)


# --- what users see ---------------------------------------------------------------------------

class ConsumerOffset:
    """One stored offset, with Fluvio's attribute names. ``offset`` is the last offset
    the consumer has seen; ``modified_time`` is when it was stored, in seconds since
    the epoch (``modified_ms`` in milliseconds). Beyond Fluvio: ``lag``, the records
    below the partition's high watermark it has not seen (ipc/lag.py), None when no
    leader is online (and on objects ``delete_consumer_offset`` returns)."""

    __slots__ = ("consumer_id", "topic", "partition", "offset", "modified_time", "modified_ms", "lag")

    def __init__(self, consumer_id: str, topic: str, partition: int, offset: int, modified_ms: int,
                 lag: int | None = None) -> None:
        self.consumer_id = consumer_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.modified_ms = modified_ms
        self.modified_time = modified_ms // 1000
        self.lag = lag

    @classmethod
    def _from_info(cls, info: m.ConsumerOffsetInfo) -> "ConsumerOffset":
        return cls(info.consumer, info.topic, info.partition, info.offset, info.modified_ms,
                   consumer_lag(info.hw, info.offset))

    def __repr__(self) -> str:
        return (f"ConsumerOffset(consumer_id={self.consumer_id!r}, topic={self.topic!r}, "
                f"partition={self.partition}, offset={self.offset}, modified_time={self.modified_time}, lag={self.lag})")

    def __eq__(self, other) -> bool:
        # lag is an observation of the partition, not part of the stored offset
        return isinstance(other, ConsumerOffset) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__ if a != "lag")


@dataclass(frozen=True, kw_only=True)
class ConsumerConfigExt:
    """What ``Fluvio.consumer_with_config`` needs; build it with ConsumerConfigExtBuilder."""

    topic: str
    partition: int | None = None                       # None: every partition of the topic
    offset_start: Offset = Offset.beginning()          # the Python binding's preset
    offset_consumer: str | None = None                 # the name offsets are stored under
    offset_strategy: OffsetManagementStrategy = OffsetManagementStrategy.NONE   # the crate's default
    offset_flush_ms: int = DEFAULT_OFFSET_FLUSH_MS     # AUTO only: period of the background flush
    disable_continuous: bool = False                   # True: stop at the end instead of waiting
    max_bytes: int = DEFAULT_MAX_BYTES                 # per fetch
    isolation: Isolation = Isolation.ReadUncommitted   # Fluvio's code default
    skip_damaged: bool = False                         # step past RecordsLost (said, never silent)
    on_skip: object = None                             # called with each RecordsLost skipped (None: logged)
    smartmodules: tuple = ()                           # SmartModuleInvocations, applied in order

    def __post_init__(self) -> None:
        validate_name(self.topic, "topic")
        if self.partition is not None and (not isinstance(self.partition, int) or self.partition < 0):
            raise InvalidArgument(f"partition must be a non-negative integer, got {self.partition!r}")
        if not isinstance(self.offset_start, Offset):
            raise InvalidArgument(f"offset_start needs an Offset, got {type(self.offset_start).__name__}")
        if self.offset_strategy != OffsetManagementStrategy.NONE and self.offset_consumer is None:
            raise InvalidArgument("Consumer config error: Consumer id is required when using offset strategy")
        if self.offset_consumer is not None:
            validate_name(self.offset_consumer, "consumer")
        if self.offset_flush_ms <= 0:
            raise InvalidArgument(f"offset_flush must be positive, got {self.offset_flush_ms} ms")
        if self.max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be positive, got {self.max_bytes}")


class ConsumerConfigExtBuilder:
    """Fluvio's builder. Its Python setters return None; here they return the builder,
    so both the one-call-per-line idiom and chaining work."""

    def __init__(self, topic: str) -> None:
        self._fields: dict = {"topic": topic}

    def _set(self, **kw) -> "ConsumerConfigExtBuilder":
        self._fields.update(kw)
        return self

    def topic(self, topic: str) -> "ConsumerConfigExtBuilder":
        return self._set(topic=topic)

    def partition(self, partition: int) -> "ConsumerConfigExtBuilder":
        return self._set(partition=partition)

    def offset_start(self, offset: Offset) -> "ConsumerConfigExtBuilder":
        return self._set(offset_start=offset)

    def offset_consumer(self, id: str) -> "ConsumerConfigExtBuilder":
        return self._set(offset_consumer=id)

    def offset_strategy(self, strategy: OffsetManagementStrategy = OffsetManagementStrategy.AUTO) -> "ConsumerConfigExtBuilder":
        return self._set(offset_strategy=OffsetManagementStrategy(strategy))

    def offset_flush(self, period: int | float | timedelta) -> "ConsumerConfigExtBuilder":
        """AUTO's flush period: milliseconds, or a timedelta (default 10 s)."""
        ms = period.total_seconds() * 1000 if isinstance(period, timedelta) else period
        return self._set(offset_flush_ms=int(ms))

    def disable_continuous(self, val: bool = True) -> "ConsumerConfigExtBuilder":
        return self._set(disable_continuous=bool(val))

    def max_bytes(self, max_bytes: int) -> "ConsumerConfigExtBuilder":
        return self._set(max_bytes=int(max_bytes))

    def isolation(self, isolation: Isolation | str) -> "ConsumerConfigExtBuilder":
        return self._set(isolation=Isolation.parse(isolation))

    def skip_damaged(self, val: bool = True, on_skip=None) -> "ConsumerConfigExtBuilder":
        """Step past records lost to damage instead of raising RecordsLost; ``on_skip(error)`` is
        told of each range (default: a warning on the "rillet" logger)."""
        return self._set(skip_damaged=bool(val), on_skip=on_skip)

    def smartmodule(self, name: str | None = None, path: str | None = None, kind=None,
                    params: dict[str, str] | None = None, aggregate=None) -> "ConsumerConfigExtBuilder":
        """Apply a SmartModule (as ``ConsumerConfig.smartmodule``: same checks and messages); a rillet
        addition (Fluvio's Rust builder has it, its Python one does not). Called again: a chain."""
        from ._smartmodule import smartmodule_invocation
        invocation = smartmodule_invocation(name, path, kind, params, aggregate)
        return self._set(smartmodules=tuple(self._fields.get("smartmodules", ())) + (invocation,))

    def build(self) -> ConsumerConfigExt:
        return ConsumerConfigExt(**self._fields)


# --- pure bookkeeping -------------------------------------------------------------------------

def start_position(start: Offset, log_start: int, hw: int, visible_end: int, stored: int | None = None, *,
                   where: str = "the partition") -> int:
    """The absolute offset a partition stream starts at.

    * ``absolute(n)``: n itself; below the log start it is OffsetOutOfRange naming the
      first available offset (past the end is refused by the caller, which knows the LEO).
    * ``from_beginning(n)``: log start + n; ``from_end(n)``: HW - n. When the consumer has
      a stored offset c, both count from c + 1 instead (so ``beginning()`` and ``end()``
      resume right after the last record it saw), as Fluvio does.
    * relative results are clamped to [log start, visible end] (HW for ReadCommitted,
      the LEO for ReadUncommitted), so records removed by retention are skipped, not an error.
    """
    if start.kind == "absolute":
        if start.value < log_start:
            raise OffsetOutOfRange(
                f"offset {start.value} of {where} is no longer available: the first available offset is {log_start}")
        return start.value
    if start.kind == "from_beginning":
        position = (log_start if stored is None else stored + 1) + start.value
    else:
        position = (hw if stored is None else stored + 1) - start.value
    return min(max(position, log_start), max(visible_end, log_start))


class OffsetTracker:
    """seen / committed / flushed per partition (Fluvio's consumer/offset.rs model)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.flushed: dict[int, int] = {}

    def saw(self, partition: int, offset: int) -> None:
        if offset > self.seen.get(partition, -1):
            self.seen[partition] = offset

    def commit(self) -> None:
        self.committed.update(self.seen)

    def pending(self) -> dict[int, int]:
        """Committed offsets the SC does not have yet."""
        return {p: o for p, o in self.committed.items() if self.flushed.get(p) != o}

    def mark_flushed(self, offsets: dict[int, int]) -> None:
        self.flushed.update(offsets)


# --- the SC connection --------------------------------------------------------------------------

class OffsetClient:
    """Calls to the SC's offset store over one lazily opened admin connection.

    Thread-safe (one request at a time). Idempotent calls are retried once on a fresh
    connection when the old one broke (for example after the cluster restarted).
    """

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._conn = None
        self._lock = threading.Lock()
        self._closed = False

    def _call(self, make, *, retry: bool = True, wait: bool = True):
        if not self._lock.acquire(blocking=wait):
            raise RilletError("the SC connection is busy")
        try:
            for attempt in (1, 2):
                if self._closed:
                    raise RilletError("the Fluvio handle is closed")
                if self._conn is None or self._conn.closed:
                    self._conn = admin_connection(self.paths)
                try:
                    return self._conn.call(make(self._conn.next_cid()))
                except BrokenConnection:
                    self._conn.close()
                    self._conn = None
                    if not retry or attempt == 2:
                        raise
        finally:
            self._lock.release()

    def commit(self, consumer: str, topic: str, offsets: dict[int, int], *, wait: bool = True) -> None:
        """Store ``offsets`` (partition -> last seen); returns once the SC has fsynced them.
        ``wait=False`` gives up at once if another call holds the connection (used from
        a finalizer, which may run inside such a call)."""
        entries = [m.TopicPartitionOffset(topic, p, o) for p, o in sorted(offsets.items())]
        self._call(lambda cid: m.CommitConsumerOffsets(cid, consumer, entries), wait=wait)

    def fetch(self, consumer: str, topic: str) -> dict[int, int]:
        reply = self._call(lambda cid: m.FetchConsumerOffsets(cid, consumer, topic))
        return {row.partition: row.offset for row in reply.offsets}

    def list(self) -> list[ConsumerOffset]:
        reply = self._call(lambda cid: m.ListConsumerOffsets(cid))
        return [ConsumerOffset._from_info(row) for row in reply.offsets]

    def delete(self, consumer: str, topic: str | None, partition: int | None) -> list[ConsumerOffset]:
        reply = self._call(lambda cid: m.DeleteConsumerOffsets(cid, consumer, topic, partition), retry=False)
        return [ConsumerOffset._from_info(row) for row in reply.deleted]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


__all__ = [
    "ConsumerOffset", "ConsumerConfigExt", "ConsumerConfigExtBuilder", "OffsetTracker", "OffsetClient",
    "start_position", "DEFAULT_OFFSET_FLUSH_MS",
]
