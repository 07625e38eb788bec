"""Recovery finds stray bytes anywhere in a preallocated segment, however far from the data.

nonzero_end asks the kernel (SEEK_DATA) which ranges hold data instead of reading the
whole preallocated space; bytes written there by file I/O or through a mapping must
still be found.
"""

from __future__ import annotations

import mmap
import os

import pytest

from rillet.broker.storage.log import PartitionLog
from rillet.ipc.records import BatchBuilder

SEGMENT = 8 * 1024 * 1024


def batch(i: int) -> bytes:
    b = BatchBuilder()
    b.append(None, b"v%d" % i, 0)
    return b.build()


@pytest.mark.parametrize("how", ["pwrite", "mmap"])
@pytest.mark.parametrize("where", [SEGMENT - 1, SEGMENT // 2, 70_000])
def test_stray_bytes_far_in_the_tail_are_cut(tmp_path, how, where):
    log = PartitionLog.open(tmp_path, segment_size=SEGMENT)
    for i in range(10):
        log.append(batch(i), leader_epoch=1)
    log.flush()
    segment = tmp_path / "00000000000000000000.log"
    # As a crash leaves it: the file still preallocated to SEGMENT bytes, then a stray write.
    fd = os.open(segment, os.O_RDWR)
    try:
        if how == "pwrite":
            os.pwrite(fd, b"\x7f", where)
        else:
            with mmap.mmap(fd, SEGMENT) as mm:
                mm[where] = 0x7F
    finally:
        os.close(fd)
    del log                                                     # no close(): a crash
    reopened = PartitionLog.open(tmp_path, segment_size=SEGMENT)
    assert reopened.leo == 10
    [cut] = reopened.recovery_report
    assert cut.bytes_cut == where + 1 - cut.position
    reopened.close()
