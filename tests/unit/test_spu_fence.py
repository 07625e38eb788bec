"""The SPU's fence against the SC's metadata table (broker/spu/handlers.py ``_fence``).

Each produce first checks the table's seqlock word: unchanged since the last check means
the table was not written, and the snapshot is not read again. A write between two
produces must still be seen by the very next one.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid

import pytest

from rillet.broker.spu.service import SpuService
from rillet.ipc import messages as m
from rillet.ipc.errors import StaleLeaderEpoch
from rillet.ipc.metadata_table import (
    SEQ_OFFSET, PartitionRow, PartitionStatus, SpuRow, SpuStatus, TableLayout,
)
from rillet.ipc.names import ClusterPaths
from rillet.ipc.records import BatchBuilder
from rillet.ipc.shm import SharedTable

LOGGER = logging.getLogger("rillet.test.fence")
SPU = 5001


def _row(leader: int, epoch: int) -> PartitionRow:
    return PartitionRow("t", 0, leader, epoch, PartitionStatus.ONLINE, (SPU, 5002), (SPU, 5002))


def _produce(service: SpuService, cid: int) -> m.Message:
    builder = BatchBuilder()
    builder.append(None, b"v", 0)
    return service.produce(m.ProduceRequest(cid, "t", 0, m.ISOLATION_READ_UNCOMMITTED, 1000,
                                            memoryview(builder.build())))


@pytest.fixture
def cluster(tmp_path):
    paths = ClusterPaths.for_cluster(f"fence{uuid.uuid4().hex[:8]}", tmp_path)
    table = SharedTable.create(paths.shm_name, TableLayout(max_spus=4, max_partitions=4), os.getpid())
    service = SpuService(SPU, paths, LOGGER)
    try:
        yield table, service
    finally:
        service.close()
        table.close()
        table.unlink()


def test_a_table_write_between_two_produces_fences_the_next_one(cluster):
    table, service = cluster
    spus = [SpuRow(SPU, os.getpid(), SpuStatus.ONLINE)]
    table.write(spus, [_row(SPU, 1)])
    service.apply(m.UpdateReplicas(1, [m.ReplicaSpec("t", 0, [SPU], SPU, 1, 1 << 20, "any", 1)]))
    for cid in range(2, 5):                      # the first checks the table, the next take the fast path
        assert isinstance(_produce(service, cid), m.ProduceResponse)
    table.write(spus, [_row(5002, 2)])           # a new leader elected while this SPU was not looking
    with pytest.raises(StaleLeaderEpoch):
        _produce(service, 5)


def test_a_table_caught_mid_write_is_checked_again(cluster):
    table, service = cluster
    spus = [SpuRow(SPU, os.getpid(), SpuStatus.ONLINE)]
    table.write(spus, [_row(SPU, 1)])
    service.apply(m.UpdateReplicas(1, [m.ReplicaSpec("t", 0, [SPU], SPU, 1, 1 << 20, "any", 1)]))
    buf = table._mapping()
    seq = struct.unpack_from("<Q", buf, SEQ_OFFSET)[0]
    struct.pack_into("<Q", buf, SEQ_OFFSET, seq + 1)        # a writer inside its write: busy, fence skipped
    assert isinstance(_produce(service, 2), m.ProduceResponse)
    struct.pack_into("<Q", buf, SEQ_OFFSET, seq)            # the write "never happened": seq even again...
    table.write(spus, [_row(5002, 2)])                       # ...and then a real one
    with pytest.raises(StaleLeaderEpoch):
        _produce(service, 3)
