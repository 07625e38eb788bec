"""`rillet-bench`'s child processes: the producers and consumers of W1-W5 (tools/bench.py runs them).

Each child connects, reports ready, waits to be released, runs its part and puts one result
dict on the parent's queue. What is timed and counted is described in tools/bench.py.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
import time
from array import array

from .bench import (
    END_MARKER, HDR, INTERVAL_NS, MAX_FETCH_BYTES, POOL_BYTES, SEND_ALL_CHUNK, SPIN_NS, Run, _cpu_s, _left_s,
    _percentiles, now_ns,
)


def _child(role: str, run: Run, ready, go, results, deadline_ns: int, stop=None) -> None:
    """Entry point of every child: run the role, put (role, result dict) on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent handles Ctrl-C and kills us by pid
    try:
        if run.mode == "failover":
            from .bench_failover import _produce_acked     # imported here: bench_failover imports bench
            res = _produce_acked(run, ready, go, deadline_ns, stop)
        else:
            kind, _, index = role.partition("-")
            res = (_produce if kind == "producer" else _consume)(run, int(index or 0), ready, go, deadline_ns)
    except BaseException as exc:  # noqa: BLE001 - whatever ends a child is reported to the parent
        res = {"error": f"{role}: {type(exc).__name__}: {exc}"}
    results.put((role, res))


def _produce(run: Run, index: int, ready, go, deadline_ns: int) -> dict:
    from rillet import Compression, Fluvio, TopicProducerConfigBuilder
    fluvio = Fluvio.connect(run.cluster, home=run.home)
    config = (TopicProducerConfigBuilder().batch_size(run.batch_size).linger(run.linger_ms)
              .compression(Compression.parse(run.compression)).build())
    producer = fluvio.topic_producer_with_config(run.topic, config)
    pool = random.Random(0x5EED).randbytes(max(POOL_BYTES, 4 * run.batch_size, 16 * run.size))
    values = [pool[i:i + run.size] for i in range(0, len(pool) - run.size + 1, run.size)]
    ready.set()
    cpu0 = _cpu_s()
    if not go.wait(_left_s(deadline_ns)):
        raise TimeoutError("never released")
    pacing = [0]        # W3: CPU ns the paced loop spends sleeping and spinning, not sending
    records = run.share(index)
    if run.mode == "latency":
        t_first = _paced(producer, run, values, deadline_ns, pacing)
    else:
        t_first = (_send_loop if run.send_mode == "send" else _send_chunks)(producer, records, values, index)
    producer.flush(timeout=_left_s(deadline_ns))
    t_done = now_ns()
    if run.split:       # then the end markers: one per partition, after every record of ours
        for p in range(run.partitions):
            producer.send_to_partition(p, None, END_MARKER)
        producer.flush(timeout=_left_s(deadline_ns))
    producer.close()
    return {"t_first_ns": t_first, "t_done_ns": t_done, "cpu_s": _cpu_s() - cpu0, "pacing_s": pacing[0] / 1e9}


def _send_chunks(producer, records: int, values: list[bytes], index: int) -> int:
    start = index * 7919 % len(values)      # W5: each producer starts elsewhere in the pool
    pairs = itertools.cycle([(None, v) for v in values[start:] + values[:start]])
    send_all, islice = producer.send_all, itertools.islice
    t_first = now_ns()
    for start in range(0, records, SEND_ALL_CHUNK):
        send_all(islice(pairs, min(SEND_ALL_CHUNK, records - start)))
    return t_first


def _send_loop(producer, records: int, values: list[bytes], index: int) -> int:
    """The producer most users write: ``send(None, value)`` per record (flushed by the caller)."""
    send, n = producer.send, len(values)
    t_first = now_ns()
    for i in range(index * 7919, index * 7919 + records):
        send(None, values[i % n])
    return t_first


