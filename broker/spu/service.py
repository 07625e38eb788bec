"""The SPU's replicas: assignment from the SC, damage and repair, and the main loop's actions.

Pure of sockets. The request handlers (produce, fetch, offsets, replication) are in
broker/spu/handlers.py, mixed into SpuService; broker/spu/server.py wires them to
connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time

from rillet.ipc import messages as m
from rillet.ipc.errors import DamagedLog, RilletError, StorageError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import TableReader
from rillet.ipc.transport import FramedProtocol
from rillet.broker.storage.log import PartitionLog
from rillet.broker.storage.scrub import Damage

from .follower import follow
from .handlers import RequestHandlers
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


class SpuService(RequestHandlers):
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


def _remove_set_aside(directory) -> None:
    """Delete the copies of ``directory`` set aside as damaged (``<name>.damaged-<time>``)."""
    for old in directory.parent.glob(f"{directory.name}.damaged-*"):
        shutil.rmtree(old, ignore_errors=True)
