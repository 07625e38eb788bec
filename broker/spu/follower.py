"""A follower replica's loop: truncate by leader epoch, then pull batches from the leader.

Runs as one asyncio task per follower replica, for as long as the SC's spec names
the same leader and epoch; a new spec (or a stop) cancels it and the service starts
a fresh one.

Before fetching, the follower asks the leader where its own last epoch ends
(``EpochEndOffset``) and truncates there: records the follower holds beyond that
point were never committed under the new leader and would otherwise let one offset
name two records. It never truncates to its own high watermark (KIP-101).
"""

from __future__ import annotations

import asyncio
import logging

from rillet.ipc import messages as m
from rillet.ipc.errors import CorruptBatch, RecordsLost, RilletError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.records import iter_batches, validate_batch
from rillet.ipc.async_connection import AsyncConnection

from .replica import Replica

FETCH_MAX_BYTES = 8 * 1024 * 1024
FETCH_WAIT_MS = 500
RETRY_DELAY_S = 0.05
# A follower whose leader holds the next records damaged, with no whole copy anywhere, has nothing
# it could copy: it reports itself stalled and asks again this rarely, instead of every 50 ms.
STALLED_RETRY_S = 30.0


class Complaints:
    """Follower errors at WARNING with their cause, without a line per 50 ms retry: a cause is
    logged when it first appears or changes, and again every REPEAT_S while it lasts; the
    recovery is logged once."""

    REPEAT_S = 10.0

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log, self.name = log, name
        self._last: str | None = None
        self._at = 0.0
        self._repeats = 0

    def failed(self, cause: str, now: float) -> None:
        if cause != self._last or now - self._at >= self.REPEAT_S:
            again = f" ({self._repeats} more times since)" if cause == self._last and self._repeats else ""
            self.log.warning("%s: %s%s", self.name, cause, again)
            self._last, self._at, self._repeats = cause, now, 0
        else:
            self._repeats += 1

    def fetched(self) -> None:
        if self._last is not None:
            self.log.warning("%s: following again after: %s", self.name, self._last)
            self._last, self._repeats = None, 0


async def follow(replica: Replica, paths: ClusterPaths, log: logging.Logger, on_progress,
                 on_stalled=lambda cause: None) -> None:
    """Follow the leader; ``on_stalled(cause)`` when the leader's next records are lost (damaged
    with no whole copy), ``on_stalled(None)`` once fetching works again after that."""
    spec = replica.spec
    me = replica.spu_id
    complaints = Complaints(log, f"{replica.name} follower of SPU {spec.leader} (epoch {spec.leader_epoch})")
    loop = asyncio.get_running_loop()
    stalled = False
    while True:
        conn = None
        delay = RETRY_DELAY_S
        try:
            conn = await AsyncConnection.open(paths.spu_socket(spec.leader), f"spu-{me}-follower")
            await _truncate_by_epoch(conn, replica, spec)
            on_progress()
            while True:
                leo = replica.leo
                reply = await conn.call(lambda cid: m.FollowerFetch(
                    cid, spec.topic, spec.partition, me, spec.leader_epoch, leo, FETCH_MAX_BYTES, FETCH_WAIT_MS),
                    timeout_s=FETCH_WAIT_MS / 1000 + 10)
                complaints.fetched()
                if stalled:
                    stalled = False
                    on_stalled(None)
                before = (replica.leo, replica.hw)
                replica.catch_up_to_log_start(reply.log_start)
                try:
                    replica.append_replicated(reply.batches, reply.hw)
                except CorruptBatch as exc:
                    # The leader sent a batch that fails its checks: its copy is damaged there and it
                    # may not know yet. It checks now; its answer (NotLeader: a whole copy takes over;
                    # RecordsLost: none exists) decides, instead of fetching the same bytes forever.
                    bad = _first_bad_offset(reply.batches, replica.leo)
                    log.warning("%s: a batch from leader SPU %d at offset %d is bad (%s); reporting it",
                                replica.name, spec.leader, bad, exc)
                    await conn.call(lambda cid: m.ReportDamage(cid, spec.topic, spec.partition, bad))
                    raise           # the leader holds it whole (Ok): fetch again after the usual delay
                if replica.rebuilding and replica.leo >= reply.hw:
                    replica.rebuilding = False        # the service clears its problem report
                if (replica.leo, replica.hw) != before:
                    on_progress()
        except asyncio.CancelledError:
            raise
        except RecordsLost as exc:
            cause = (f"cannot copy offsets {exc.first_offset} to {exc.last_offset} from leader SPU {spec.leader}: "
                     f"they are damaged there and no whole copy exists")
            complaints.failed(cause, loop.time())
            if not stalled:
                stalled = True
                on_stalled(cause)
            delay = STALLED_RETRY_S
        except RilletError as exc:
            complaints.failed(f"{type(exc).__name__}: {exc}", loop.time())
        except Exception:
            log.exception("%s: follower loop failed", replica.name)
        finally:
            if conn is not None:
                conn.close()
        await asyncio.sleep(delay)


def _first_bad_offset(batches, start: int) -> int:
    """The base offset of the first batch of a fetch answer that fails its checks."""
    for pos, header in iter_batches(batches):
        try:
            validate_batch(batches, pos)
        except CorruptBatch:
            return header.base_offset
    return start


async def _truncate_by_epoch(conn: AsyncConnection, replica: Replica, spec: m.ReplicaSpec) -> None:
    last_epoch = replica.log.last_epoch
    if last_epoch < 0 or replica.leo == 0:
        return
    reply = await conn.call(lambda cid: m.EpochEndOffset(cid, spec.topic, spec.partition, spec.leader_epoch, last_epoch))
    if reply.epoch < 0:
        # The leader knows no epoch as old as ours (Kafka's UNDEFINED_OFFSET): keep only
        # what we know was committed.
        end = replica.hw
    else:
        # KIP-279: the leader answered for the largest epoch it has up to ours; our own
        # log may end that epoch earlier, and the point must be a boundary in our log.
        end = min(reply.end_offset, replica.log.epoch_end_offset(reply.epoch))
    if 0 <= end < replica.leo:
        replica.truncate_to(end)
