"""The SPU's request handlers: produce, fetch, offsets, replication, and replica assignment.

Pure of sockets: handlers take decoded messages and return answers (or awaitables
for long polls). broker/spu/server.py wires them to connections.

Fencing: before a leader appends or serves a fetch it compares its spec with the
SC's shared-memory metadata table. A leader whose epoch the SC has superseded (it
was paused while a new leader was elected) refuses at once, even before the SC's
new spec reaches it, so no offset is ever given out under a stale epoch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from typing import Awaitable

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    DamagedLog, FollowerRefused, InvalidArgument, NotLeader, OffsetOutOfRange, RilletError, StaleLeaderEpoch,
    StorageError,
)
from rillet.ipc.names import ClusterPaths
from rillet.ipc.records import peek_header
from rillet.ipc.shm import TableReader
from rillet.ipc.transport import FramedProtocol
from rillet.ipc.unix_socket import listener_pid
from rillet.broker.storage.log import PartitionLog
from rillet.broker.storage.scrub import Damage, check_at

from .commit_waiter import CommitWaiter
from .follower import follow
from .loop import EventQueue
from .health import HEALTH_CHECK_S, files_problem
from .hw_checkpoints import HwCheckpoints
from .positions import PositionsPublisher
from .replica import Replica

# The scrub checks at most this much per 0.1 s tick of the SPU (10 MiB/s, or 5,120 batches/s), so
# it never holds the event loop for more than about a millisecond at a time (measured: a 1 MiB slice
# of 16 KiB batches about 1 ms, 512 batches of 100 B about 1 ms: `python -m rillet.tools.bench_scrub`).
SCRUB_BYTES_PER_TICK = 1 << 20
SCRUB_BATCHES_PER_TICK = 512
DEFAULT_SCRUB_INTERVAL_S = 3600.0


def scrub_interval_s(environ=os.environ) -> float:
    """Seconds between scrub passes over a replica: ``RILLET_SCRUB_INTERVAL_S``, default one hour."""
    try:
        value = float(environ.get("RILLET_SCRUB_INTERVAL_S", DEFAULT_SCRUB_INTERVAL_S))
    except ValueError:
        return DEFAULT_SCRUB_INTERVAL_S
    return value if value > 0 else DEFAULT_SCRUB_INTERVAL_S


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


class SpuService:
    def __init__(self, spu_id: int, paths: ClusterPaths, logger: logging.Logger) -> None:
        self.spu_id = spu_id
        self.paths = paths
        self.log = logger
        self.replicas: dict[tuple[str, int], Replica] = {}
        # Replicas this SPU cannot serve whole, with the cause, reported to the SC with every
        # status report (it fails a topic creation with it and shows it in `partition list`).
        self.problems: dict[tuple[str, int], m.ReplicaProblem] = {}
        self._next_health_check = 0.0
        self._followers: dict[tuple[str, int], asyncio.Task] = {}
        self._table: TableReader | None = None
        self._snapshot = None
        self._checked_seq = -1           # the table's seqlock word when _snapshot was last checked
        self.positions = PositionsPublisher(paths, spu_id, logger)
        self.checkpoints = HwCheckpoints(logger)         # HW checkpoints off the event loop
        # What happened, for the SPU's main loop to decide on (broker/spu/loop.py): offsets that
        # moved (a flag, coalesced) and ISR changes (reported at once: the SC elects from them).
        self.events = EventQueue()
        self._offsets_moved = self.events.offsets_moved     # bound once: called per produce
        # Metrics (m.SpuCounters): requests by type, counted by the connections (server.py).
        self.requests: dict[type, int] = {}
        self.leaderships_gained = 0
        self.ring_listener = None        # broker/spu/produce_ring.py RingListener, set by process.py

    # --- assignment from the SC ---
    def apply(self, update: m.UpdateReplicas) -> None:
        led = self._led()
        wanted = {(s.topic, s.partition): s for s in update.replicas}
        for key in list(self.replicas):
            if key not in wanted:
                self._stop_follower(key)
                replica = self.replicas.pop(key)
                self.positions.remove(key)
                try:
                    replica.close()
                except RilletError as exc:        # its files may be gone already (a damaged copy)
                    self.log.info("%s: closing before removal: %s", replica.name, exc)
                shutil.rmtree(self.paths.replica_dir(self.spu_id, *key), ignore_errors=True)
                _remove_set_aside(self.paths.replica_dir(self.spu_id, *key))
                self.log.info("removed replica %s/%d", *key)
        for key in list(self.problems):
            if key not in wanted:
                del self.problems[key]
                if key not in self.replicas:     # a replica never created may have left files
                    shutil.rmtree(self.paths.replica_dir(self.spu_id, *key), ignore_errors=True)
                    _remove_set_aside(self.paths.replica_dir(self.spu_id, *key))
        for key, spec in wanted.items():
            replica = self.replicas.get(key)
            if replica is None:
                if self._open_replica(spec) is not None:
                    self._restart_follower(key)
            else:
                old = (replica.spec.leader, replica.spec.leader_epoch)
                if spec.leader_epoch < old[1]:
                    # An SC whose metadata lags (it lost a write) must not move us back; our
                    # report makes it catch up and send the current spec.
                    self.log.warning("%s: ignoring a spec at epoch %d, older than ours (%d)",
                                     replica.name, spec.leader_epoch, old[1])
                    continue
                replica.update_spec(spec)
                if old != (spec.leader, spec.leader_epoch):
                    self._restart_follower(key)
        self.leaderships_gained += len(self._led() - led)      # metrics
        self._offsets_moved()

    def _led(self) -> set[tuple[str, int]]:
        return {key for key, replica in self.replicas.items() if replica.is_leader}

    def _open_replica(self, spec: m.ReplicaSpec) -> Replica | None:
        """Open (or create) a replica's log; on failure record the cause as a problem, None."""
        key = (spec.topic, spec.partition)
        directory = self.paths.replica_dir(self.spu_id, spec.topic, spec.partition)
        set_aside = None
        try:
            try:
                plog = PartitionLog.open(directory, segment_size=spec.segment_size, logger=self.log)
            except DamagedLog as exc:
                if spec.leader in (-1, self.spu_id):
                    # The leader's copy: nobody to fetch it from. It serves every record up to the
                    # damage (RecordsLost at it; the SC hands leadership to a whole copy if one exists).
                    plog = PartitionLog.open(directory, segment_size=spec.segment_size, logger=self.log,
                                             keep_damaged=True)
                else:
                    plog, set_aside = self._set_aside(spec, directory, exc)
        except RilletError as exc:
            # One damaged replica must not take the SPU's other replicas down with it: this
            # one stays unopened (its partition is not Online here), the log says why, and
            # so does the next status report (the SC fails a topic creation with it).
            self.log.error("replica %s/%d cannot be opened: %s", spec.topic, spec.partition, exc)
            self.problems[key] = m.ReplicaProblem(spec.topic, spec.partition, "cannot-create", str(exc))
            return None
        for cut in plog.recovery_report:
            self.log.warning("replica %s/%d recovery: %s", spec.topic, spec.partition, cut)
        replica = self.replicas[key] = Replica(self.spu_id, spec, plog, self.log, events=self.events,
                                               on_positions=self.positions.publish)
        replica.checkpoints = self.checkpoints
        self.problems.pop(key, None)
        if plog.load_damage:
            replica.damage = Damage(*plog.load_damage[0])
            self.log.error("%s: %s", replica.name, replica.damage.describe())
            self.problems[key] = m.ReplicaProblem(spec.topic, spec.partition, "damaged", replica.damage.describe())
        if set_aside is not None:
            replica.rebuilding = True
            self.problems[key] = m.ReplicaProblem(spec.topic, spec.partition, "rebuilding",
                                                  f"{set_aside}; fetching it again from leader SPU {spec.leader}")
        return replica

    def _set_aside(self, spec: m.ReplicaSpec, directory, exc: DamagedLog) -> tuple[PartitionLog, str]:
        """A follower copy that cannot be opened: keep its files aside as evidence and start an
        empty one, fetched again from the leader. Only the newest set-aside copy is kept (an older
        one goes now), and it goes with the replica: a disk that keeps failing cannot fill up."""
        aside = directory.with_name(f"{directory.name}.damaged-{int(time.time())}")
        _remove_set_aside(directory)
        try:
            directory.rename(aside)
        except OSError as err:
            raise StorageError(f"{exc}; and it cannot be set aside: {err}") from err
        self.log.error("replica %s/%d cannot be opened (%s); its files are kept in %s and it is fetched again "
                       "from leader SPU %d", spec.topic, spec.partition, exc, aside, spec.leader)
        return (PartitionLog.open(directory, segment_size=spec.segment_size, logger=self.log),
                f"{exc} (files kept in {aside.name})")

    # --- replica damage (broker/spu/health.py) ---
    def check_health(self, now: float) -> None:
        """Once a second: look at each replica's files; report damage, rebuild follower copies
        from their leader, and clear a rebuild's problem once it has caught up."""
        if now < self._next_health_check:
            return
        self._next_health_check = now + HEALTH_CHECK_S
        changed = False
        for key, replica in list(self.replicas.items()):
            problem = self.problems.get(key)
            if problem is not None and problem.kind == "rebuilding":
                if not replica.rebuilding:
                    del self.problems[key]
                    self.log.warning("%s: rebuilt from leader SPU %d (leo %d)", replica.name, replica.spec.leader,
                                     replica.leo)
                    changed = True
                continue
            if problem is None or problem.kind == "stalled":      # a stalled copy is whole so far
                cause = files_problem(replica.log.directory, replica.log.active_segment_path)
                if cause is None:
                    continue
                self.log.error("%s: replica damaged: %s", replica.name, cause)
                problem = self.problems[key] = m.ReplicaProblem(replica.spec.topic, replica.spec.partition,
                                                                "missing", cause)
                changed = True
            if not replica.is_leader and replica.spec.leader >= 0:
                self._repair(key, problem)
                changed = True
        if changed:
            self.events.problems_changed()    # the SC moves leadership off a damaged leader copy

    def scrub(self, now: float) -> None:
        """Check sealed segments' CRCs, SCRUB_BYTES_PER_TICK per call over all replicas (called every
        0.1 s): a first pass after each open (an unclean stop included), then every SCRUB_INTERVAL_S,
        and between passes each segment sealed since the last one, soon after it is sealed."""
        budget, batches = SCRUB_BYTES_PER_TICK, SCRUB_BATCHES_PER_TICK
        for key, replica in list(self.replicas.items()):
            if budget <= 0 or batches <= 0:
                break
            scrubber = replica.scrubber
            if replica.damage is not None or replica.log.closed:
                continue
            if now < replica.next_scrub_at and not scrubber.catching_up:
                if not scrubber.unchecked():
                    continue
                scrubber.catch_up()             # sealed since the last pass: check it now
            full_pass = not scrubber.catching_up
            before, started = scrubber.checked_bytes, scrubber.checked_batches
            done, found = scrubber.step(budget, batches)
            budget -= scrubber.checked_bytes - before
            batches -= scrubber.checked_batches - started
            if done and full_pass:
                replica.next_scrub_at = now + scrub_interval_s()
                self.log.debug("%s: scrub pass %d done", replica.name, replica.scrubber.passes)
            if found:
                self._damaged(key, replica, found[0])

    def _damaged(self, key, replica: Replica, damage) -> None:
        """A batch failed its CRC: report it; a follower copy repairs itself from its leader, a
        leader's waits for the SC to hand leadership to a whole copy (or, with none, serves up to it)."""
        replica.damage = damage
        self.log.error("%s: %s", replica.name, damage.describe())
        problem = self.problems[key] = m.ReplicaProblem(replica.spec.topic, replica.spec.partition, "damaged",
                                                        damage.describe())
        if not replica.is_leader and replica.spec.leader >= 0:
            self._repair(key, problem)
        self.events.problems_changed()

    def _repair(self, key, problem: m.ReplicaProblem) -> None:
        """Make a follower copy whole again from its leader: a damaged batch is cut off with
        everything after it and fetched again; a copy whose files went missing is rebuilt."""
        replica = self.replicas[key]
        damage = replica.damage
        if problem.kind == "damaged" and damage is not None:
            self._stop_follower(key)
            try:
                replica.truncate_to(damage.first_offset, "cutting a damaged batch off to fetch it again")
            except RilletError as exc:
                self.log.error("%s: cannot truncate the damaged copy (%s); rebuilding it whole", replica.name, exc)
                self._rebuild(key, problem.cause)
                return
            replica.damage = None
            replica.rebuilding = True
            replica.scrubber.restart()
            self.problems[key] = m.ReplicaProblem(
                replica.spec.topic, replica.spec.partition, "rebuilding",
                f"{problem.cause}; fetching them again from leader SPU {replica.spec.leader}")
            self._restart_follower(key)
        else:
            self._rebuild(key, problem.cause)

    def _rebuild(self, key, cause: str) -> None:
        """Throw this follower copy away and fetch it again from the leader."""
        self._stop_follower(key)
        old = self.replicas.pop(key)
        self.positions.remove(key)
        try:
            old.close()
        except Exception as exc:              # its files are gone: the HW checkpoint cannot be written
            self.log.info("%s: closing the damaged copy: %s", old.name, exc)
        shutil.rmtree(self.paths.replica_dir(self.spu_id, *key), ignore_errors=True)
        replica = self._open_replica(old.spec)
        if replica is None:
            return
        replica.rebuilding = True
        self.problems[key] = m.ReplicaProblem(old.spec.topic, old.spec.partition, "rebuilding",
                                              f"{cause}; fetching it again from leader SPU {old.spec.leader}")
        self.log.warning("%s: %s; rebuilding it from leader SPU %d", old.name, cause, old.spec.leader)
        self._restart_follower(key)

    def _restart_follower(self, key) -> None:
        self._stop_follower(key)
        replica = self.replicas[key]
        problem = self.problems.get(key)
        if (problem is not None and problem.kind in ("missing", "damaged") and not replica.is_leader
                and replica.spec.leader >= 0):
            self._repair(key, problem)          # a damaged leader copy, now a follower
            return
        if not replica.is_leader and replica.spec.leader >= 0:
            self._followers[key] = asyncio.ensure_future(follow(
                replica, self.paths, self.log, self._offsets_moved,
                on_stalled=lambda cause, key=key: self._follower_stalled(key, cause)))

    def _follower_stalled(self, key, cause: str | None) -> None:
        """A follower's leader holds its next records damaged with no whole copy (cause), or it
        fetches again (None): a problem in ``partition list`` while it lasts."""
        problem = self.problems.get(key)
        if cause is not None and problem is None:
            self.log.error("%s/%d: follower stalled: %s", *key, cause)
            self.problems[key] = m.ReplicaProblem(key[0], key[1], "stalled", cause)
        elif cause is None and problem is not None and problem.kind == "stalled":
            self.log.warning("%s/%d: follower fetching again", *key)
            del self.problems[key]
        else:
            return
        self.events.problems_changed()

    def _stop_follower(self, key) -> None:
        task = self._followers.pop(key, None)
        if task is not None:
            task.cancel()

    # --- actions of the SPU's main loop (broker/spu/loop.py carries them out) ---
    def status_report(self, cid: int) -> m.StatusReport:
        return m.StatusReport(cid, self.statuses(), list(self.problems.values()), self.counters())

    def counters(self) -> m.SpuCounters:
        slots = FramedProtocol.slots
        return m.SpuCounters(connections=len(slots.open), requests={t.__name__: n for t, n in self.requests.items()},
                             errors=dict(slots.errors), leaderships_gained=self.leaderships_gained)

    def statuses(self) -> list[m.ReplicaStatus]:
        return [r.status() for r in self.replicas.values()]

    def checkpoint_hws(self, now: float) -> None:
        for replica in self.replicas.values():
            try:
                replica.save_hw(now=now)
            except RilletError as exc:
                self.log.warning("%s: cannot checkpoint the high watermark: %s", replica.name, exc)

    def release_hw(self, key: tuple[str, int]) -> None:
        """The SC has been told of this replica's ISR change: its HW may move with the new set."""
        replica = self.replicas.get(key)
        if replica is not None:
            replica.release_hw()

    def quiet(self, now: float) -> bool:
        """Nothing needs the control loop's pass every 0.1 s (``decide``'s ``quiet``): no
        replica leads followers (ISR expiry), flushes on an interval, or has a scrub slice
        to check now. The file checks are once a second and ride on the heartbeats."""
        for replica in self.replicas.values():
            if replica.leader_state is not None or replica.spec.flush == "interval":
                return False
            if replica.damage is not None or replica.log.closed:
                continue
            scrubber = replica.scrubber
            if now >= replica.next_scrub_at or scrubber.catching_up or scrubber.unchecked():
                return False
        return True

    def expire(self, now: float) -> None:
        for replica in self.replicas.values():
            replica.expire(now)

    def flush_due(self, now: float) -> None:
        for replica in self.replicas.values():
            try:
                replica.flush_if_due(now)
            except RilletError as exc:
                self.log.error("%s: flush failed: %s", replica.name, exc)

    def apply_retention(self, now_ms: int) -> None:
        for replica in self.replicas.values():
            try:
                if replica.apply_retention(now_ms):
                    self._offsets_moved()
            except RilletError as exc:
                self.log.warning("%s: retention failed: %s", replica.name, exc)

    def close(self) -> None:
        for key in list(self._followers):
            self._stop_follower(key)
        for replica in self.replicas.values():
            try:
                replica.close()
            except Exception:
                self.log.exception("closing replica %s failed", replica.name)
        self.replicas.clear()
        self.checkpoints.close()
        self.positions.close()
        if self._table is not None:
            self._table.close()

    def reopen_table(self) -> None:
        """Map the metadata table afresh at the next fence (a restarted SC made a new one)."""
        if self._table is not None:
            self._table.close()
        self._table = self._snapshot = None
        self._checked_seq = -1

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


def _remove_set_aside(directory) -> None:
    """Delete the copies of ``directory`` set aside as damaged (``<name>.damaged-<time>``)."""
    for old in directory.parent.glob(f"{directory.name}.damaged-*"):
        shutil.rmtree(old, ignore_errors=True)
