"""The consumer's hot path without a cluster: Record built from the wire, the record
buffer and the chained iteration of the streams, and the lazy offset bookkeeping of
ConsumerIterator checked against the per-record rule it replaces."""

from __future__ import annotations

import pickle
import random

import pytest

from rillet import Record
from rillet._consumer import RecordBuffer, chained
from rillet._consumer_iterator import ConsumerIterator
from rillet._enums import OffsetManagementStrategy
from rillet._offsets import OffsetTracker
from rillet.ipc.errors import RilletError, Timeout
from rillet.ipc.record_decoding import decode_records
from rillet.ipc.records import encode_batch, stamp_batch

AUTO, MANUAL, NONE = OffsetManagementStrategy.AUTO, OffsetManagementStrategy.MANUAL, OffsetManagementStrategy.NONE


def batch(base: int, records: list[tuple]) -> bytes:
    b = bytearray(encode_batch(records))
    stamp_batch(b, 0, base, 1)
    return bytes(b)


# --- Record --------------------------------------------------------------------------------------

def test_record_built_from_the_wire_fields():
    data = batch(40, [(None, b"first", 1_700_000_000_000), (b"k", "wert ü".encode(), 1_700_000_000_250, [(b"h", b"v")])])
    keyless, keyed = decode_records(data, 3, record_type=Record)
    assert type(keyless) is Record
    assert (keyless.offset(), keyless.partition(), keyless.timestamp()) == (40, 3, 1_700_000_000_000)
    assert keyless.key() is None and keyless.key_string() == ""
    assert (keyless.value(), keyless.value_string()) == (b"first", "first")
    assert (keyed.offset(), keyed.partition(), keyed.timestamp()) == (41, 3, 1_700_000_000_250)
    assert (keyed.key(), keyed.key_string(), keyed.value_string()) == (b"k", "k", "wert ü")
    assert repr(keyed) == "Record(partition=3, offset=41, key=b'k', value=b'wert \\xc3\\xbc')"


def test_record_text_errors_name_the_offset():
    [record] = decode_records(batch(7, [(b"\xff", b"\xfe", 1)]), 0, record_type=Record)
    with pytest.raises(RilletError, match="record 7 value is not valid UTF-8"):
        record.value_string()
    with pytest.raises(RilletError, match="record 7 key is not valid UTF-8"):
        record.key_string()


def test_record_pickles_and_compares_by_identity():
    [record] = decode_records(batch(5, [(b"k", b"v", 99)]), 2, record_type=Record)
    copy = pickle.loads(pickle.dumps(record))
    assert (copy.offset(), copy.partition(), copy.key(), copy.value(), copy.timestamp()) == (5, 2, b"k", b"v", 99)
    assert copy != record and record == record and hash(record) == hash(record)


# --- RecordBuffer and chained ----------------------------------------------------------------------

def test_buffer_take_hands_over_the_list_itself_or_the_rest():
    buffer = RecordBuffer()
    records = list(range(5))
    buffer.put(records)
    assert len(buffer) == 5 and buffer.handed_out() == 0
    assert buffer.take() is records                       # nothing handed out: no copy
    assert len(buffer) == 0
    buffer.put(list(range(5)))
    assert [next(buffer.it), next(buffer.it)] == [0, 1]
    assert buffer.handed_out() == 2
    old = buffer.it
    assert buffer.take() == [2, 3, 4]
    assert list(old) == []                                # an iterator still held sees nothing more
    buffer.put([1, 2])
    next(buffer.it)
    buffer.put([3])                                       # after what is left
    assert list(buffer.it) == [2, 3]


class FakeStream:
    """Batches from a script; an exception in the script is raised by the wait for it."""

    def __init__(self, script):
        self.script = list(script)
        self.buffer = RecordBuffer()
        self.waits = 0

    def refill(self):
        if len(self.buffer):
            return self.buffer.it
        self.waits += 1
        self.buffer.clear()
        if not self.script:
            return None
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        self.buffer.put(step)
        return self.buffer.it

    def __iter__(self):
        return chained(self.refill)

    def __next__(self):
        for record in self.buffer.it:
            return record
        if self.refill() is None:
            raise StopIteration
        return next(self.buffer.it)


