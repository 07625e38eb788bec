"""Pure parts of replica-damage handling: the consumer's lost range and the follower's complaints."""

from __future__ import annotations

import logging

from rillet._damage import lost_range
from rillet.broker.spu.follower import Complaints
from rillet.ipc.errors import CorruptBatch, RecordsLost, error_from_code
from rillet.ipc.records import ATTRIBUTES_POS, HEADER_SIZE, encode_batch, stamp_batch


def log_of(batches: list[tuple[int, int]]) -> bytearray:
    """Batches stored back to back: (base offset, record count) each."""
    out = bytearray()
    for base, count in batches:
        batch = bytearray(encode_batch([(None, f"v{base + i}".encode(), 1) for i in range(count)]))
        stamp_batch(batch, 0, base, 1)
        out += batch
    return out


def test_the_lost_range_is_the_bad_batch_when_its_header_continues_the_chain():
    data = log_of([(0, 3), (3, 4), (7, 2)])
    second = len(log_of([(0, 3)]))
    data[second + HEADER_SIZE + 2] ^= 0x10          # inside the second batch's records: CRC fails
    lost = lost_range(memoryview(data), 0, "t", 2, CorruptBatch("x"))
    assert (lost.topic, lost.partition, lost.first_offset, lost.last_offset) == ("t", 2, 3, 6)
    assert str(lost).startswith("t/2: offsets 3 to 6 are lost: batch CRC mismatch")


def test_a_header_that_does_not_continue_the_chain_names_only_where_reading_stopped():
    data = log_of([(0, 3), (3, 4)])
    second = len(log_of([(0, 3)]))
    data[second:second + 8] = (1000).to_bytes(8, "little")         # base offset: outside the CRC
    data[second + ATTRIBUTES_POS + 1] ^= 0xFF
    lost = lost_range(memoryview(data), 0, "t", 0, CorruptBatch("x"))
    assert (lost.first_offset, lost.last_offset) == (3, 3)


def test_records_lost_keeps_its_offsets_across_the_wire():
    sent = RecordsLost.of("orders", 1, 120, 127, "batch CRC mismatch at position 9")
    got = error_from_code(sent.code, str(sent))
    assert isinstance(got, RecordsLost) and not got.retriable
    assert (got.topic, got.partition, got.first_offset, got.last_offset) == ("orders", 1, 120, 127)


def test_a_follower_complains_once_per_cause_then_every_ten_seconds_and_says_when_it_recovers(caplog):
    complaints = Complaints(logging.getLogger("spu-test"), "t/0 follower of SPU 5001 (epoch 3)")
    with caplog.at_level(logging.WARNING, "spu-test"):
        for i in range(20):                                    # 50 ms retries for one second
            complaints.failed("BrokenConnection: connection refused", now=i * 0.05)
        complaints.failed("BrokenConnection: connection refused", now=11.0)
        complaints.failed("FollowerRefused: pid 1 may not fetch", now=11.1)
        complaints.fetched()
        complaints.fetched()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "t/0 follower of SPU 5001 (epoch 3): BrokenConnection: connection refused",
        "t/0 follower of SPU 5001 (epoch 3): BrokenConnection: connection refused (19 more times since)",
        "t/0 follower of SPU 5001 (epoch 3): FollowerRefused: pid 1 may not fetch",
        "t/0 follower of SPU 5001 (epoch 3): following again after: FollowerRefused: pid 1 may not fetch",
    ]
