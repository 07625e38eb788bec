"""The SPU's request handlers: produce, fetch, offsets, damage reports and the leader's side
of replication, with the fence they pass first.

Pure of sockets: handlers take decoded messages and return answers (or awaitables for
long polls); broker/spu/server.py wires them to connections. A mixin of SpuService
(broker/spu/service.py), as the SC's admin handlers are of its Controller: they read its
replicas and the metadata table it maps, and call its ``_damaged``, so the text moved here
unchanged.

Fencing: before a leader appends or serves a fetch it compares its spec with the
SC's shared-memory metadata table. A leader whose epoch the SC has superseded (it
was paused while a new leader was elected) refuses at once, even before the SC's
new spec reaches it, so no offset is ever given out under a stale epoch.
"""

from __future__ import annotations

from typing import Awaitable

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    FollowerRefused, InvalidArgument, NotLeader, OffsetOutOfRange, RilletError, StaleLeaderEpoch,
)
from rillet.ipc.records import peek_header
from rillet.ipc.shm import TableReader
from rillet.ipc.unix_socket import listener_pid
from rillet.broker.storage.scrub import check_at

from .commit_waiter import CommitWaiter
from .replica import Replica

# A single fetch answer is capped here whatever the client asks (frames stay bounded).
MAX_FETCH_BYTES = 32 * 1024 * 1024
# Long polls are capped so a stuck client cannot pin a waiter forever.
MAX_WAIT_MS = 60_000


def _records_from(batches: memoryview, offset: int) -> int:
    """Records at or after ``offset`` in whole ``batches`` (the first may start before it):
    headers only, a few per fetch answer."""
    pos, end, last = 0, len(batches), offset - 1
    while pos < end:
        header = peek_header(batches, pos)
        last = header.last_offset
        pos += header.total_size
    return max(0, last + 1 - offset)


