"""One replica of one partition inside an SPU: its log, its role, and the offsets clients wait on.

The log (broker/storage) assigns offsets; this object adds what the network needs:

* the role from the SC's spec: leader (serves produce and fetch, tracks followers
  through ``LeaderState``) or follower (appends what its leader sends);
* the high watermark (HW): with one replica the log end offset (LEO) after every
  append; with followers the smallest LEO over the in-sync replicas (broker/spu/isr.py);
* waiters for long-poll fetches and ReadCommitted produces, woken the moment the
  offset they wait for becomes visible;
* the idempotent producers' state (broker/spu/producer_state.py), rebuilt from the
  batch headers of its log on open and kept by every append, leader or follower, so a
  replica elected leader answers a retried batch as the old leader would have.
"""

from __future__ import annotations

import asyncio
import logging
import time

from rillet.ipc import messages as m
from rillet.ipc.compression import parse_topic_compression
from rillet.ipc.errors import (
    CompressionError, CorruptBatch, NotEnoughReplicas, NotLeader, RecordsLost,
    StaleLeaderEpoch,
)
from rillet.ipc.record_decoding import check_readable
from rillet.ipc.records import HEADER_SIZE, iter_batches, validate_batch
from rillet.broker.storage.log import MAX_SEGMENT_SIZE, PartitionLog
from rillet.broker.storage.scrub import Damage, Scrubber

from .isr import LeaderState
from .producer_state import ProducerStateTable

_CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
REPLICA_LAG_MAX_S = 2.0      # a follower not caught up for this long leaves the ISR
# Producer state is rebuilt from the headers of this many newest segments on open: the active
# one holds every recent batch a producer may retry, and the cost of an open stays bounded
# (a 64 MiB segment of 100-byte batches is ~700,000 headers). Older producers are forgotten.
PRODUCER_SCAN_SEGMENTS = 2
HW_CHECKPOINT_INTERVAL_S = 1.0   # the HW checkpoint (two fsyncs) is written at most this often


_TIMED_OUT = object()      # what a waiter's future holds when its timeout passed first