def test_chained_runs_over_every_batch_then_ends():
    stream = FakeStream([[1, 2], [3], [4, 5, 6]])
    assert list(stream) == [1, 2, 3, 4, 5, 6]
    assert stream.waits == 4                              # once per batch and once at the end
    assert list(stream) == []


def test_chained_raises_a_wait_error_and_retries_when_asked_again():
    stream = FakeStream([[1], Timeout("no answer"), [2, 3], KeyboardInterrupt(), [4]])
    it = iter(stream)
    assert next(it) == 1
    with pytest.raises(Timeout, match="no answer"):
        next(it)
    assert list(next(it) for _ in range(2)) == [2, 3]     # the same iterator goes on, as next() would
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert list(it) == [4]


def test_next_and_a_running_chain_share_one_position():
    stream = FakeStream([[1, 2, 3], [4, 5]])
    it = iter(stream)
    assert next(it) == 1
    assert next(stream) == 2
    assert next(it) == 3
    assert next(stream) == 4
    assert list(it) == [5]
    with pytest.raises(StopIteration):
        next(stream)


# --- ConsumerIterator: lazy bookkeeping equals commit-then-see per record --------------------------

class FakeMerged:
    def __init__(self, batches):
        self.batches = list(batches)

    def _fill(self, _max_wait_s):
        return self.batches.pop(0) if self.batches else None

    def close(self):
        pass


class FakeOffsets:
    def __init__(self):
        self.stored = []

    def commit(self, consumer, topic, offsets, wait=True):
        self.stored.append(dict(offsets))


def consumer_over(strategy, batches) -> ConsumerIterator:
    """A ConsumerIterator reading ``batches`` (lists of records of one partition each)."""
    from rillet._offsets import ConsumerConfigExtBuilder
    it = ConsumerIterator.__new__(ConsumerIterator)
    builder = ConsumerConfigExtBuilder("t").offset_strategy(strategy).offset_flush(3_600_000)
    if strategy != NONE:
        builder.offset_consumer("c")
    it.config = builder.build()
    it._strategy, it._offsets, it._tracker = strategy, FakeOffsets(), OffsetTracker()
    it._buffer, it._settled, it._closed, it._ended = RecordBuffer(), 0, False, False
    it._flush_period_s, it._next_flush = 3600.0, float("inf")
    it._merged = FakeMerged(batches)
    return it


def random_batches(rng: random.Random) -> list[list[Record]]:
    next_offset, batches = {0: 0, 1: 0, 2: 0}, []
    for _ in range(rng.randint(1, 12)):
        p, n = rng.randrange(3), rng.randint(1, 6)
        data = batch(next_offset[p], [(None, b"v", 1)] * n)
        batches.append(decode_records(data, p, record_type=Record))
        next_offset[p] += n
    return batches


@pytest.mark.parametrize("strategy", [AUTO, MANUAL])
def test_settled_offsets_equal_the_per_record_rule(strategy):
    seed = 20250107
    print(f"seed={seed}")
    rng = random.Random(seed)
    for trial in range(300):
        it = consumer_over(strategy, random_batches(rng))
        model = OffsetTracker()          # the old eager rule: AUTO commits, then the record is seen
        while True:
            op = rng.choice(["next", "next", "next", "iter", "batch", "commit", "check"])
            if op in ("next", "iter"):
                source = it if op == "next" else iter(it)
                try:
                    record = next(source)
                except StopIteration:
                    break
                if strategy == AUTO:
                    model.commit()
                model.saw(record.partition(), record.offset())
            elif op == "batch":
                records = it.next_batch()
                if not records:
                    break
                if strategy == AUTO:
                    model.commit()
                for record in records:
                    model.saw(record.partition(), record.offset())
            elif op == "commit":
                it.offset_commit()
                model.commit()
            it._settle()
            assert (it._tracker.seen, it._tracker.committed) == (model.seen, model.committed), \
                f"seed={seed} trial={trial}"
        if strategy == AUTO:             # end of stream: everything read is committed and flushed
            model.commit()
            assert it._offsets.stored[-1:] == ([dict(model.committed)] if model.committed else [])
        assert it._tracker.seen == model.seen
