"""SC process: ``python -m rillet.broker.sc --cluster NAME --home DIR [--spus N | --restarted]``.

The streaming controller owns the cluster metadata (persisted under the data dir),
is the only writer of the shared-memory metadata table, answers admin requests on
its Unix socket (the handlers: broker/sc/admin.py), and spawns one OS process per SPU.
Each SPU keeps a control connection open to it; that connection closing is how the SC
learns, within milliseconds, that an SPU died (psutil then confirms and the process is
reaped).

The SC is run by a supervisor (broker/supervisor.py) that starts it again when it
dies. A starting SC adopts the SPU processes already running (they keep serving
while no SC is there and reconnect to the new one): it holds elections until they
have reported, or ADOPT_WAIT_S passed, so it never elects before it knows every live
replica's data. ``--restarted`` (the supervisor's restarts) leaves SPUs without a
process dead, as an SC that stays up would; a plain start (`cluster start`) starts
them, after the elections.

Every decision is taken by ``reconcile.reconcile(state, observation)``; this module
observes, calls it, and carries out what it returns (``Controller.reconcile_now``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Callable

import psutil

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    ClusterNotRunning, InvalidArgument, MetadataTableError, ProtocolError, SharedMemoryRefused, SpuNotFound,
)
from rillet.ipc.metadata_table import TableLayout
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import SharedTable, unlink_if_exists
from rillet.ipc.transport import FramedProtocol, prepare_runtime_dir, start_unix_server

from rillet.broker import launcher

from . import reconcile
from .admin import AdminHandlers
from .reconcile import Observation, SpuObserved
from . import metrics
from .live import LivePositions
from .metrics_http import MetricsEndpoint
from .stats import ScStats
from .connectors import Connectors
from .membership import Membership
from .offsets import ConsumerOffsetStore
from .smartmodules import SmartModuleStore
from .processes import SpuProcesses
from .state import ClusterState, load_state, save_state

SPU_STOP_TIMEOUT_S = 5.0
# An SPU silent this long (no heartbeat: paused with SIGSTOP, or hung) is treated as dead
# and its partitions get new leaders. A dead process is noticed at once, from its socket.
SPU_TIMEOUT_S = 1.5
# A starting SC waits at most this long for the SPUs it found running to re-register
# before it holds elections without them (they retry every 0.2 s at most).
ADOPT_WAIT_S = 2.0


class ScConnection(FramedProtocol):
    """An admin client or an SPU's control link; RegisterSpu turns it into the latter."""

    server_name = "sc"

    def __init__(self, sc: "Controller") -> None:
        super().__init__(sc.log)
        self.sc = sc
        self.spu_id: int | None = None

    def dispatch(self, msg):
        if self.spu_id is not None:
            self.sc.heard_from(self.spu_id)
        if isinstance(msg, m.RegisterSpu):
            return self.sc.register_spu(self, msg)
        if isinstance(msg, m.StatusReport):
            if self.spu_id is None:
                raise ProtocolError("StatusReport before RegisterSpu")
            self.sc.on_status(self.spu_id, msg)
            return None
        handler = self.sc.admin_routes.get(type(msg))
        if handler is None:
            raise ProtocolError(f"SC does not handle {type(msg).__name__}")
        return handler(msg)

    def on_closed(self) -> None:
        if self.spu_id is not None:
            self.sc.spu_disconnected(self.spu_id, self)


