"""The SPU's request handlers: produce, fetch, offsets, and replica assignment.

Pure of sockets: handlers take decoded messages and return answers (or awaitables
for long polls). broker/spu/server.py wires them to connections.
"""

from __future__ import annotations

import logging
import shutil
from typing import Awaitable, Callable

from rillet.ipc import messages as m
from rillet.ipc.errors import InvalidArgument, NotLeader, OffsetOutOfRange
from rillet.ipc.names import ClusterPaths
from rillet.broker.storage.log import PartitionLog

from .replica import Replica

# A single fetch answer is capped here whatever the client asks (frames stay bounded).
MAX_FETCH_BYTES = 32 * 1024 * 1024
# Long polls are capped so a stuck client cannot pin a waiter forever.
MAX_WAIT_MS = 60_000


class SpuService:
    def __init__(self, spu_id: int, paths: ClusterPaths, logger: logging.Logger) -> None:
        self.spu_id = spu_id
        self.paths = paths
        self.log = logger
        self.replicas: dict[tuple[str, int], Replica] = {}
        # Called whenever offsets change, so the control link can report them to the SC.
        self.on_change: Callable[[], None] = lambda: None

    # --- assignment from the SC ---
    def apply(self, update: m.UpdateReplicas) -> None:
        wanted = {(s.topic, s.partition): s for s in update.replicas}
        for key in list(self.replicas):
            if key not in wanted:
                replica = self.replicas.pop(key)
                replica.close()
                directory = self.paths.replica_dir(self.spu_id, *key)
                shutil.rmtree(directory, ignore_errors=True)
                self.log.info("removed replica %s/%d", *key)
        for key, spec in wanted.items():
            replica = self.replicas.get(key)
            if replica is None:
                directory = self.paths.replica_dir(self.spu_id, spec.topic, spec.partition)
                plog = PartitionLog.open(directory, segment_size=spec.segment_size, logger=self.log)
                for cut in plog.recovery_report:
                    self.log.warning("replica %s/%d recovery: %s", spec.topic, spec.partition, cut)
                self.replicas[key] = Replica(self.spu_id, spec, plog, self.log)
                self.log.info("opened replica %s/%d leo=%d leader=%d epoch=%d",
                              spec.topic, spec.partition, plog.leo, spec.leader, spec.leader_epoch)
            else:
                replica.update_spec(spec)
        self.on_change()

    def statuses(self) -> list[m.ReplicaStatus]:
        return [r.status() for r in self.replicas.values()]

    def close(self) -> None:
        for replica in self.replicas.values():
            try:
                replica.close()
            except Exception:
                self.log.exception("closing replica %s failed", replica.name)
        self.replicas.clear()

    # --- lookups ---
    def leader(self, topic: str, partition: int) -> Replica:
        replica = self.replicas.get((topic, partition))
        if replica is None or not replica.is_leader:
            leader = replica.spec.leader if replica is not None else "unknown to this SPU"
            raise NotLeader(f"SPU {self.spu_id} is not the leader of {topic}/{partition} (leader: {leader})")
        return replica

    # --- data plane ---
    def produce(self, req: m.ProduceRequest) -> m.Message | Awaitable[m.Message]:
        replica = self.leader(req.topic, req.partition)
        base = replica.append(req.batches)
        self.on_change()
        if req.isolation == m.ISOLATION_READ_COMMITTED and replica.hw < replica.leo:
            return self._produce_committed(req.cid, replica, base, replica.leo, req.timeout_ms)
        return m.ProduceResponse(req.cid, base, replica.leo, replica.hw)

    async def _produce_committed(self, cid: int, replica: Replica, base: int, leo: int, timeout_ms: int) -> m.Message:
        await replica.wait_committed(leo, max(timeout_ms, 1) / 1000)
        return m.ProduceResponse(cid, base, replica.leo, replica.hw)

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
        return m.FetchResponse(req.cid, replica.hw, replica.leo, replica.log.log_start_offset, data)

    def offsets(self, req: m.OffsetsRequest) -> m.Message:
        replica = self.leader(req.topic, req.partition)
        return m.OffsetsResponse(req.cid, replica.log.log_start_offset, replica.hw, replica.leo)

    @staticmethod
    def _check_offset(replica: Replica, offset: int) -> None:
        start, leo = replica.log.log_start_offset, replica.leo
        if offset < start or offset > leo:
            raise OffsetOutOfRange(
                f"offset {offset} is outside {replica.name}: valid offsets are {start} to {leo}"
            )
