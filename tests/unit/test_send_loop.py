"""A plain ``send`` loop against the in-process SPU of test_producer_paths: batches close at
exactly the sizes the size rule gives (values of one length are counted, not sized), every
record keeps the timestamp of its send across millisecond marks, and threads sending at once
store every record once, in each thread's order."""

from __future__ import annotations

import random
import threading
import time

import pytest

from rillet._producer_config import EMPTY_BATCH
from rillet.ipc.records import RECORD_OVERHEAD, keyless_overhead

from .test_producer_paths import FakeSpu, producer, spu  # noqa: F401 - spu is a fixture

LIMIT = 4_000


def model_batches(records: list[tuple[bytes | None, bytes]], limit: int = LIMIT) -> list[int]:
    """Record counts of the batches the size rule makes: a record joins the open batch while
    its estimated size (a keyless one's smaller) stays within the limit, and a batch that
    reaches it is closed."""
    out, size, n = [], EMPTY_BATCH, 0
    for key, value in records:
        grow = len(value) + (keyless_overhead(len(value)) if key is None else RECORD_OVERHEAD + len(key))
        if n and size + grow > limit:
            out.append(n)
            size, n = EMPTY_BATCH, 0
        size, n = size + grow, n + 1
        if size >= limit:
            out.append(n)
            size, n = EMPTY_BATCH, 0
    return out + [n] if n else out


def lengths_of(pattern: str, n: int, rng: random.Random) -> list[int]:
    if pattern == "one":
        return [100] * n
    if pattern == "switch":                  # one length, then another, mid-batch
        return [100] * (n // 2) + [37] * (n - n // 2)
    if pattern == "cycle":                   # across the bin8 / bin16 headers' boundary
        return [(0, 1, 100, 255, 256, 1_000)[i % 6] for i in range(n)]
    return [rng.randrange(300) for _ in range(n)]


@pytest.mark.parametrize("pattern", ["one", "switch", "cycle", "random"])
@pytest.mark.parametrize("keyed_every", [0, 7])
def test_a_send_loop_closes_batches_where_the_size_rule_says(spu, pattern, keyed_every):
    rng = random.Random(f"{pattern}{keyed_every}")
    lengths = lengths_of(pattern, 3_000, rng)
    records = [(b"key" if keyed_every and i % keyed_every == 0 else None, bytes([i % 251]) * length)
               for i, length in enumerate(lengths)]
    p = producer(spu, 1, linger=60_000, batch_size=LIMIT)
    outputs = [p.send(k, v) for k, v in records]
    p.close()
    assert spu.records(0) == records
    assert [len(b) for b in spu.batches[0]] == model_batches(records)
    assert [o.wait().offset() for o in outputs] == list(range(len(records)))
    assert spu.bad_headers == []


def test_records_keep_the_time_of_their_send_across_milliseconds(spu):
    p = producer(spu, 1, linger=60_000, batch_size=LIMIT)
    bounds = []
    for i in range(600):
        before = time.time_ns() // 1_000_000
        p.send(None, b"v" * (100 if i % 50 else 7))
        bounds.append((before, time.time_ns() // 1_000_000))
        if i % 40 == 0:
            time.sleep(0.0015)               # the next records fall in a later millisecond
    p.close()
    stamps = spu.timestamps[0]
    assert len(stamps) == 600 and spu.bad_headers == []
    assert all(low <= stamp <= high for stamp, (low, high) in zip(stamps, bounds))
    assert len(set(stamps)) >= 10            # many marks, some inside one batch


def test_threads_sending_at_once_store_each_record_once_in_each_threads_order(spu):
    p = producer(spu, 1, linger=60_000, batch_size=LIMIT)
    outputs: dict[int, list] = {}

    def run(t: int) -> None:
        rng = random.Random(t)
        outputs[t] = [(p.send(None, f"{t}:{i}:".encode() + b"x" * (100 if t % 2 else rng.randrange(200))), i)
                      for i in range(4_000)]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p.close()
    stored = [value for _, value in spu.records(0)]
    assert len(stored) == len(set(stored)) == 16_000
    for t, sent in outputs.items():
        mine = [v for v in stored if v.startswith(f"{t}:".encode())]
        assert [int(v.split(b":")[1]) for v in mine] == list(range(4_000))
        for output, i in sent:                # each output names its record's offset
            assert stored[output.wait().offset()].startswith(f"{t}:{i}:".encode())
    assert all(size <= LIMIT // (4 + keyless_overhead(4)) for size in map(len, spu.batches[0]))
    assert spu.bad_headers == []


def test_too_large_is_judged_alike_by_send_and_send_all(spu):
    # Batches size a keyless record by keyless_overhead, but too large stays what it always was
    # (value plus RECORD_OVERHEAD against max_request_size), for send and send_all alike.
    from rillet import MessageTooLarge
    p = producer(spu, 1, linger=60_000, max_request_size=2_048)
    fits = b"f" * (2_048 - EMPTY_BATCH - RECORD_OVERHEAD)
    over = fits + b"o"
    with pytest.raises(MessageTooLarge, match=f"record of {len(over) + RECORD_OVERHEAD} bytes"):
        p.send(None, over)
    with pytest.raises(MessageTooLarge, match=f"record of {len(over) + RECORD_OVERHEAD} bytes"):
        p.send_all([(None, b"a"), (None, over)])
    outputs = [p.send(None, fits)] + p.send_all([(None, fits), (b"k", fits[:-1])])
    p.close()
    assert [o.wait().offset() for o in outputs] == [1, 2, 3]          # b"a" went first
    assert [len(b) for b in spu.batches[0]] == [1, 1, 1, 1]              # each fills a batch