class Controller(AdminHandlers):
    def __init__(self, paths: ClusterPaths, log: logging.Logger, *, spawn_missing: bool = True) -> None:
        self.paths = paths
        self.log = log
        self.state: ClusterState = load_state(paths.metadata_file)
        self.observed: dict[int, SpuObserved] = {s: SpuObserved(s) for s in self.state.spus}
        self.sessions: dict[int, ScConnection] = {}
        self.processes = SpuProcesses(paths, log)
        self.live = LivePositions(paths, log)
        self.stats = ScStats()                  # elections, SPU deaths (broker/sc/stats.py)
        self.metrics = MetricsEndpoint(paths.sc_dir, lambda: metrics.renderer(self), log)
        self.awaiting: set[int] = set()                       # adopted SPUs that have not reported yet
        self.adopt_deadline = 0.0
        self.spawn_missing = spawn_missing
        self._last_reconcile = 0.0
        self.table: SharedTable | None = None
        self.stop = asyncio.Event()
        self.stopping = False            # SPUs leave because we asked: no elections, no ISR changes
        self._changed = asyncio.Event()
        self._last_rows = None
        self._cids = iter(range(1, 1 << 62))
        self.admin_routes: dict[type, Callable] = {
            m.CreateTopic: self.create_topic,
            m.DeleteTopic: self.delete_topic,
            m.UpdateTopic: self.update_topic,
            m.AddPartitions: self.add_partitions,
            m.ListTopics: self.list_topics,
            m.ListPartitions: self.list_partitions,
            m.ListSpus: self.list_spus,
            m.ClusterStatusRequest: self.cluster_status,
            m.ShutdownCluster: self.shutdown_cluster,
            m.StartSpu: self.start_spu,
        }
        self.offsets = ConsumerOffsetStore(paths.sc_dir / "consumer-offsets.log", topic_partitions=lambda t: len(self.state.topics[t].partitions) if t in self.state.topics else None)
        self.admin_routes.update(self.offsets.routes())
        self.admin_routes[m.ListConsumerOffsets] = self.list_consumer_offsets     # with each partition's HW
        self.smartmodules = SmartModuleStore(paths.sc_dir / "smartmodules")
        self.admin_routes.update(self.smartmodules.routes())
        self.membership = Membership(self)
        self.admin_routes.update(self.membership.routes())
        self.connectors = Connectors(self)
        self.admin_routes.update(self.connectors.routes())

    # --- lifecycle ---
    def ensure_spus(self, count: int | None) -> None:
        if not self.state.spus:
            count = count or 1
        if count is None or count <= len(self.state.spus):
            if count is not None and count < len(self.state.spus):
                self.log.warning("cluster has %d SPUs; --spus %d ignored (remove SPUs with rillet cluster spu remove)",
                                 len(self.state.spus), count)
            return
        start = max(self.state.spus, default=reconcile.FIRST_SPU_ID - 1) + 1
        for spu_id in range(start, start + count - len(self.state.spus)):
            self.state.spus.append(spu_id)
            self.observed[spu_id] = SpuObserved(spu_id)
        save_state(self.paths.metadata_file, self.state)

    def adopt(self, running: dict[int, psutil.Process]) -> None:
        """Take over SPU processes that outlived the previous SC (same pids, not restarted):
        elections wait until they have reported, or ADOPT_WAIT_S."""
        for spu_id, proc in running.items():
            if spu_id in self.observed:
                self.processes.adopt(spu_id, proc)
                self.awaiting.add(spu_id)
            else:
                self.log.warning("SPU process %d claims id %d, unknown to this cluster; ignored", proc.pid, spu_id)
        self.adopt_deadline = time.monotonic() + ADOPT_WAIT_S

    # --- the table ---
    def create_table(self) -> None:
        """Take over the table of the SC before us, or create one.

        Taking over keeps the object every client and SPU already maps: they see our
        first write as one more generation. No other SC of this cluster may live for that
        (by pid file and command line; the pid recorded in the table may have been
        reused). A table that cannot be taken over (another layout) is replaced; then the
        registered SPUs re-open it (they do on every assignment) and clients must too.
        """
        name, layout = self.paths.shm_name, TableLayout()
        self._last_rows = None
        if launcher.sc_pid(self.paths) in (None, os.getpid()):
            try:
                self.table = SharedTable.attach(name, layout, os.getpid())
                self.log.info("took over metadata table %s", name)
                return
            except SharedMemoryRefused:
                raise
            except (ClusterNotRunning, MetadataTableError) as exc:
                self.log.info("metadata table %s not taken over (%s); creating it", name, exc)
                unlink_if_exists(name)
        self.table = SharedTable.create(name, layout, os.getpid())
        self.push_assignments(list(self.sessions))

    def publish(self) -> None:
        spus, rows = reconcile.table_rows(self.state, self.observed)
        key = (tuple(spus), tuple(rows))
        if key != self._last_rows and self.table is not None:
            self.table.write(spus, rows)
            self._last_rows = key
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass
        return True

    # --- SPU control plane ---
    def register_spu(self, conn: ScConnection, msg: m.RegisterSpu):
        if msg.spu_id not in self.state.spus:
            raise SpuNotFound(f"SPU {msg.spu_id} is not part of cluster {self.paths.cluster}")
        old = self.sessions.get(msg.spu_id)
        if old is not None and old is not conn:
            if self.observed[msg.spu_id].pid != msg.pid:
                raise InvalidArgument(f"SPU {msg.spu_id} is already registered (pid {self.observed[msg.spu_id].pid})")
            # The same process reconnected before we saw its old link close: the new link wins.
            del self.sessions[msg.spu_id]
            if old.transport is not None:
                old.transport.close()
        conn.spu_id = msg.spu_id
        self.sessions[msg.spu_id] = conn
        self.stats.spu_back(msg.spu_id)
        self.observed[msg.spu_id] = SpuObserved(msg.spu_id, pid=msg.pid, online=True, last_seen=time.monotonic())
        self.log.info("SPU %d registered (pid %d)%s", msg.spu_id, msg.pid,
                      " (adopted)" if msg.spu_id in self.awaiting else "")
        self.reconcile_now()
        return m.UpdateReplicas(msg.cid, reconcile.replica_specs_for(self.state, msg.spu_id))

    def heard_from(self, spu_id: int) -> None:
        obs = self.observed.get(spu_id)
        if obs is None:
            return
        obs.last_seen = time.monotonic()
        if not obs.online and spu_id in self.sessions:
            # It was silent past the timeout (paused) and is back: it may have been
            # superseded meanwhile, so it gets its current assignment again.
            self.log.warning("SPU %d is responsive again", spu_id)
            obs.online = True
            self.push_assignments([spu_id])
            self.reconcile_now()

    async def liveness_loop(self) -> None:
        """Reconcile at least every 0.1 s: silent SPUs are declared dead (SIGSTOP, a hang),
        the adoption wait ends. Keep a supervisor alive."""
        while not self.stop.is_set():
            self.processes.reap()
            self.reconcile_now("periodic")
            if not self.stopping:
                self.processes.keep_supervisor(time.monotonic())
                self.connectors.tick(time.monotonic())
            await asyncio.sleep(0.1)

    def _forgive_own_pause(self, now: float) -> None:
        """Reconcile runs every 0.1 s; a longer gap means this SC was itself paused (SIGSTOP)
        or starved, and the SPUs' silence is ours. Judge them afresh from now on. This runs
        before any decision: the first message read after a pause must not make the SC
        declare every other SPU dead."""
        if self._last_reconcile and now - self._last_reconcile > SPU_TIMEOUT_S:
            self.log.warning("SC was paused for %.1f s; not counting it against the SPUs", now - self._last_reconcile)
            for obs in self.observed.values():
                obs.last_seen = max(obs.last_seen, now)
        self._last_reconcile = now

    def update_awaiting(self, now: float) -> None:
        """Adopted SPUs leave the wait once reported, once dead, or when the wait ends."""
        for spu_id in list(self.awaiting):
            obs = self.observed[spu_id]
            if (obs.online and obs.replicas_reported) or not self.processes.adopted_running(spu_id):
                self.awaiting.discard(spu_id)
        if self.awaiting and now >= self.adopt_deadline:
            self.log.warning("SPUs %s did not re-register within %.1f s; electing without them",
                             sorted(self.awaiting), ADOPT_WAIT_S)
            self.awaiting.clear()

    def observation(self) -> Observation:
        return Observation(
            spus=self.observed, now=time.monotonic(), spu_timeout_s=SPU_TIMEOUT_S, stopping=self.stopping,
            awaiting=frozenset(self.awaiting),
            # only needed to start missing SPUs: not looked up on every report
            running=frozenset(s for s in self.state.spus if self.processes.running(s)) if self.spawn_missing else frozenset(),
            spawn_missing=self.spawn_missing,
        )

    def reconcile_now(self, trigger: str = "event") -> None:
        """Decide (reconcile.reconcile), then act: mark, persist, push, publish, spawn.
        ``trigger`` (stats.RECONCILE_TRIGGERS) only counts the pass, for the metrics."""
        self.stats.reconciles[trigger] += 1
        self._forgive_own_pause(time.monotonic())
        self.update_awaiting(time.monotonic())
        obs = self.observation()
        actions = reconcile.reconcile(self.state, obs)
        for spu_id in actions.silent:
            o = self.observed[spu_id]
            self.log.warning("SPU %d silent for %.1f s; treating it as dead", spu_id, obs.now - o.last_seen)
            o.online = False
            o.replicas = {}
            o.problems = {}
            self.stats.spu_lost(spu_id, o.last_seen)
        if actions.updates:
            before = {(u.topic, u.partition): self.state.topics[u.topic].partitions[u.partition].leader
                      for u in actions.updates}
            reconcile.apply_updates(self.state, actions.updates)
            save_state(self.paths.metadata_file, self.state)
            for u in actions.updates:
                log = self.log.warning if "elected" in u.reason else self.log.info
                log("%s/%d: %s: leader SPU %d, epoch %d, in-sync %s",
                    u.topic, u.partition, u.reason, u.leader, u.leader_epoch, list(u.in_sync))
                if "elected" in u.reason:
                    self.stats.elected(before[(u.topic, u.partition)], obs.now)
        self.push_assignments(actions.push)
        self.publish()
        for spu_id in actions.spawn:
            self.processes.spawn(spu_id)
        if obs.spawn_missing and not obs.awaiting:
            self.spawn_missing = False       # once, at start: later deaths are not restarted by the SC

    def on_status(self, spu_id: int, msg: m.StatusReport) -> None:
        """Store the report; reconcile only when it changes what a decision reads. Heartbeats
        repeat the last report every 0.25 s, and offsets move on every produce: neither
        changes a decision, and the 0.1 s periodic pass still runs (reconcile.decides_alike)."""
        obs = self.observed[spu_id]
        if not obs.online or self.stopping:
            return
        self.stats.status_reports += 1
        replicas = {(r.topic, r.partition): r for r in msg.replicas}
        problems = {(p.topic, p.partition): p for p in msg.problems}
        alike = reconcile.decides_alike(obs, replicas, problems)
        obs.replicas, obs.problems, obs.counters = replicas, problems, msg.counters
        obs.replicas_reported = True
        if alike:
            self._changed.set()      # waiters on offsets (spu remove's copy check) look again now
        else:
            self.reconcile_now("status-report")

    def spu_disconnected(self, spu_id: int, conn: ScConnection) -> None:
        if self.sessions.get(spu_id) is not conn:
            return
        del self.sessions[spu_id]
        obs = self.observed[spu_id]
        if obs.online and not self.stopping:
            self.stats.spu_lost(spu_id, time.monotonic())
        obs.online = False
        obs.replicas = {}
        obs.problems = {}
        alive = obs.pid and psutil.pid_exists(obs.pid) and _not_zombie(obs.pid)
        if self.stopping:
            self.log.info("SPU %d stopped", spu_id)
        else:
            self.log.warning("SPU %d control link closed (process %s)", spu_id, "still alive" if alive else "gone")
        self.reconcile_now()

    def push_assignments(self, spu_ids) -> None:
        for spu_id in spu_ids:
            conn = self.sessions.get(spu_id)
            if conn is not None:
                conn.send(m.UpdateReplicas(next(self._cids), reconcile.replica_specs_for(self.state, spu_id)))

    # --- shutdown ---
    async def stop_spus(self) -> None:
        self.stopping = True
        for conn in list(self.sessions.values()):
            conn.send(m.Shutdown(next(self._cids)))
        self.processes.terminate_unregistered(except_ids=set(self.sessions))
        deadline = time.monotonic() + SPU_STOP_TIMEOUT_S
        while self.processes.any_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.processes.kill_all(why=f"did not stop in {SPU_STOP_TIMEOUT_S:.0f} s")


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def run_sc(paths: ClusterPaths, spus: int | None, log: logging.Logger, *, restarted: bool = False) -> int:
    loop = asyncio.get_running_loop()
    sc = Controller(paths, log, spawn_missing=not restarted)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sc.stop.set)
    sc.ensure_spus(spus)
    sc.adopt(launcher.live_spus(paths))
    sc.connectors.adopt(launcher.cluster_processes(paths, modules=(launcher.CONNECTOR,)))
    prepare_runtime_dir(paths.runtime_dir)
    server = liveness = None
    try:
        server = await start_unix_server(lambda: ScConnection(sc), paths.sc_socket)
        await sc.metrics.start()         # before the table: `cluster start` shows the URL once ready
        paths.sc_pid_file.write_text(f"{os.getpid()}\n")
        liveness = asyncio.ensure_future(sc.liveness_loop())
        log.info("SC for cluster %s ready on %s", paths.cluster, paths.sc_socket)
        if sc.awaiting:
            # Adopting: the previous SC's table (frozen, but naming the leaders that still
            # serve) stays up until the new one can say as much, so clients see no gap.
            await sc.wait_until(lambda: not sc.awaiting, ADOPT_WAIT_S + 1)
        sc.create_table()
        sc.reconcile_now()               # publishes; spawns the SPUs that have no process (a plain start)
        await sc.stop.wait()
        log.info("SC shutting down")
        await sc.connectors.stop_all()       # first: sinks flush their offsets to us on the way out
        server.close()
        await sc.stop_spus()
        liveness.cancel()
    finally:
        if server is not None:
            server.close()
        sc.connectors.kill_all()
        sc.processes.kill_all()
        sc.processes.stop_following_supervisor()
        if liveness is not None:
            liveness.cancel()
        sc.metrics.close()
        sc.offsets.close()
        sc.live.close()
        if sc.table is not None:
            sc.table.close()
            sc.table.unlink()
        paths.sc_socket.unlink(missing_ok=True)
        for spu_id in sc.state.spus:
            paths.spu_socket(spu_id).unlink(missing_ok=True)
            paths.spu_ring_socket(spu_id).unlink(missing_ok=True)
        try:
            paths.runtime_dir.rmdir()
        except OSError:
            pass
        paths.sc_pid_file.unlink(missing_ok=True)
        log.info("SC stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rillet-sc", description="run the rillet SC (started by `rillet cluster start`)")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--spus", type=int, default=None)
    parser.add_argument("--restarted", action="store_true",
                        help="started again by the supervisor: adopt running SPUs, start no missing ones")
    parser.add_argument("--standby", action="store_true",
                        help="wait, imports done, until the supervisor writes 'go' on stdin (EOF: exit)")
    args = parser.parse_args(argv)
    os.umask(0o077)     # logs, pid file, data and checkpoints: this user's only
    if args.standby and sys.stdin.readline().strip() != "go":
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s sc %(levelname)s %(message)s")
    paths = ClusterPaths.for_cluster(args.cluster, args.home)
    paths.sc_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_sc(paths, args.spus, logging.getLogger("sc"), restarted=args.restarted))