def _paced(producer, run: Run, values: list[bytes], deadline_ns: int, pacing: list[int]) -> int:
    """Send run.total records one at a time every INTERVAL_NS; return the first measured send's time.

    Sleeps until SPIN_NS before a send time, then spins (most of a core stays free); a late
    send goes out at once and the schedule restarts from it (no catch-up bursts). This thread's
    CPU time in the sleeps and spins goes to ``pacing[0]`` (ns).
    """
    try:  # prctl(PR_SET_TIMERSLACK, 1 ns): short sleeps otherwise overshoot by 50 us
        import ctypes
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    send, pack, sleep, thread_ns = producer.send, HDR.pack, time.sleep, time.thread_time_ns
    tails = [v[HDR.size:] for v in values]
    t_first = next_t = now_ns()
    spun = 0
    for seq in range(run.total):
        cpu = thread_ns()
        t = now_ns()
        if next_t - t > 2 * SPIN_NS:
            sleep((next_t - t - SPIN_NS) / 1e9)
        while t < next_t:
            t = now_ns()
        spun += thread_ns() - cpu
        if t > deadline_ns:
            raise TimeoutError(f"producer passed the deadline at record {seq}")
        if seq == run.warmup:
            t_first = t
        send(None, pack(seq, now_ns()) + tails[seq % len(tails)])
        next_t = max(next_t + INTERVAL_NS, t)
    pacing[0] = spun
    return t_first


def _consume(run: Run, index: int, ready, go, deadline_ns: int) -> dict:
    from rillet import ConsumerConfig, Fluvio, Offset
    fluvio = Fluvio.connect(run.cluster, home=run.home)
    config = ConsumerConfig()
    config.max_bytes(MAX_FETCH_BYTES)
    streams = [fluvio.partition_consumer(run.topic, p).stream_with_config(Offset.end(), config)
               for p in run.partitions_of(index)]
    seen = itertools.count(1)       # shared by the partitions' threads: next() is atomic under the GIL
    drain = _drain_latency if run.mode == "latency" else _drain_split if run.split else _drain_throughput
    parts = [{"wrong_size": 0, "lat": array("q"), "t_last_ns": None} for _ in streams]
    ready.set()
    cpu0 = _cpu_s()
    # A thread per partition. Counting to the total, the last record may come on any of them:
    # the first to finish ends the run; split (W5), every partition ends on its own markers.
    finished = threading.Semaphore(0)
    for stream, part in zip(streams, parts):
        threading.Thread(target=_drain_in_thread, args=(drain, stream, run, seen, part, finished),
                         daemon=True).start()
    for _ in range(len(streams) if run.split else 1):
        if not finished.acquire(timeout=_left_s(deadline_ns)):
            raise TimeoutError("consumer passed the deadline")
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(errors[0])
    lat = array("q")
    for p in parts:
        lat.extend(p["lat"])
    return {"count": next(seen) - 1, "wrong_size": sum(p["wrong_size"] for p in parts), "cpu_s": _cpu_s() - cpu0,
            "t_last_ns": max((p["t_last_ns"] for p in parts if p["t_last_ns"] is not None), default=None),
            "latency": _percentiles(lat) if run.mode == "latency" else None,
            "latency_samples": lat if run.mode == "latency" else None}     # for --plot; the parent drops them


def _drain_in_thread(drain, stream, run: Run, seen, part: dict, finished: threading.Semaphore) -> None:
    try:
        drain(stream, run, seen, part)      # returns once some partition took the last record
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer's main thread
        part["error"] = f"partition stream: {type(exc).__name__}: {exc}"
    finally:
        finished.release()


def _drain_throughput(stream, run: Run, seen, part: dict) -> None:
    total, size = run.total, run.size
    for rec in stream:
        if len(rec.value()) != size:
            part["wrong_size"] += 1
        if next(seen) >= total:
            part["t_last_ns"] = now_ns()
            break


def _drain_split(stream, run: Run, seen, part: dict) -> None:
    """One partition of W5: every record until each producer's end marker has come."""
    size, markers = run.size, 0
    for rec in stream:
        value = rec.value()
        if value == END_MARKER:
            markers += 1
            if markers == run.producers:
                break
            continue
        if len(value) != size:
            part["wrong_size"] += 1
        next(seen)
        part["t_last_ns"] = now_ns()


def _drain_latency(stream, run: Run, seen, part: dict) -> None:
    total, size, warmup, unpack, lat = run.total, run.size, run.warmup, HDR.unpack_from, part["lat"]
    for rec in stream:
        t = now_ns()
        value = rec.value()
        seq, sent = unpack(value)
        if seq >= warmup:
            lat.append(t - sent)
        if len(value) != size:
            part["wrong_size"] += 1
        if next(seen) >= total:
            part["t_last_ns"] = t
            break
