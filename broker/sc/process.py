"""SC process: ``python -m rillet.broker.sc --cluster NAME --home DIR [--spus N]``.

The streaming controller owns the cluster metadata (persisted under the data dir),
is the only writer of the shared-memory metadata table, answers admin requests on
its Unix socket, and spawns one OS process per SPU. Each SPU keeps a control
connection open to it; that connection closing is how the SC learns, within
milliseconds, that an SPU died (psutil then confirms and the process is reaped).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import psutil

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    InvalidArgument, ProtocolError, RequestTimedOut, SpuNotFound, TopicAlreadyExists, TopicNotFound,
)
from rillet.ipc.metadata_table import PartitionStatus, SpuStatus, TableLayout
from rillet.ipc.names import ClusterPaths, validate_name
from rillet.ipc.shm import SharedTable
from rillet.ipc.transport import FramedProtocol, prepare_runtime_dir, start_unix_server

from . import reconcile
from .reconcile import SpuObserved
from .offsets import ConsumerOffsetStore
from .state import ClusterState, load_state, save_state

SPU_STOP_TIMEOUT_S = 5.0
# An SPU silent this long (no heartbeat: paused with SIGSTOP, or hung) is treated as dead
# and its partitions get new leaders. A dead process is noticed at once, from its socket.
SPU_TIMEOUT_S = 1.5


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


class Controller:
    def __init__(self, paths: ClusterPaths, log: logging.Logger) -> None:
        self.paths = paths
        self.log = log
        self.state: ClusterState = load_state(paths.metadata_file)
        self.observed: dict[int, SpuObserved] = {s: SpuObserved(s) for s in self.state.spus}
        self.sessions: dict[int, ScConnection] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.table: SharedTable | None = None
        self.stop = asyncio.Event()
        self.stopping = False            # SPUs leave because we asked: no elections, no ISR changes
        self._changed = asyncio.Event()
        self._last_rows = None
        self._cids = iter(range(1, 1 << 62))
        self.admin_routes: dict[type, Callable] = {
            m.CreateTopic: self.create_topic,
            m.DeleteTopic: self.delete_topic,
            m.ListTopics: self.list_topics,
            m.ListPartitions: self.list_partitions,
            m.ListSpus: self.list_spus,
            m.ClusterStatusRequest: self.cluster_status,
            m.ShutdownCluster: self.shutdown_cluster,
            m.StartSpu: self.start_spu,
        }
        self.offsets = ConsumerOffsetStore(paths.sc_dir / "consumer-offsets.log", topic_partitions=lambda t: len(self.state.topics[t].partitions) if t in self.state.topics else None)
        self.admin_routes.update(self.offsets.routes())

    # --- lifecycle ---
    def ensure_spus(self, count: int | None) -> None:
        if not self.state.spus:
            count = count or 1
        if count is None or count <= len(self.state.spus):
            if count is not None and count < len(self.state.spus):
                self.log.warning("cluster has %d SPUs; --spus %d ignored (removing SPUs is not supported)",
                                 len(self.state.spus), count)
            return
        start = max(self.state.spus, default=reconcile.FIRST_SPU_ID - 1) + 1
        for spu_id in range(start, start + count - len(self.state.spus)):
            self.state.spus.append(spu_id)
            self.observed[spu_id] = SpuObserved(spu_id)
        save_state(self.paths.metadata_file, self.state)

    def spawn_spu(self, spu_id: int) -> None:
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.paths.spu_log_file(spu_id), "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rillet.broker.spu", "--cluster", self.paths.cluster,
                 "--home", str(self.paths.home), "--spu-id", str(spu_id)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, close_fds=True,
            )
        self.procs[spu_id] = proc
        self.log.info("spawned SPU %d as pid %d", spu_id, proc.pid)

    def spu_running(self, spu_id: int) -> bool:
        proc = self.procs.get(spu_id)
        return proc is not None and proc.poll() is None

    async def reap_loop(self) -> None:
        """Reap exited SPU processes (the control link already told us they died)."""
        while not self.stop.is_set():
            for spu_id, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    self.procs.pop(spu_id, None)
                    self.log.warning("SPU %d (pid %d) exited with code %s", spu_id, proc.pid, code)
            await asyncio.sleep(0.1)

    # --- the table ---
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
            raise InvalidArgument(f"SPU {msg.spu_id} is already registered")
        conn.spu_id = msg.spu_id
        self.sessions[msg.spu_id] = conn
        self.observed[msg.spu_id] = SpuObserved(msg.spu_id, pid=msg.pid, online=True, last_seen=time.monotonic())
        self.log.info("SPU %d registered (pid %d)", msg.spu_id, msg.pid)
        self.run_elections()
        self.publish()
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
            self.run_elections()
            self.publish()

    async def liveness_loop(self) -> None:
        """Declare silent SPUs dead (SIGSTOP, a hang): their partitions are re-elected."""
        while not self.stop.is_set():
            now = time.monotonic()
            for spu_id, obs in self.observed.items():
                if self.stopping:
                    break
                if obs.online and spu_id in self.sessions and now - obs.last_seen > SPU_TIMEOUT_S:
                    self.log.warning("SPU %d silent for %.1f s; treating it as dead", spu_id, now - obs.last_seen)
                    obs.online = False
                    obs.replicas = {}
                    self.run_elections()
                    self.publish()
            await asyncio.sleep(0.1)

    def run_elections(self) -> None:
        """Give every partition whose leader is gone a new leader from its ISR (decide, then act)."""
        decided = reconcile.elections(self.state, self.observed)
        if not decided:
            return
        touched = set()
        for e in decided:
            p = self.state.topics[e.topic].partitions[e.partition]
            p.leader, p.leader_epoch, p.in_sync = e.leader, p.leader_epoch + 1, list(e.in_sync)
            touched.update(p.replicas)
            self.log.warning("elected SPU %d leader of %s/%d at epoch %d (in-sync %s)",
                             e.leader, e.topic, e.partition, p.leader_epoch, list(e.in_sync))
        save_state(self.paths.metadata_file, self.state)
        self.push_assignments(s for s in touched if self.observed.get(s) and self.observed[s].online)

    def on_status(self, spu_id: int, msg: m.StatusReport) -> None:
        obs = self.observed[spu_id]
        if not obs.online or self.stopping:
            return
        obs.replicas = {(r.topic, r.partition): r for r in msg.replicas}
        changed = False
        for r in msg.replicas:
            topic = self.state.topics.get(r.topic)
            if topic is None or r.partition >= len(topic.partitions) or not r.is_leader:
                continue
            p = topic.partitions[r.partition]
            if p.leader == spu_id and p.leader_epoch == r.leader_epoch and sorted(r.in_sync) != sorted(p.in_sync):
                self.log.info("%s/%d in-sync replicas: %s -> %s", r.topic, r.partition, p.in_sync, r.in_sync)
                p.in_sync = sorted(r.in_sync)
                changed = True
        if changed:
            save_state(self.paths.metadata_file, self.state)
        self.publish()

    def spu_disconnected(self, spu_id: int, conn: ScConnection) -> None:
        if self.sessions.get(spu_id) is not conn:
            return
        del self.sessions[spu_id]
        obs = self.observed[spu_id]
        obs.online = False
        obs.replicas = {}
        alive = obs.pid and psutil.pid_exists(obs.pid) and _not_zombie(obs.pid)
        if self.stopping:
            self.log.info("SPU %d stopped", spu_id)
        else:
            self.log.warning("SPU %d control link closed (process %s)", spu_id, "still alive" if alive else "gone")
            self.run_elections()
        self.publish()

    def push_assignments(self, spu_ids) -> None:
        for spu_id in spu_ids:
            conn = self.sessions.get(spu_id)
            if conn is not None:
                conn.send(m.UpdateReplicas(next(self._cids), reconcile.replica_specs_for(self.state, spu_id)))

    # --- admin ---
    async def create_topic(self, msg: m.CreateTopic):
        name = validate_name(msg.name, "topic")
        if name in self.state.topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        config = reconcile.validate_config(msg.config, len(self.state.spus))
        topic = reconcile.new_topic(self.state, name, config, int(time.time() * 1000))
        self.state.topics[name] = topic
        save_state(self.paths.metadata_file, self.state)
        self.push_assignments({s for p in topic.partitions for s in p.replicas})
        self.publish()
        self.log.info("created topic %s with %d partitions", name, config.partitions)
        online = await self.wait_until(lambda: self._topic_online(name), msg.timeout_ms / 1000)
        if not online:
            raise RequestTimedOut(f"topic {name!r} was created but not every partition was Online within {msg.timeout_ms} ms")
        return m.Ok(msg.cid)

    def _topic_online(self, name: str) -> bool:
        topic = self.state.topics.get(name)
        return topic is not None and all(
            reconcile.partition_status(name, p, self.observed) == PartitionStatus.ONLINE for p in topic.partitions
        )

    def delete_topic(self, msg: m.DeleteTopic):
        topic = self.state.topics.pop(msg.name, None)
        if topic is None:
            raise TopicNotFound(f"Topic not found: {msg.name}")
        save_state(self.paths.metadata_file, self.state)
        self.offsets.forget_topic(msg.name)
        self.push_assignments({s for p in topic.partitions for s in p.replicas})
        self.publish()
        self.log.info("deleted topic %s", msg.name)
        return m.Ok(msg.cid)

    def _status_label(self, topic: str) -> str:
        return "provisioned" if self._topic_online(topic) else "pending"

    def list_topics(self, msg: m.ListTopics):
        names = msg.names or sorted(self.state.topics)
        missing = [n for n in names if n not in self.state.topics]
        if missing:
            raise TopicNotFound(f"Topic not found: {missing[0]}")
        return m.TopicList(msg.cid, [
            m.TopicInfo(n, self.state.topics[n].config, self._status_label(n)) for n in names
        ])

    def list_partitions(self, msg: m.ListPartitions):
        names = msg.topics or sorted(self.state.topics)
        out = []
        for name in names:
            topic = self.state.topics.get(name)
            if topic is None:
                raise TopicNotFound(f"Topic not found: {name}")
            for p in topic.partitions:
                status = reconcile.partition_status(name, p, self.observed)
                report = reconcile.leader_report(name, p, self.observed)
                out.append(m.PartitionInfo(
                    topic=name, partition=p.partition, leader=p.leader, leader_epoch=p.leader_epoch,
                    replicas=list(p.replicas), in_sync=list(report.in_sync) if report else [],
                    status=status.label, hw=report.hw if report else -1, leo=report.leo if report else -1,
                    log_start=report.log_start if report else -1, size_bytes=report.size_bytes if report else -1,
                    flushes=report.flushes if report else 0,
                ))
        return m.PartitionList(msg.cid, out)

    def list_spus(self, msg: m.ListSpus):
        out = []
        for spu_id in sorted(self.state.spus):
            obs = self.observed.get(spu_id)
            status = SpuStatus.ONLINE if obs and obs.online else SpuStatus.OFFLINE
            leaders = sum(1 for t in self.state.topics.values() for p in t.partitions if p.leader == spu_id)
            replicas = sum(1 for t in self.state.topics.values() for p in t.partitions if spu_id in p.replicas)
            out.append(m.SpuInfo(spu_id, f"spu-{spu_id}", status.label, obs.pid if obs and obs.online else 0,
                                 str(self.paths.spu_socket(spu_id)), leaders, replicas))
        return m.SpuList(msg.cid, out)

    def cluster_status(self, msg: m.ClusterStatusRequest):
        parts = [(n, p) for n, t in self.state.topics.items() for p in t.partitions]
        online = sum(1 for n, p in parts if reconcile.partition_status(n, p, self.observed) == PartitionStatus.ONLINE)
        return m.ClusterStatus(
            msg.cid, self.paths.cluster, os.getpid(), sum(1 for o in self.observed.values() if o.online),
            len(self.state.spus), len(self.state.topics), online, len(parts),
        )

    def shutdown_cluster(self, msg: m.ShutdownCluster):
        asyncio.get_running_loop().call_soon(self.stop.set)
        return m.Ok(msg.cid)

    async def start_spu(self, msg: m.StartSpu):
        if msg.spu_id not in self.state.spus:
            raise SpuNotFound(f"SPU {msg.spu_id} is not part of cluster {self.paths.cluster}")
        if not self.spu_running(msg.spu_id):
            self.spawn_spu(msg.spu_id)
        await self.wait_until(lambda: self.observed[msg.spu_id].online, 10.0)
        return m.Ok(msg.cid)

    # --- shutdown ---
    async def stop_spus(self) -> None:
        self.stopping = True
        for conn in list(self.sessions.values()):
            conn.send(m.Shutdown(next(self._cids)))
        deadline = time.monotonic() + SPU_STOP_TIMEOUT_S
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for spu_id, proc in self.procs.items():
            if proc.poll() is None:
                self.log.warning("SPU %d did not stop in %.0f s; killing it", spu_id, SPU_STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
        self.procs.clear()


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def run_sc(paths: ClusterPaths, spus: int | None, log: logging.Logger) -> int:
    loop = asyncio.get_running_loop()
    sc = Controller(paths, log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sc.stop.set)
    sc.ensure_spus(spus)
    prepare_runtime_dir(paths.runtime_dir)
    sc.table = SharedTable.create(paths.shm_name, TableLayout(), os.getpid())
    server = None
    try:
        server = await start_unix_server(lambda: ScConnection(sc), paths.sc_socket)
        paths.sc_pid_file.write_text(f"{os.getpid()}\n")
        sc.publish()
        for spu_id in sc.state.spus:
            sc.spawn_spu(spu_id)
        reaper = asyncio.ensure_future(sc.reap_loop())
        liveness = asyncio.ensure_future(sc.liveness_loop())
        log.info("SC for cluster %s ready on %s", paths.cluster, paths.sc_socket)
        await sc.stop.wait()
        log.info("SC shutting down")
        server.close()
        await sc.stop_spus()
        reaper.cancel()
        liveness.cancel()
    finally:
        if server is not None:
            server.close()
        for proc in sc.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sc.offsets.close()
        sc.table.close()
        sc.table.unlink()
        paths.sc_socket.unlink(missing_ok=True)
        for spu_id in sc.state.spus:
            paths.spu_socket(spu_id).unlink(missing_ok=True)
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
    args = parser.parse_args(argv)
    os.umask(0o077)     # logs, pid file, data and checkpoints: this user's only
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s sc %(levelname)s %(message)s")
    paths = ClusterPaths.for_cluster(args.cluster, args.home)
    paths.sc_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_sc(paths, args.spus, logging.getLogger("sc")))