class RequestHandlers:
    """Mixed into SpuService; every name not defined here is the service's."""

    # --- lookups and fencing ---
    def _replica(self, topic: str, partition: int) -> Replica:
        replica = self.replicas.get((topic, partition))
        if replica is None:
            raise NotLeader(f"SPU {self.spu_id} holds no replica of {topic}/{partition}")
        return replica

    def leader(self, topic: str, partition: int) -> Replica:
        replica = self._replica(topic, partition)
        if not replica.is_leader:
            raise NotLeader(f"SPU {self.spu_id} is not the leader of {topic}/{partition} (leader: {replica.spec.leader})")
        self._fence(replica)
        return replica

    def _current_snapshot(self):
        """The SC's metadata table as it is now; raises RilletError when it cannot be read."""
        if self._table is None:
            self._table = TableReader.open(self.paths.shm_name)
        # Fast path, every produce: the seqlock word still reads as it did when the
        # snapshot was last checked, so the table was not written since (one 8-byte read
        # instead of the generation's locked read).
        seq = self._table.sequence()
        if seq != self._checked_seq or self._snapshot is None:
            if self._snapshot is None or self._table.generation() != self._snapshot.generation:
                self._snapshot = self._table.snapshot()
            # Read before the check above, so it is never newer than what was checked;
            # odd means a write was under way: check again next time.
            self._checked_seq = -1 if seq & 1 else seq
        return self._snapshot

    def check_follower(self, follower: int, pid: int) -> None:
        """Only the process the SC registered as SPU ``follower`` may fetch as it: its pid
        (SO_PEERCRED) must be the one in the metadata table. Otherwise any client of this user
        could take a follower's place in the in-sync set, and drop it by disconnecting."""
        try:
            row = self._current_snapshot().spu(follower)
        except RilletError as exc:
            raise FollowerRefused(f"cannot check follower SPU {follower} (pid {pid}): metadata table: {exc}") from exc
        if row is None or pid <= 0 or (row.pid != pid and listener_pid(str(self.paths.spu_socket(follower))) != pid):
            # The table lags a restart until the SPU has registered with an SC that published it (a
            # restart while no SC ran, or before a new SC republished): the process serving SPU
            # N's own socket is SPU N too, and a client cannot be that process.
            registered = f"registered as pid {row.pid}" if row is not None and row.pid else "not running"
            raise FollowerRefused(f"pid {pid} may not fetch as follower SPU {follower} (that SPU is {registered})")

    def _fence(self, replica: Replica, *, follower: bool = False) -> None:
        """Refuse if the SC's table names a newer epoch or another leader for this partition.

        Follower fetches are refused only when the leadership moved to another SPU: the SC
        fences a leader it hands over (`cluster spu remove`) by publishing it at the next
        epoch, so producers stop while its followers copy its last records."""
        try:
            self._current_snapshot()
        except RilletError as exc:
            self.log.debug("metadata table unreadable (%s); fencing skipped", exc)
            return
        row = self._snapshot.partition(replica.spec.topic, replica.spec.partition)
        if row is None:
            return
        if follower:
            moved = row.leader != self.spu_id and row.leader_epoch >= replica.spec.leader_epoch
        else:
            moved = row.leader_epoch > replica.spec.leader_epoch or (
                row.leader_epoch == replica.spec.leader_epoch and row.leader != self.spu_id)
        if moved:
            raise StaleLeaderEpoch(
                f"SPU {self.spu_id} leads {replica.name} at epoch {replica.spec.leader_epoch}, but the cluster moved "
                f"to epoch {row.leader_epoch} with leader {row.leader}"
            )

    # --- data plane ---
    def produce(self, req: m.ProduceRequest) -> m.Message | Awaitable[m.Message]:
        replica = self.leader(req.topic, req.partition)
        committed = req.isolation == m.ISOLATION_READ_COMMITTED
        replica.check_can_append(committed)
        base, end = replica.append(req.batches)
        self._offsets_moved()
        if committed and replica.hw < end:     # end: leo, or a duplicate's end (a retry waits for it too)
            # Answered by a callback once the HW reaches ``end`` (or with RequestTimedOut, or the
            # error that fails the replica's waiters): no Task per request.
            return CommitWaiter(replica, req.cid, base, end, max(req.timeout_ms, 1) / 1000)
        return m.ProduceResponse(req.cid, base, replica.leo, replica.hw)

    def fetch(self, req: m.FetchRequest) -> m.Message | Awaitable[m.Message]:
        replica = self.leader(req.topic, req.partition)
        if req.max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be positive, got {req.max_bytes}")
        self._check_offset(replica, req.offset)
        committed = req.isolation == m.ISOLATION_READ_COMMITTED
        if replica.bound(committed) > req.offset or req.max_wait_ms <= 0:
            return self._fetch_now(req, replica, committed)
        return self._fetch_later(req, replica, committed)

    async def _fetch_later(self, req: m.FetchRequest, replica: Replica, committed: bool) -> m.Message:
        await replica.wait_for_data(req.offset, committed, min(req.max_wait_ms, MAX_WAIT_MS) / 1000)
        if self.replicas.get((req.topic, req.partition)) is not replica or not replica.is_leader:
            raise NotLeader(f"SPU {self.spu_id} stopped leading {req.topic}/{req.partition}")
        return self._fetch_now(req, replica, committed)

    def _fetch_now(self, req: m.FetchRequest, replica: Replica, committed: bool) -> m.Message:
        data = replica.read(req.offset, min(req.max_bytes, MAX_FETCH_BYTES), committed)
        if data:
            replica.records_out += _records_from(data, req.offset)
            replica.bytes_out += len(data)
        return m.FetchResponse(req.cid, replica.hw, replica.leo, replica.log.log_start_offset, data)

    def offsets(self, req: m.OffsetsRequest) -> m.Message:
        replica = self.leader(req.topic, req.partition)
        return m.OffsetsResponse(req.cid, replica.log.log_start_offset, replica.hw, replica.leo)

    def report_damage(self, req: m.ReportDamage) -> m.Message:
        """A reader (consumer or follower) found the batch at ``req.offset`` bad: check it now
        instead of at the next scrub. Damage is recorded and reported as the scrub would (the SC
        moves leadership to a whole in-sync copy); the answer is what a read there now gets:
        Ok (whole here), NotLeader (retriable: a whole copy takes over) or RecordsLost."""
        replica = self.leader(req.topic, req.partition)
        self._check_offset(replica, req.offset)
        if replica.damage is None and not replica.log.closed:
            damage = check_at(replica.log, req.offset)
            if damage is not None:
                self.log.warning("%s: a reader found offset %d bad; checked now", replica.name, req.offset)
                self._damaged((req.topic, req.partition), replica, damage)
        replica.read(req.offset, 1, committed=False)         # raises for a damaged offset
        return m.Ok(req.cid)

    @staticmethod
    def _check_offset(replica: Replica, offset: int) -> None:
        start, leo = replica.log.log_start_offset, replica.leo
        if offset < start or offset > leo:
            raise OffsetOutOfRange(
                f"offset {offset} is outside {replica.name}: valid offsets are {start} to {leo}"
            )

    # --- replication, leader side ---
    def follower_fetch(self, req: m.FollowerFetch):
        replica = self._replica(req.topic, req.partition)
        if replica.is_leader:
            self._fence(replica, follower=True)
        replica.follower_fetch(req)
        if replica.leo > req.offset or req.max_wait_ms <= 0:
            return self._follower_answer(req, replica)
        return self._follower_answer_later(req, replica)

    async def _follower_answer_later(self, req: m.FollowerFetch, replica: Replica) -> m.Message:
        # Wake for new records; answer anyway at the end of the poll so the follower
        # learns the high watermark and the leader learns the follower is alive.
        await replica.wait_for_data(req.offset, False, min(req.max_wait_ms, MAX_WAIT_MS) / 1000)
        if not replica.is_leader or replica.spec.leader_epoch != req.leader_epoch:
            raise NotLeader(f"SPU {self.spu_id} stopped leading {replica.name}")
        return self._follower_answer(req, replica)

    def _follower_answer(self, req: m.FollowerFetch, replica: Replica) -> m.Message:
        start = replica.log.log_start_offset
        if req.offset < start:      # retention deleted what it needs: it starts over at our log start
            data = memoryview(b"")
        else:
            data = replica.log.read(req.offset, min(req.max_bytes, MAX_FETCH_BYTES), replica.leo)
        replica.answered_follower(req.follower)
        return m.FollowerFetchResponse(req.cid, replica.hw, replica.leo, data, start)

    def epoch_end_offset(self, req: m.EpochEndOffset) -> m.Message:
        replica = self.leader(req.topic, req.partition)
        if req.leader_epoch != replica.spec.leader_epoch:
            raise StaleLeaderEpoch(f"{replica.name}: asked at epoch {req.leader_epoch}, leader is at {replica.spec.leader_epoch}")
        known = [e for e, _start in replica.log.epochs if e <= req.epoch]
        if not known:
            return m.EpochEndOffsetResponse(req.cid, -1, -1)
        return m.EpochEndOffsetResponse(req.cid, known[-1], replica.log.epoch_end_offset(known[-1]))

    def follower_disconnected(self, follower: int, keys) -> None:
        for key in keys:
            replica = self.replicas.get(key)
            if replica is not None:
                replica.follower_gone(follower)

