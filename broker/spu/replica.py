"""One replica of one partition inside an SPU: its log plus the offsets clients wait on.

The log (broker/storage) assigns offsets; this object adds what the network needs:
the high watermark (HW), and waiters for long-poll fetches and ReadCommitted
produces, woken the moment the offset they wait for becomes visible.

HW rule: with one replica the HW is the log end offset (LEO) right after every
append. With followers it is the smallest LEO among in-sync replicas (see
reconcile of the replication issue); this class takes it as an input.
"""

from __future__ import annotations

import asyncio
import logging

from rillet.ipc import messages as m
from rillet.ipc.compression import parse_topic_compression
from rillet.ipc.errors import CompressionError, CorruptBatch, RequestTimedOut
from rillet.ipc.records import HEADER_SIZE, peek_header
from rillet.broker.storage.log import PartitionLog


class Replica:
    def __init__(self, spu_id: int, spec: m.ReplicaSpec, log: PartitionLog, logger: logging.Logger) -> None:
        self.spu_id = spu_id
        self.spec = spec
        self.log = log
        self.logger = logger
        self.hw = log.leo if len(spec.replicas) == 1 else 0
        # (bound_is_hw, offset, future): woken once the bound passes offset.
        self._waiters: list[tuple[bool, int, asyncio.Future]] = []

    @property
    def name(self) -> str:
        return f"{self.spec.topic}/{self.spec.partition}"

    @property
    def is_leader(self) -> bool:
        return self.spec.leader == self.spu_id

    @property
    def leo(self) -> int:
        return self.log.leo

    def update_spec(self, spec: m.ReplicaSpec) -> None:
        self.spec = spec
        if len(spec.replicas) == 1:
            self._set_hw(self.log.leo)

    # --- produce ---
    def append(self, batches: memoryview) -> int:
        """Append every whole batch in ``batches``; return the first base offset."""
        compression = parse_topic_compression(self.spec.compression_type)
        first_base = -1
        pos, end = 0, len(batches)
        if end < HEADER_SIZE:
            raise CorruptBatch(f"produce request carries {end} bytes, less than one batch header")
        while pos < end:
            header = peek_header(batches, pos)
            if header.total_size > end - pos or header.batch_length <= 0:
                raise CorruptBatch(f"batch at position {pos} claims {header.total_size} bytes, {end - pos} present")
            if compression not in ("any",) and header.codec != _CODEC_IDS[compression]:
                raise CompressionError(
                    f"topic {self.spec.topic} requires compression {compression}, batch uses codec {header.codec}"
                )
            base, _leo = self.log.append(batches[pos:pos + header.total_size], leader_epoch=self.spec.leader_epoch)
            if first_base < 0:
                first_base = base
            pos += header.total_size
        if len(self.spec.replicas) == 1:
            self._set_hw(self.log.leo)
        self._wake()
        return first_base

    async def wait_committed(self, offset: int, timeout_s: float) -> None:
        """Wait until the HW reaches ``offset`` (ReadCommitted produce)."""
        if self.hw >= offset:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((True, offset - 1, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimedOut(
                f"{self.name}: high watermark {self.hw} did not reach {offset} within timeout_ms={int(timeout_s * 1000)}"
            ) from None

    # --- fetch ---
    def bound(self, committed: bool) -> int:
        return self.hw if committed else self.log.leo

    async def wait_for_data(self, offset: int, committed: bool, timeout_s: float) -> None:
        """Return once records at ``offset`` are visible, or when the timeout passes."""
        if self.bound(committed) > offset:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((committed, offset, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            pass

    def read(self, offset: int, max_bytes: int, committed: bool) -> memoryview:
        return self.log.read(offset, max_bytes, self.bound(committed))

    # --- internals ---
    def _set_hw(self, hw: int) -> None:
        if hw > self.hw:
            self.hw = hw

    def _wake(self) -> None:
        if not self._waiters:
            return
        keep = []
        for committed, offset, fut in self._waiters:
            if fut.done():
                continue
            if self.bound(committed) > offset:
                fut.set_result(None)
            else:
                keep.append((committed, offset, fut))
        self._waiters = keep

    def status(self) -> m.ReplicaStatus:
        return m.ReplicaStatus(
            topic=self.spec.topic, partition=self.spec.partition, leader_epoch=self.spec.leader_epoch,
            is_leader=self.is_leader, leo=self.log.leo, hw=self.hw, log_start=self.log.log_start_offset,
            size_bytes=self.log.size_bytes, in_sync=[self.spu_id] if self.is_leader else [],
        )

    def close(self) -> None:
        for _c, _o, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []
        self.log.close()


_CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
