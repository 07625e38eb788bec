"""The SC's admin request handlers (topics, partitions, SPUs, cluster status), the
``admin_routes`` of broker/sc/process.py's Controller.

A mixin rather than an object of its own: the handlers read and change the Controller's
state (``state``, ``observed``, ``offsets``, ``processes``, the table) and call its
actions (``push_assignments``, ``reconcile_now``, ``wait_until``) exactly as they did when
they were its methods, so the text moved here unchanged. Decisions stay in reconcile.py.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from rillet.broker.spu_start import last_log_line
from rillet.ipc import messages as m
from rillet.ipc.errors import RequestTimedOut, RilletError, SpuNotFound, StorageError, TopicAlreadyExists, TopicNotFound
from rillet.ipc.metadata_table import PartitionStatus, SpuStatus, TableLayout
from rillet.ipc.names import validate_name

from . import reconcile
from .state import save_state


class AdminHandlers:
    """Mixed into Controller; every name not defined here is the Controller's."""

    # --- admin ---
    async def create_topic(self, msg: m.CreateTopic):
        name = validate_name(msg.name, "topic")
        if name in self.state.topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        config = reconcile.validate_config(msg.config, len(self.state.spus))
        reconcile.check_table_room(self.state, config.partitions, self._table_rows())
        topic = reconcile.new_topic(self.state, name, config, int(time.time() * 1000))
        self.state.topics[name] = topic
        save_state(self.paths.metadata_file, self.state)
        self.push_assignments({s for p in topic.partitions for s in p.replicas})
        self.reconcile_now()
        self.log.info("created topic %s with %d partitions", name, config.partitions)
        await self.wait_until(lambda: self._creation_outcome(name)[0], msg.timeout_ms / 1000)
        settled, failure = self._creation_outcome(name)
        if failure is not None:
            # The topic cannot be had as asked (a full disk, a damaged directory): undo it, so the
            # same command works once the cause is fixed, and say the SPU's cause, not a timeout.
            if self.state.topics.get(name) is topic:
                self._drop_topic(name)
            self.log.error("topic %s not created: %s", name, failure)
            raise StorageError(f"topic {name!r} not created: {failure}")
        if not self._topic_online(name):
            raise RequestTimedOut(f"topic {name!r} was created but not every partition was Online within {msg.timeout_ms} ms")
        return m.Ok(msg.cid)

    def _creation_outcome(self, name: str) -> tuple[bool, str | None]:
        topic = self.state.topics.get(name)
        return (True, None) if topic is None else reconcile.creation_outcome(topic, self.observed)

    def _drop_topic(self, name: str) -> None:
        topic = self.state.topics.pop(name)
        save_state(self.paths.metadata_file, self.state)
        self.offsets.forget_topic(name)
        self.push_assignments({s for p in topic.partitions for s in p.replicas})
        self.reconcile_now()

    def _topic_online(self, name: str) -> bool:
        topic = self.state.topics.get(name)
        return topic is not None and all(
            reconcile.partition_status(name, p, self.observed) == PartitionStatus.ONLINE for p in topic.partitions
        )

    def delete_topic(self, msg: m.DeleteTopic):
        if msg.name not in self.state.topics:
            raise TopicNotFound(f"Topic not found: {msg.name}")
        self._drop_topic(msg.name)
        self.log.info("deleted topic %s", msg.name)
        return m.Ok(msg.cid)

    def update_topic(self, msg: m.UpdateTopic):
        topic = self._existing(msg.name)
        config = reconcile.updated_config(topic.config, msg.changes, len(self.state.spus))
        topic.config = config
        save_state(self.paths.metadata_file, self.state)
        self.push_assignments({s for p in topic.partitions for s in p.replicas})
        self.log.info("updated topic %s: %s", msg.name, config)
        return m.Ok(msg.cid)

    async def add_partitions(self, msg: m.AddPartitions):
        topic = self._existing(msg.name)
        new = reconcile.added_partitions(self.state, msg.name, msg.count, self._table_rows())
        topic.partitions.extend(new)
        topic.config = msgspec.structs.replace(topic.config, partitions=len(topic.partitions))
        save_state(self.paths.metadata_file, self.state)
        self.push_assignments({s for p in new for s in p.replicas})
        self.reconcile_now()
        self.log.info("added %d partitions to topic %s (now %d)", msg.count, msg.name, len(topic.partitions))
        if not await self.wait_until(lambda: self._topic_online(msg.name), msg.timeout_ms / 1000):
            raise RequestTimedOut(f"partitions were added to {msg.name!r} but not every one was Online "
                                  f"within {msg.timeout_ms} ms")
        return m.Ok(msg.cid)

    def _table_rows(self) -> int:
        return (self.table.layout if self.table is not None else TableLayout()).max_partitions

    def _existing(self, name: str):
        topic = self.state.topics.get(name)
        if topic is None:
            raise TopicNotFound(f"Topic not found: {name}")
        return topic

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
                    problems=reconcile.partition_problems(name, p, self.observed),
                ))
        return m.PartitionList(msg.cid, out)

    def live_positions(self) -> dict:
        """(topic, partition) -> its online leader's positions row as published now (broker/sc/live.py)."""
        return self.live.leaders({s: o.pid for s, o in self.observed.items() if o.online and o.pid})

    def partition_hw(self, topic: str, partition: int, live: dict) -> int:
        """The partition's HW now (its leader's positions table), else as last reported; -1: no leader online."""
        t = self.state.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return -1
        row = live.get((topic, partition))
        if row is not None and row.leader_epoch == t.partitions[partition].leader_epoch:
            return row.hw
        report = reconcile.leader_report(topic, t.partitions[partition], self.observed)
        return report.hw if report is not None and report.is_leader else -1

    def list_consumer_offsets(self, msg: m.ListConsumerOffsets):
        live = self.live_positions()
        return m.ConsumerOffsetList(msg.cid, [msgspec.structs.replace(r, hw=self.partition_hw(r.topic, r.partition, live))
                                              for r in self.offsets.rows()])

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
            metrics_url=self.metrics.url, metrics_error=self.metrics.error,
        )

    def shutdown_cluster(self, msg: m.ShutdownCluster):
        asyncio.get_running_loop().call_soon(self.stop.set)
        return m.Ok(msg.cid)

    async def start_spu(self, msg: m.StartSpu):
        if msg.spu_id not in self.state.spus:
            raise SpuNotFound(f"SPU {msg.spu_id} is not part of cluster {self.paths.cluster}")
        spu_id = msg.spu_id
        if not self.processes.running(spu_id):
            self.processes.spawn(spu_id)
        proc = self.processes.children.get(spu_id)
        # A process that exits before it registers (a start-up error, a refused registration)
        # never comes online: say so now, with why, rather than answer Ok and leave the caller
        # waiting for an SPU that is not there (broker/spu_start.py).
        await self.wait_until(lambda: self.observed[spu_id].online or not self.processes.running(spu_id), 10.0)
        if not self.observed[spu_id].online and not self.processes.running(spu_id):
            code = f" with code {proc.poll()}" if proc is not None else ""
            pid = f" (pid {proc.pid})" if proc is not None else ""
            log = self.paths.spu_log_file(spu_id)
            raise RilletError(f"SPU {spu_id}{pid} exited{code} before coming online; see {log}: "
                              f"{last_log_line(log)}")
        return m.Ok(msg.cid)