def _time_out(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


class Replica:
    def __init__(self, spu_id: int, spec: m.ReplicaSpec, log: PartitionLog, logger: logging.Logger, *,
                 events=None, on_positions=lambda replica: None) -> None:
        self.spu_id = spu_id
        self.spec = spec
        self.log = log
        self.logger = logger
        # The SPU's event queue (broker/spu/loop.py): an ISR change is put there, and the HW
        # holds still until the main loop has reported it and calls release_hw. A replica
        # with no queue (unit tests) has nobody to tell and moves its HW at once.
        self.events = events
        self._hw_held = False
        # Publishes log start, HW and LEO for direct readers (broker/spu/positions.py).
        self.on_positions = on_positions
        self.hw = log.leo if len(spec.replicas) == 1 else log.read_high_watermark()
        self._saved_hw = self.hw
        self._saved_at = float("-inf")     # never saved: the first change is written at once
        # The SPU's checkpoint writer (broker/spu/hw_checkpoints.py: a worker thread, so the
        # two fsyncs are not a stall of the event loop); None (unit tests): written at once.
        self.checkpoints = None
        self.flushes = 0                 # fsyncs of the log (flush policy), reported to the SC
        # Metrics counters (plain ints on the hot path), reported to the SC: see m.ReplicaStatus.
        self.records_in = self.bytes_in = self.records_out = self.bytes_out = 0
        self._unflushed = False
        self._flushed_at = time.monotonic()
        self.leader_state: LeaderState | None = None
        # A follower copy fetched again from its leader after damage (service._rebuild): set
        # until it reaches the leader's high watermark.
        self.rebuilding = False
        # Sealed segments are checked in the background (broker/storage/scrub.py); the first
        # damaged batch found stays here until the copy is repaired (SpuService._repair).
        self.scrubber = Scrubber(log)
        self.next_scrub_at = 0.0          # monotonic; 0: a first pass right after opening
        self.damage: Damage | None = None
        # (bound_is_hw, offset, future): woken once the bound passes offset.
        self._waiters: list[tuple[bool, int, asyncio.Future]] = []
        self._compression_cache: tuple[str, int | None] | None = None
        self.producers = self._load_producers()
        self._become(spec)

    @property
    def name(self) -> str:
        return f"{self.spec.topic}/{self.spec.partition}"

    @property
    def is_leader(self) -> bool:
        return self.spec.leader == self.spu_id

    @property
    def leo(self) -> int:
        return self.log.leo

    @property
    def replicated(self) -> bool:
        return len(self.spec.replicas) > 1

    # --- role changes ---
    def update_spec(self, spec: m.ReplicaSpec) -> None:
        old = self.spec
        self.spec = spec
        if spec.segment_size != old.segment_size:      # `topic update`: segments made from now on
            self.log.set_segment_size(spec.segment_size)
        if (old.leader, old.leader_epoch) != (spec.leader, spec.leader_epoch) or old.replicas != spec.replicas:
            self._become(spec)

    def _become(self, spec: m.ReplicaSpec) -> None:
        self._hw_held = False          # the SC's spec carries the in-sync set: it knows this one
        if spec.leader == self.spu_id:
            if self.replicated:
                self.leader_state = LeaderState(self.spu_id, spec.replicas, spec.in_sync,
                                                lag_max_s=REPLICA_LAG_MAX_S, now=time.monotonic(), hw=self.hw)
            else:
                self.leader_state = None
                self._set_hw(self.log.leo)
            self.logger.info("%s: leader at epoch %d (leo %d, hw %d)", self.name, spec.leader_epoch, self.leo, self.hw)
        else:
            self.leader_state = None
            self._fail_waiters(NotLeader(f"SPU {self.spu_id} stopped leading {self.name}"))
            self.logger.info("%s: follower of SPU %d at epoch %d (leo %d)", self.name, spec.leader, spec.leader_epoch, self.leo)
        self.on_positions(self)

    # --- produce (leader) ---
    def check_can_append(self, committed: bool) -> None:
        if not self.is_leader:
            raise NotLeader(f"SPU {self.spu_id} is not the leader of {self.name} (leader: {self.spec.leader})")
        if committed and self.leader_state is not None:
            isr = len(self.leader_state.isr)
            if isr < self.spec.min_in_sync_replicas:
                raise NotEnoughReplicas(
                    f"{self.name}: {isr} in-sync replica(s), min_in_sync_replicas={self.spec.min_in_sync_replicas}"
                )

    def append(self, batches: memoryview) -> tuple[int, int]:
        """Append every whole batch in ``batches``; return the first base offset and the offset a
        ReadCommitted ack waits for. A batch an idempotent producer already stored is not stored
        again: its original offsets count instead. OutOfOrderSequence for a sequence gap."""
        compression = self._compression()
        first_base, commit_end = -1, 0
        producers = self.producers
        pos, end = 0, len(batches)
        if end < HEADER_SIZE:
            raise CorruptBatch(f"produce request carries {end} bytes, less than one batch header")
        while pos < end:
            # Length, magic, record count and CRC, once, before anything reads the batch; the
            # log stores it on this check (log.append's ``header``) instead of running it again.
            header = validate_batch(batches, pos, max_batch_bytes=MAX_SEGMENT_SIZE + 1)    # the log's bound
            size = header.total_size
            if compression is not None and header.codec != compression:
                raise CompressionError(
                    f"topic {self.spec.topic} requires compression {self.spec.compression_type.lower()}, "
                    f"batch uses codec {header.codec}"
                )
            pid, count = header.producer_id, header.record_count
            duplicate = producers.check(pid, header.first_sequence, count)
            if duplicate is None:
                # Storage never decodes records; the SPU checks once that every consumer will be able
                # to (codec, decompression bound, record shape and count) so no poison batch is stored.
                check_readable(batches, pos, header)
                base, stored_end = self.log.append(batches[pos:pos + size], leader_epoch=self.spec.leader_epoch,
                                                   header=header)
                producers.apply(pid, header.first_sequence, count, base)
                self.records_in += count
                self.bytes_in += size
            else:
                base, stored_end = duplicate
                self.logger.debug("%s: producer %d sequence %d is stored at offset %d already; not stored again",
                                  self.name, pid, header.first_sequence, base)
            if first_base < 0:
                first_base = base
            if stored_end > commit_end:
                commit_end = stored_end
            pos += size
        self._written()
        self._advance_hw()
        self._wake()
        return first_base, commit_end

    def _compression(self) -> int | None:
        """The codec id the topic requires of every batch, None for any (parsed once per setting:
        UnknownCodec for a bad one, at every append as before)."""
        name = self.spec.compression_type
        cached = self._compression_cache
        if cached is None or cached[0] is not name:
            parsed = parse_topic_compression(name)
            cached = self._compression_cache = (name, None if parsed == "any" else _CODEC_IDS[parsed])
        return cached[1]

    def _load_producers(self) -> ProducerStateTable:
        table = ProducerStateTable(self.spec.topic, self.spec.partition)
        start = self.log.scan_headers(table.apply_header, PRODUCER_SCAN_SEGMENTS)
        table.complete = table.complete and start == 0
        return table

    # --- flush policy: what survives power loss ---
    def _written(self) -> None:
        self._unflushed = True
        if self.spec.flush == "every-batch":
            self.flush()

    def flush(self) -> None:
        """msync + fsync the log. An error is fatal for this replica's writes (StorageError
        from then on): after a failed fsync the kernel may have dropped the pages."""
        self.log.flush()
        self.flushes += 1
        self._unflushed = False
        self._flushed_at = time.monotonic()

    def flush_if_due(self, now: float) -> None:
        if (self.spec.flush == "interval" and self._unflushed
                and now - self._flushed_at >= self.spec.flush_interval_ms / 1000):
            self.flush()

    # --- replication: leader side ---
    def follower_fetch(self, req: m.FollowerFetch) -> bool:
        """Record a follower's progress; True if the ISR changed."""
        if not self.is_leader:
            raise NotLeader(f"SPU {self.spu_id} is not the leader of {self.name} (leader: {self.spec.leader})")
        if req.leader_epoch != self.spec.leader_epoch:
            raise StaleLeaderEpoch(
                f"{self.name}: follower {req.follower} fetches at epoch {req.leader_epoch}, leader is at {self.spec.leader_epoch}"
            )
        if req.offset > self.leo:
            from rillet.ipc.errors import OffsetOutOfRange
            raise OffsetOutOfRange(f"{self.name}: follower {req.follower} at offset {req.offset} is past leo {self.leo}")
        if self.leader_state is None:
            return False
        changed = self.leader_state.on_fetch(req.follower, req.offset, self.leo, time.monotonic())
        self._isr_event(changed)
        return changed

    def answered_follower(self, follower: int) -> None:
        if self.leader_state is not None:
            self.leader_state.on_answer(follower, self.leo)

    def follower_gone(self, follower: int) -> None:
        if self.leader_state is not None:
            self._isr_event(self.leader_state.on_disconnect(follower))

    def expire(self, now: float) -> None:
        if self.leader_state is not None:
            self._isr_event(self.leader_state.expire(now))

    def _isr_event(self, changed: bool) -> None:
        if changed and self.events is not None:
            # Tell the SC first (it elects from the ISR), then let the HW move with the new set:
            # a record acknowledged under a shrunk set the SC never heard of could be lost to
            # an election from the old one. The main loop reports, then calls release_hw.
            self._hw_held = True
            self.events.isr_changed((self.spec.topic, self.spec.partition))
            return
        self._advance_hw()
        self._wake()

    def release_hw(self) -> None:
        """The ISR change is reported: the HW follows the in-sync set again."""
        self._hw_held = False
        self._advance_hw()
        self._wake()

    # --- replication: follower side ---
    def append_replicated(self, batches: memoryview, leader_hw: int) -> None:
        if len(batches):
            before = self.log.leo
            try:
                self.log.append_replicated(batches)
            finally:                            # what was stored, even if a later batch failed
                stored = self.log.leo
                apply = self.producers.apply
                for _pos, h in iter_batches(batches):
                    if before <= h.base_offset < stored and h.producer_id >= 0:
                        apply(h.producer_id, h.first_sequence, h.record_count, h.base_offset)
            self._written()
        self._set_hw(min(leader_hw, self.log.leo))
        self._wake()

    def catch_up_to_log_start(self, leader_log_start: int) -> None:
        """The leader deleted what this follower still needs: start over at its log start."""
        if self.log.leo < leader_log_start:
            self.log.reset_to(leader_log_start)
            self.hw = max(self.hw, leader_log_start)
            self.producers = ProducerStateTable(self.spec.topic, self.spec.partition, complete=False)
            self.on_positions(self)

    def apply_retention(self, now_ms: int) -> int:
        """Delete sealed segments past the topic's retention time or size; returns how many.

        Only records below the high watermark go: nothing a consumer may still be owed as
        uncommitted, and nothing a follower has not had the chance to copy while in sync.
        """
        spec = self.spec
        if spec.retention_time_s is None and spec.max_partition_size is None:
            return 0
        sealed = self.log.sealed_segments()
        size = self.log.size_bytes
        count = 0
        for _base, next_offset, seg_size, max_ts in sealed:
            too_old = spec.retention_time_s is not None and max_ts < now_ms - spec.retention_time_s * 1000
            too_big = spec.max_partition_size is not None and size > spec.max_partition_size
            if not (too_old or too_big) or next_offset > self.hw:
                break
            size -= seg_size
            count += 1
        if count:
            self.log.delete_oldest_segments(count)
            self.on_positions(self)
        return count

    def truncate_to(self, offset: int, why: str = "leader epoch end offset") -> None:
        if offset < self.log.leo:
            self.logger.warning("%s: truncating from leo %d to %d (%s)", self.name, self.log.leo, offset, why)
            self.log.truncate_to(offset)
            self.scrubber.truncated(offset)
            self.producers.truncate_from(offset)
            self.hw = min(self.hw, offset)
            self.on_positions(self)

    # --- fetch ---
    def bound(self, committed: bool) -> int:
        return self.hw if committed else self.log.leo

    async def wait_for_data(self, offset: int, committed: bool, timeout_s: float) -> None:
        """Return once records at ``offset`` are visible, or when the timeout passes."""
        if self.bound(committed) > offset:
            return
        await self._wait(committed, offset, timeout_s)

    async def _wait(self, committed: bool, offset: int, timeout_s: float):
        """Park a waiter until ``_wake`` sees the bound pass ``offset``; ``_TIMED_OUT`` after ``timeout_s``.

        A timer that resolves the waiter's own future, not ``asyncio.wait_for``: that wraps it in
        a second future and resumes the task one loop iteration later, which cost every long-poll
        fetch 2-4 us of the SPU's CPU (a wait/wake loop: 7.7 -> 4.1 us
        on asyncio's loop, 4.1 -> 1.9 us on uvloop).
        """
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (committed, offset, fut)
        self._waiters.append(entry)
        timer = loop.call_later(timeout_s, _time_out, fut)
        woken = False
        try:
            result = await fut
            woken = result is not _TIMED_OUT
            return result
        finally:
            timer.cancel()
            if not woken:
                # _wake drops the waiters it resolves; one that timed out or was cancelled would
                # stay until the next append (an idle consumer leaves one a second otherwise).
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass

    def read(self, offset: int, max_bytes: int, committed: bool) -> memoryview:
        """Batches from ``offset``; never a damaged batch (RecordsLost at it, and reads stop before it)."""
        bound, damage = self.bound(committed), self.damage
        if damage is not None and offset <= damage.last_offset:
            if offset >= damage.first_offset:
                if self.leader_state is not None and len(self.leader_state.isr) > 1:
                    # Another in-sync copy has these records: the SC hands leadership to it, and
                    # the reader (retrying on NotLeader) gets them from there.
                    raise NotLeader(f"SPU {self.spu_id}'s copy of {self.name} is damaged at offsets "
                                    f"{damage.first_offset} to {damage.last_offset}; leadership moves to a whole copy")
                raise RecordsLost.of(self.spec.topic, self.spec.partition, damage.first_offset,
                                     damage.last_offset, f"{damage.cause} in {damage.segment}")
            bound = min(bound, damage.first_offset)
        return self.log.read(offset, max_bytes, bound)

    # --- internals ---
    def _advance_hw(self) -> None:
        if self.leader_state is not None:
            if not self._hw_held:
                self._set_hw(self.leader_state.high_watermark(self.log.leo))
        elif self.is_leader:
            self._set_hw(self.log.leo)

    def _set_hw(self, hw: int) -> None:
        if hw > self.hw:
            self.hw = hw

    def save_hw(self, force: bool = False, *, now: float | None = None) -> bool:
        """Checkpoint the HW, at most once a second (it is a hint: a stale one only makes
        a newly elected leader wait for its followers before its HW moves on); True if written.

        Called on every status report to the SC (up to ~20/s), so the throttle is what keeps
        the write-and-fsync of the checkpoint off the event loop's hot path. ``now`` is
        ``time.monotonic()`` unless a test passes its own clock.
        """
        now = time.monotonic() if now is None else now
        if (self.replicated and self.hw != self._saved_hw and not self.log.closed
                and (force or now - self._saved_at >= HW_CHECKPOINT_INTERVAL_S)):
            if self.checkpoints is not None and not force:
                self.checkpoints.submit(self, self.hw)
            else:
                if self.checkpoints is not None:
                    self.checkpoints.drain()         # a queued, older value must not land after this one
                self.log.write_high_watermark(self.hw)
            self._saved_hw, self._saved_at = self.hw, now
            return True
        return False

    def _wake(self) -> None:
        self.on_positions(self)
        if not self._waiters:
            return
        keep = []
        waiters, self._waiters = self._waiters, keep   # a CommitWaiter answers from in here
        for committed, offset, fut in waiters:
            if fut.done():
                continue
            if self.bound(committed) > offset:
                fut.set_result(None)
            else:
                keep.append((committed, offset, fut))
        self._waiters = keep

    def _fail_waiters(self, exc: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for _c, _o, fut in waiters:
            if not fut.done():
                fut.set_exception(exc)

    def status(self) -> m.ReplicaStatus:
        return m.ReplicaStatus(
            topic=self.spec.topic, partition=self.spec.partition, leader_epoch=self.spec.leader_epoch,
            is_leader=self.is_leader, leo=self.log.leo, hw=self.hw, log_start=self.log.log_start_offset,
            size_bytes=self.log.size_bytes,
            in_sync=(self.leader_state.in_sync() if self.leader_state is not None
                     else [self.spu_id] if self.is_leader else []),
            flushes=self.flushes, records_in=self.records_in, bytes_in=self.bytes_in,
            records_out=self.records_out, bytes_out=self.bytes_out,
        )

    def close(self) -> None:
        waiters, self._waiters = self._waiters, []     # a CommitWaiter's cancel unparks itself
        for _c, _o, fut in waiters:
            if not fut.done():
                fut.cancel()
        try:
            if self.checkpoints is not None:
                self.checkpoints.drain()             # nothing of this replica is written after it closed
            self.save_hw(force=True)
        finally:
            self.log.close()
