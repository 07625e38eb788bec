"""`rillet-bench`: the peer-comparison workloads, run against a cluster of its own.

Starts a one-SPU LocalCluster in a temporary directory (stopped in a finally, on Ctrl-C and
SIGTERM too), runs each workload on a topic of its own and prints one JSON line per workload
on stdout (diagnostics on stderr). The workloads are the peer benchmarks' (see
shared/bench/peers/README.md), so the figures compare with theirs as ratios from one run:

    W1  1,000,000 records of 100 B   throughput: 1 producer process -> 1 consumer process
    W2    200,000 records of 1 KiB   the same
    W3     10,000 records of 100 B   one-way latency: one send about every 100 us, linger 0,
                                     after 200 warm-up records that are not measured
    FAILOVER (only when named)       leader kills under load on a cluster of its own: see
                                     "FAILOVER" below

What is timed. Producer and consumer are separate processes ('spawn' context). Both connect
first (the consumer opens its stream at the end of the empty topic) and report ready; only
then is the producer released, so set-up is not timed, except the producer's SPU connection,
which the client opens on its first batch. Throughput: from the producer's stamp just before
its first send to the consumer's stamp just after the last record arrived. Latency: each
value starts with ``<qq`` (seq, perf_counter_ns just before send) and the consumer records
receive time minus that stamp; ``seconds`` runs from the first measured send to the last
receive. Both sides stamp ``time.perf_counter_ns()``: CLOCK_MONOTONIC, one clock for every
process of a Linux host. MB/s counts value bytes only: records * size / 1e6 / seconds.

Values are slices of a deterministic pseudo-random pool far larger than a batch, so no batch
repeats itself and compressed figures are honest. ``durable``: the SPU acknowledges once the
batch is in its file-backed segment (page cache, no fsync per batch). Exit status 0, 1 if a
workload failed (its line has ``error`` and null metrics), 2 for bad flags, 130 interrupted.

FAILOVER (reliability.md, scenario 9). Its own cluster of 3 SPUs, one partition with 3
replicas (min in-sync 2). One producer process, ReadCommitted at least once, linger 0, a
fixed 10 ms retry within 30 s, sends unique 8-byte values ``seq`` one at a time (send, then
wait) and stamps every acknowledgement (seq, offset, perf_counter_ns). The parent SIGKILLs
the partition's leader ``--kills`` times, ``--kill-interval`` apart: it stamps the moment
before ``os.kill``, watches the shared-memory table (as clients do) for another Online
leader with a higher epoch, then restarts the victim, which rejoins as a follower. Figures
per kill: kill -> new leader in the table; kill -> the producer's first acknowledgement of
a record a later leader wrote (the epoch in the batch header, read from the segment files,
tells; acknowledgements the old leader sent just before dying are counted apart). Then a
COMMITTED read of the whole partition checks that every acknowledged offset holds its seq
(``lost``, must be 0) and counts values stored twice (``duplicates``, allowed at least
once). It fails on a loss or on a kill with no new leader in 10 s.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, replace

from rillet.ipc.errors import InvalidArgument
from rillet.ipc.units import parse_duration, parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
WORKLOADS = {"W1": ("throughput", 1_000_000, 100),   # id: (mode, records, value bytes)
             "W2": ("throughput", 200_000, 1024),
             "W3": ("latency", 10_000, 100),
             "FAILOVER": ("failover", 0, 8)}     # records: as many as the kills leave time for
DEFAULT_WORKLOADS = ("W1", "W2", "W3")          # FAILOVER takes a while and a cluster of its own
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
HDR = struct.Struct("<qq")      # (seq, perf_counter_ns at send): the head of every W3 value
WARMUP = 200                    # W3 records sent first and not measured (the peers' figure)
INTERVAL_NS = 100_000           # W3 pacing: one send about every 100 us
SPIN_NS = 20_000                # W3 pacing: sleep until this close to the send time, then spin
SETUP_TIMEOUT_S = 60.0          # spawning and connecting both children (imports take ~1 s each)
POOL_BYTES = 4 << 20            # distinct values cycled through: far more than one batch
MAX_FETCH_BYTES = 1 << 20       # the consumer's max_bytes (Fluvio's default)
# W1/W2 send with send_all on chunks of SEND_ALL_CHUNK records, not send once per record: on
# this 2-core host, 300k x 100 B in 4 alternating runs, send_all gave 195-207k rec/s and a
# send loop 177-202k (the saving is one method call per record; the work is the same).
SEND_ALL_CHUNK = 1000
SEQ = struct.Struct("<q")       # a FAILOVER value: its seq, so every value is unique
FAILOVER_SPUS = 3               # SPUs and replicas of the FAILOVER topic (min in-sync: 2, the default)
NEW_LEADER_LIMIT_S = 10.0       # a kill with no new leader by then fails the workload
TABLE_POLL_S = 0.0005           # how often the parent reads the table's generation while waiting
RETRY_DELAY_MS, RETRY_TIMEOUT_MS = 10, 30_000   # FAILOVER producer: retry every 10 ms for 30 s

now_ns = time.perf_counter_ns


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


@dataclass(frozen=True, kw_only=True)
class Run:
    """One workload, fully resolved; pickled to both children."""
    workload: str
    mode: str                   # "throughput" or "latency"
    records: int                # measured records
    size: int                   # value bytes
    warmup: int                 # records sent before the measured ones (latency only)
    compression: str
    batch_size: int
    linger_ms: int
    partitions: int
    timeout_s: float            # bound on the run once the producer is released
    kills: int = 0              # FAILOVER: leader kills
    kill_interval_s: float = 0.0    # FAILOVER: time from one kill to the next
    cluster: str = ""
    home: str = ""

    @property
    def spus(self) -> int:
        return FAILOVER_SPUS if self.mode == "failover" else 1

    @property
    def topic(self) -> str:
        return f"bench-{self.workload.lower()}"

    @property
    def total(self) -> int:
        return self.records + self.warmup


# --- command line ------------------------------------------------------------------------------

def _type(convert, check, what: str):
    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, InvalidArgument) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


_positive = _type(int, lambda v: v >= 1, "at least 1")
_non_negative = _type(int, lambda v: v >= 0, "0 or more")
_bytes = _type(parse_size, lambda v: v >= 1, "at least 1 byte")
_seconds = _type(float, lambda v: 0 < v < math.inf, "a positive number of seconds")
_duration = _type(parse_duration, lambda v: 0 < v < math.inf, "a positive duration (500ms, 2s)")


def _workloads(text: str) -> list[str]:
    names = [w.strip().upper() for w in text.split(",") if w.strip()]
    if not names or any(w not in WORKLOADS for w in names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(WORKLOADS)}, got {text!r}")
    return list(dict.fromkeys(names))


def build_parser() -> _Parser:
    p = _Parser(prog="rillet-bench", description="Peer-comparison workloads against a temporary rillet cluster.")
    p.add_argument("--workload", type=_workloads, default=list(DEFAULT_WORKLOADS),
                   help="comma-separated W1, W2, W3, FAILOVER (default W1,W2,W3)")
    p.add_argument("--records", type=_positive, default=None, help="measured records (default: the workload's)")
    p.add_argument("--size", type=_bytes, default=None, help="value bytes (default: the workload's)")
    p.add_argument("--compression", type=str.lower, choices=CODECS, default="none")
    p.add_argument("--batch-size", type=_bytes, default=64 * 1024, help="producer batch bytes (default 64KiB)")
    p.add_argument("--linger-ms", type=_non_negative, default=None, help="default 5 for W1/W2, 0 for W3")
    p.add_argument("--partitions", type=_positive, default=1, help="partitions of each topic (default 1)")
    p.add_argument("--timeout", type=_seconds, default=300.0, help="seconds one workload may run (default 300)")
    p.add_argument("--kills", type=_positive, default=20, help="FAILOVER: leader kills (default 20)")
    p.add_argument("--kill-interval", type=_duration, default=1.0, help="FAILOVER: between kills (default 1s)")
    p.add_argument("--keep", action="store_true", help="keep the cluster's home directory (logs) after the run")
    return p


def parse_args(argv: list[str] | None) -> tuple[list[Run], bool]:
    """The workloads to run, validated, and --keep; raises UsageError."""
    args = build_parser().parse_args(argv)
    return parse_runs(args), args.keep


def parse_runs(args: argparse.Namespace) -> list[Run]:
    runs = []
    for name in args.workload:
        mode, records, size = WORKLOADS[name]
        latency = mode == "latency"
        run = Run(workload=name, mode=mode, records=args.records or records, size=args.size or size,
                  warmup=WARMUP if latency else 0, compression=args.compression, batch_size=args.batch_size,
                  linger_ms=(0 if latency else 5) if args.linger_ms is None else args.linger_ms,
                  partitions=args.partitions, timeout_s=args.timeout, kills=args.kills,
                  kill_interval_s=args.kill_interval)
        if latency and run.size < HDR.size:
            raise UsageError(f"rillet-bench: {name} needs --size of at least {HDR.size}, got {run.size}")
        if mode == "failover":      # its shape is fixed: one partition, seq values, each sent alone
            run = replace(run, records=0, size=SEQ.size, linger_ms=0, partitions=1)
        runs.append(run)
    return runs


# --- children: producer and consumer -----------------------------------------------------------

def _child(role: str, run: Run, ready, go, results, deadline_ns: int, stop=None) -> None:
    """Entry point of every child: run the role, put (role, result dict) on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent handles Ctrl-C and kills us by pid
    try:
        if run.mode == "failover":
            res = _produce_acked(run, ready, go, deadline_ns, stop)
        else:
            res = (_produce if role == "producer" else _consume)(run, ready, go, deadline_ns)
    except BaseException as exc:  # noqa: BLE001 - whatever ends a child is reported to the parent
        res = {"error": f"{role}: {type(exc).__name__}: {exc}"}
    results.put((role, res))


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _left_s(deadline_ns: int) -> float:
    return max(0.001, (deadline_ns - now_ns()) / 1e9)


def _produce(run: Run, ready, go, deadline_ns: int) -> dict:
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
    t_first = (_paced if run.mode == "latency" else _send_chunks)(producer, run, values, deadline_ns)
    producer.flush(timeout=_left_s(deadline_ns))
    t_done = now_ns()
    producer.close()
    return {"t_first_ns": t_first, "t_done_ns": t_done, "cpu_s": _cpu_s() - cpu0}


def _send_chunks(producer, run: Run, values: list[bytes], _deadline_ns: int) -> int:
    pairs = itertools.cycle([(None, v) for v in values])
    send_all, islice = producer.send_all, itertools.islice
    t_first = now_ns()
    for start in range(0, run.records, SEND_ALL_CHUNK):
        send_all(islice(pairs, min(SEND_ALL_CHUNK, run.records - start)))
    return t_first


def _paced(producer, run: Run, values: list[bytes], deadline_ns: int) -> int:
    """Send run.total records one at a time every INTERVAL_NS; return the first measured send's time.

    Sleeps until SPIN_NS before a send time, then spins (most of a core stays free); a late
    send goes out at once and the schedule restarts from it (no catch-up bursts).
    """
    try:  # prctl(PR_SET_TIMERSLACK, 1 ns): short sleeps otherwise overshoot by 50 us
        import ctypes
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    send, pack, sleep = producer.send, HDR.pack, time.sleep
    tails = [v[HDR.size:] for v in values]
    t_first = next_t = now_ns()
    for seq in range(run.total):
        t = now_ns()
        if next_t - t > 2 * SPIN_NS:
            sleep((next_t - t - SPIN_NS) / 1e9)
        while t < next_t:
            t = now_ns()
        if t > deadline_ns:
            raise TimeoutError(f"producer passed the deadline at record {seq}")
        if seq == run.warmup:
            t_first = t
        send(None, pack(seq, now_ns()) + tails[seq % len(tails)])
        next_t = max(next_t + INTERVAL_NS, t)
    return t_first


def _consume(run: Run, ready, go, deadline_ns: int) -> dict:
    from rillet import ConsumerConfig, Fluvio, Offset
    fluvio = Fluvio.connect(run.cluster, home=run.home)
    config = ConsumerConfig()
    config.max_bytes(MAX_FETCH_BYTES)
    streams = [fluvio.partition_consumer(run.topic, p).stream_with_config(Offset.end(), config)
               for p in range(run.partitions)]
    seen = itertools.count(1)       # shared by the partitions' threads: next() is atomic under the GIL
    drain = _drain_latency if run.mode == "latency" else _drain_throughput
    parts = [{"wrong_size": 0, "lat": array("q"), "t_last_ns": None} for _ in streams]
    ready.set()
    cpu0 = _cpu_s()
    done = threading.Event()     # a thread per partition; the last record may come on any of them
    for stream, part in zip(streams, parts):
        threading.Thread(target=_drain_in_thread, args=(drain, stream, run, seen, part, done), daemon=True).start()
    if not done.wait(_left_s(deadline_ns)):
        raise TimeoutError("consumer passed the deadline")
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(errors[0])
    lat = array("q")
    for p in parts:
        lat.extend(p["lat"])
    return {"count": next(seen) - 1, "wrong_size": sum(p["wrong_size"] for p in parts), "cpu_s": _cpu_s() - cpu0,
            "t_last_ns": max((p["t_last_ns"] for p in parts if p["t_last_ns"] is not None), default=None),
            "latency": _percentiles(lat) if run.mode == "latency" else None}


def _drain_in_thread(drain, stream, run: Run, seen, part: dict, done: threading.Event) -> None:
    try:
        drain(stream, run, seen, part)      # returns once some partition took the last record
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer's main thread
        part["error"] = f"partition stream: {type(exc).__name__}: {exc}"
    finally:
        done.set()


def _drain_throughput(stream, run: Run, seen, part: dict) -> None:
    total, size = run.total, run.size
    for rec in stream:
        if len(rec.value()) != size:
            part["wrong_size"] += 1
        if next(seen) >= total:
            part["t_last_ns"] = now_ns()
            break


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


def _percentiles(samples: array) -> dict:
    """Nearest-rank p50/p99/p999 and max in microseconds; empty without samples."""
    lat = sorted(samples)
    return {"p50_us": _rank(lat, 0.50) / 1000.0, "p99_us": _rank(lat, 0.99) / 1000.0,
            "p999_us": _rank(lat, 0.999) / 1000.0, "max_us": lat[-1] / 1000.0, "samples": len(lat)} if lat else {}


def _rank(ordered, q: float):
    """The nearest-rank ``q`` quantile of a sorted, non-empty sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- parent: one workload, then all of them ----------------------------------------------------

def _blank(run: Run) -> dict:
    """The result line with null metrics: what a failed workload prints."""
    if run.mode == "failover":
        return _blank_failover(run)
    line = {"peer": "rillet", "workload": run.workload, "mode": run.mode, "records": run.records, "size": run.size,
            "seconds": None, "records_per_s": None, "mb_per_s": None, "p50_us": None, "p99_us": None,
            "p999_us": None, "durable": True, "durability": "acked once in the SPU's file-backed segment, no fsync",
            "compression": run.compression, "batch_size": run.batch_size, "linger_ms": run.linger_ms,
            "partitions": run.partitions, "api": "send" if run.mode == "latency" else "send_all"}
    if run.mode == "latency":
        line.update(warmup=run.warmup, interval_us=INTERVAL_NS / 1000)
    return line


def measure(ctx, cluster, run: Run) -> dict:
    """Run one workload on a topic of its own; the result line, with "error" on failure."""
    line, procs = _blank(run), {}
    try:
        cluster.create_topic(run.topic, partitions=run.partitions)
        results, go = ctx.Queue(), ctx.Event()
        ready = {"consumer": ctx.Event(), "producer": ctx.Event()}
        deadline_ns = now_ns() + int((SETUP_TIMEOUT_S + run.timeout_s) * 1e9)
        for role, event in ready.items():
            proc = ctx.Process(target=_child, args=(role, run, event, go, results, deadline_ns),
                               name=f"rillet-bench-{role}", daemon=True)
            proc.start()
            procs[role] = proc
        got: dict = {}
        _collect(lambda: all(e.is_set() for e in ready.values()), results, procs, got, SETUP_TIMEOUT_S, "ready")
        server_cpu = _server_cpu_s(cluster)
        go.set()
        _collect(lambda: len(got) == 2, results, procs, got, run.timeout_s, "done")
        line.update(_figures(run, got["producer"], got["consumer"]))
        if not math.isnan(used := _server_cpu_s(cluster) - server_cpu):
            line["cpu_server_s"] = round(used, 3)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the line's error field
        line["error"] = f"{type(exc).__name__}: {exc}"
        _say(f"rillet-bench: {run.workload} failed: {line['error']}")
    finally:
        for proc in procs.values():
            _kill(proc)
    return line


def _collect(cond, results, procs: dict, got: dict, limit_s: float, what: str) -> None:
    """Take child results until ``cond()`` holds; raise on a child's error or death, or at the limit."""
    until = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > until:
            raise TimeoutError(f"{' and '.join(procs)} not {what} within {limit_s:g} s "
                               f"(finished: {sorted(got) or 'none'})")
        try:
            role, res = results.get(timeout=0.05)
        except queue.Empty:
            dead = [r for r, p in procs.items() if not p.is_alive() and r not in got]
            if not dead:
                continue
            try:  # its result may still be in the pipe
                role, res = results.get(timeout=2.0)
            except queue.Empty:
                raise RuntimeError(f"{dead[0]} exited with code {procs[dead[0]].exitcode} without a result") from None
        if "error" in res:
            raise RuntimeError(res["error"])
        got[role] = res


def _figures(run: Run, prod: dict, cons: dict) -> dict:
    if cons["count"] != run.total or cons["wrong_size"]:
        raise RuntimeError(f"consumer received {cons['count']} records ({cons['wrong_size']} not of "
                           f"{run.size} bytes), expected {run.total}")
    secs = (cons["t_last_ns"] - prod["t_first_ns"]) / 1e9
    fig = {"seconds": round(secs, 6), "records_per_s": round(run.records / secs, 1),
           "mb_per_s": round(run.records * run.size / 1e6 / secs, 3),
           "producer_seconds": round((prod["t_done_ns"] - prod["t_first_ns"]) / 1e9, 6),
           "cpu_producer_s": round(prod["cpu_s"], 3), "cpu_consumer_s": round(cons["cpu_s"], 3)}
    if run.mode == "latency":
        lat = cons["latency"]
        if lat.get("samples") != run.records:
            raise RuntimeError(f"{lat.get('samples', 0)} latency samples, expected {run.records}")
        fig.update({k: round(v, 3) for k, v in lat.items()})
    return fig


# --- FAILOVER: leader kills under a ReadCommitted producer -------------------------------------

def _produce_acked(run: Run, ready, go, deadline_ns: int, stop) -> dict:
    """Send seq after seq, each waited for, until ``stop``; every acknowledgement as (seq, offset, t_ns).

    A send that still fails after the retry policy (or outlasts it) is indeterminate: it is
    counted, not fatal, and its value may or may not be in the log.
    """
    from rillet import DeliverySemantic, Fluvio, Isolation, RilletError, TopicProducerConfigBuilder
    fluvio = Fluvio.connect(run.cluster, home=run.home)
    config = (TopicProducerConfigBuilder().linger(0).isolation(Isolation.ReadCommitted)
              .delivery_semantic(DeliverySemantic.AtLeastOnce).compression(run.compression)
              .retry_policy(strategy="fixed", initial_delay_ms=RETRY_DELAY_MS, max_delay_ms=RETRY_DELAY_MS,
                            max_retries=RETRY_TIMEOUT_MS // RETRY_DELAY_MS, timeout_ms=RETRY_TIMEOUT_MS).build())
    producer = fluvio.topic_producer_with_config(run.topic, config)
    seqs, offsets, stamps = array("q"), array("q"), array("q")
    failed, first_failure, seq = 0, None, 0
    ready.set()
    if not go.wait(_left_s(deadline_ns)):
        raise TimeoutError("never released")
    while not stop.is_set():
        if now_ns() > deadline_ns:
            raise TimeoutError(f"producer passed the deadline at seq {seq}")
        try:
            wait_s = min(_left_s(deadline_ns), RETRY_TIMEOUT_MS / 1e3 + 5)
            meta = producer.send(None, SEQ.pack(seq)).wait(timeout=wait_s)
        except RilletError as exc:
            failed += 1
            first_failure = first_failure or f"seq {seq}: {type(exc).__name__}: {exc}"
        else:
            stamps.append(now_ns())
            seqs.append(seq)
            offsets.append(meta.offset())
        seq += 1
    producer.close()
    return {"seq": seqs.tobytes(), "offset": offsets.tobytes(), "t_ns": stamps.tobytes(), "sent": seq,
            "failed": failed, "first_failure": first_failure}


def _blank_failover(run: Run) -> dict:
    return {"peer": "rillet", "workload": run.workload, "mode": run.mode, "kills": None, "records_acked": None,
            "lost": None, "duplicates": None, "time_to_new_leader_ms": None, "time_to_first_ack_ms": None,
            "kills_requested": run.kills, "kill_interval_ms": round(run.kill_interval_s * 1000, 3),
            "spus": FAILOVER_SPUS, "replication": FAILOVER_SPUS, "min_in_sync": 2, "isolation": "ReadCommitted",
            "delivery": "at-least-once", "signal": "SIGKILL", "linger_ms": 0, "compression": run.compression,
            "retry": f"fixed {RETRY_DELAY_MS} ms for {RETRY_TIMEOUT_MS // 1000} s"}


def measure_failover(ctx, cluster, run: Run) -> dict:
    """Kill the leader ``run.kills`` times under a producer, then check every acknowledgement."""
    from rillet.ipc.shm import TableReader
    line, procs, got, kills = _blank(run), {}, {}, []
    try:
        cluster.create_topic(run.topic, partitions=1, replication=FAILOVER_SPUS)
        with TableReader.open(cluster.paths.shm_name) as table:
            _wait_all_in_sync(table, run.topic, SETUP_TIMEOUT_S)
            results, ready, go, stop = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Event()
            deadline_ns = now_ns() + int((SETUP_TIMEOUT_S + run.timeout_s) * 1e9)
            procs["producer"] = ctx.Process(target=_child, name="rillet-bench-producer", daemon=True,
                                            args=("producer", run, ready, go, results, deadline_ns, stop))
            procs["producer"].start()
            _collect(ready.is_set, results, procs, got, SETUP_TIMEOUT_S, "ready")
            go.set()
            failure = _kill_loop(cluster, table, run, procs["producer"], kills)
            time.sleep(run.kill_interval_s)         # acknowledgements after the last kill too
            stop.set()
            _collect(lambda: "producer" in got, results, procs, got, RETRY_TIMEOUT_MS / 1e3 + 15, "done")
            epochs = _batch_epochs(cluster, table.snapshot().partition(run.topic, 0).leader, run.topic)
        line.update(_failover_figures(kills, got["producer"], _read_committed(cluster, run.topic), epochs))
        if failure or line["lost"] or line["offset_gaps"]:
            line["error"] = failure or f"{line['lost']} acknowledged records lost, {line['offset_gaps']} offset gaps"
    except Exception as exc:  # noqa: BLE001 - any failure becomes the line's error field
        line["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for proc in procs.values():
            _kill(proc)
    if "error" in line:
        _say(f"rillet-bench: {run.workload} failed: {line['error']}")
    return line


def _wait_all_in_sync(table, topic: str, limit_s: float) -> None:
    from rillet.ipc.metadata_table import PartitionStatus
    until = time.monotonic() + limit_s
    while time.monotonic() < until:
        row = table.snapshot().partition(topic, 0)
        if row and row.status == PartitionStatus.ONLINE and len(row.in_sync) == FAILOVER_SPUS:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{topic}/0 did not have {FAILOVER_SPUS} in-sync replicas within {limit_s:g} s")


def _kill_loop(cluster, table, run: Run, producer, kills: list) -> str | None:
    """Kill the leader ``run.kills`` times, appending a record per kill; why it stopped early, if it did."""
    until = time.monotonic() + run.timeout_s
    next_kill = time.monotonic() + run.kill_interval_s      # the producer's first acks come before the first kill
    for k in range(run.kills):
        time.sleep(max(0.0, next_kill - time.monotonic()))
        if not producer.is_alive():
            return f"the producer exited after {k} kills"
        if time.monotonic() > until:
            return f"--timeout passed after {k} of {run.kills} kills"
        next_kill = time.monotonic() + run.kill_interval_s
        kills.append(kill := _kill_leader(cluster, table, run.topic))
        if kill["t_leader_ns"] is None:
            return (f"kill {k + 1}: no new leader for {run.topic}/0 within {NEW_LEADER_LIMIT_S:g} s "
                    f"after SPU {kill['spu']} was killed")
    return None


def _kill_leader(cluster, table, topic: str) -> dict:
    """SIGKILL the partition's leader, wait for its successor in the table, restart the victim."""
    from rillet.ipc.metadata_table import PartitionStatus
    snap = table.snapshot()
    row = snap.partition(topic, 0)
    if row is None or row.status != PartitionStatus.ONLINE or row.leader < 0:
        raise RuntimeError(f"{topic}/0 has no online leader to kill ({row.status.label if row else 'no row'})")
    victim, epoch, pid = row.leader, row.leader_epoch, snap.spu(row.leader).pid
    kill = {"spu": victim, "epoch": epoch, "in_sync": len(row.in_sync), "t_kill_ns": now_ns()}
    os.kill(pid, signal.SIGKILL)
    kill["t_leader_ns"], new = _wait_new_leader(table, topic, victim, epoch, kill["t_kill_ns"])
    kill.update(new_leader=new.leader if new else None, new_epoch=new.leader_epoch if new else None)
    t0 = now_ns()
    cluster.start_spu(victim)       # also after a failed election: the partition needs it back
    kill["restart_ms"] = (now_ns() - t0) / 1e6
    return kill


def _wait_new_leader(table, topic: str, victim: int, epoch: int, t_kill_ns: int):
    """(time seen, row) once another SPU leads with a higher epoch, Online; (None, None) after the limit."""
    from rillet.ipc.metadata_table import PartitionStatus
    until, generation = t_kill_ns + int(NEW_LEADER_LIMIT_S * 1e9), -1
    while (t := now_ns()) < until:
        if (g := table.generation()) != generation:
            generation = g
            row = table.snapshot().partition(topic, 0)
            if row and row.leader not in (victim, -1) and row.leader_epoch > epoch \
                    and row.status == PartitionStatus.ONLINE:
                return t, row
        time.sleep(TABLE_POLL_S)
    return None, None


def _batch_epochs(cluster, spu: int, topic: str) -> tuple[list[int], list[int]]:
    """(base offsets, leader epochs) of the batches in ``spu``'s replica, from its segment files.

    The epoch of the batch holding an acknowledged offset tells which leader wrote it, so an
    acknowledgement the old leader had sent just before its death is not taken for the new
    leader's first. Records carry no epoch on the consumer API; the files do (ipc/records.py).
    """
    import mmap
    from rillet.ipc.records import iter_batches
    bases, epochs = [], []
    for path in sorted(cluster.paths.replica_dir(spu, topic, 0).glob("*.log")):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for _pos, header in iter_batches(data):
                bases.append(header.base_offset)
                epochs.append(header.leader_epoch)
    return bases, epochs


def _read_committed(cluster, topic: str) -> list[tuple[int, bytes]]:
    from rillet import ConsumerConfig, Isolation, Offset
    config = ConsumerConfig()
    config.disable_continuous()
    config.isolation(Isolation.ReadCommitted)
    stream = cluster.fluvio().partition_consumer(topic, 0).stream_with_config(Offset.beginning(), config)
    return [(r.offset(), r.value()) for r in stream]


def _failover_figures(kills: list[dict], prod: dict, log: list[tuple[int, bytes]], epochs) -> dict:
    """The FAILOVER figures. A kill's first acknowledgement is the first one received after the
    kill for a record that a later leader wrote; the old leader's acknowledgements still in
    the socket at the kill come before it and are counted as ``old_leader_acks``."""
    seqs, offsets, stamps = (array("q", prod[k]) for k in ("seq", "offset", "t_ns"))
    at = dict(log)
    lost = sum(1 for seq, off in zip(seqs, offsets) if at.get(off) != SEQ.pack(seq))
    copies = collections.Counter(v for _o, v in log)
    bases, batch_epochs = epochs

    def epoch_of(offset: int) -> int:
        i = bisect.bisect_right(bases, offset) - 1
        return batch_epochs[i] if i >= 0 else -1
    per_kill = []
    for k in kills:
        i = j = bisect.bisect_right(stamps, k["t_kill_ns"])
        while j < len(stamps) and epoch_of(offsets[j]) <= k["epoch"]:
            j += 1
        first_ack = (stamps[j] - k["t_kill_ns"]) / 1e6 if j < len(stamps) else None
        leader = (k["t_leader_ns"] - k["t_kill_ns"]) / 1e6 if k["t_leader_ns"] else None
        per_kill.append({"spu": k["spu"], "epoch": k["epoch"], "in_sync_at_kill": k["in_sync"],
                         "new_leader": k["new_leader"], "new_epoch": k["new_epoch"], "new_leader_ms": _r3(leader),
                         "first_ack_ms": _r3(first_ack), "old_leader_acks": j - i,
                         "restart_ms": _r3(k["restart_ms"])})
    return {"kills": len(kills), "records_acked": len(seqs), "lost": lost,
            "duplicates": sum(1 for c in copies.values() if c > 1),
            "time_to_new_leader_ms": _ms_stats([p["new_leader_ms"] for p in per_kill]),
            "time_to_first_ack_ms": _ms_stats([p["first_ack_ms"] for p in per_kill]),
            "records_sent": prod["sent"], "send_failures": prod["failed"],
            "first_send_failure": prod["first_failure"],
            "log_records": len(log), "offset_gaps": sum(1 for i, (o, _v) in enumerate(log) if o != i),
            "kills_at_full_isr": sum(1 for k in kills if k["in_sync"] == FAILOVER_SPUS),
            "per_kill": per_kill}


def _r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms_stats(samples: list) -> dict | None:
    """Nearest-rank p50/p99 and max of the samples present (None entries are kills without one)."""
    got = sorted(v for v in samples if v is not None)
    if not got:
        return None
    return {"p50": _rank(got, 0.50), "p99": _rank(got, 0.99), "max": got[-1], "samples": len(got)}


def _server_cpu_s(cluster) -> float:
    """CPU seconds used so far by the cluster's SC and SPU processes (NaN if one vanished)."""
    import psutil
    from rillet.broker import launcher
    try:
        return sum(sum(p.cpu_times()[:2]) for p in launcher.cluster_processes(cluster.paths))
    except psutil.Error:
        return math.nan


def _kill(proc) -> None:
    """Reap a finished child; SIGKILL one still running, by its pid (not yet reaped, so still ours)."""
    proc.join(0.5)
    if proc.exitcode is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)


def run_all(runs: list[Run], keep: bool = False) -> int:
    """Run the workloads, one cluster per SPU count (in order of first use); 1 if any failed."""
    ctx = mp.get_context("spawn")       # never fork the parent: it may hold threads
    failed = False
    for spus in dict.fromkeys(run.spus for run in runs):
        failed = _run_on_cluster(ctx, spus, [r for r in runs if r.spus == spus], keep) or failed
    return EXIT_FAILED if failed else EXIT_OK


def _run_on_cluster(ctx, spus: int, runs: list[Run], keep: bool) -> bool:
    """Start a cluster, print one line per workload, stop the cluster whatever happens; True if one failed."""
    from rillet.testing import LocalCluster
    home = tempfile.mkdtemp(prefix="rillet-bench-")
    cluster = LocalCluster(spus=spus, home=home)
    failed, not_started = False, None
    try:
        try:
            cluster.start()
        except Exception as exc:  # noqa: BLE001 - reported on every workload's line
            not_started = f"cluster did not start: {type(exc).__name__}: {exc}"
        _say(f"rillet-bench: cluster {cluster.name} in {home} ({spus} SPU{'s' if spus > 1 else ''})")
        for run in runs:
            run = replace(run, cluster=cluster.name, home=home)
            _say(f"rillet-bench: {run.workload}: " + (f"{run.kills} leader kills, {run.kill_interval_s:g} s apart"
                 if run.mode == "failover" else f"{run.records} records of {run.size} B ({run.mode})"))
            line = {**_blank(run), "error": not_started} if not_started else \
                (measure_failover if run.mode == "failover" else measure)(ctx, cluster, run)
            line.update(python=platform.python_version(), ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            print(json.dumps(line), flush=True)
            failed = failed or "error" in line
    finally:  # a second Ctrl-C or SIGTERM must not cut the teardown short
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            cluster.close()
        finally:
            if keep:
                _say(f"rillet-bench: kept {home} (logs in {cluster.paths.log_dir})")
            else:
                shutil.rmtree(home, ignore_errors=True)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return failed


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        runs, keep = parse_args(argv)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _interrupt)   # `timeout`, CI cancellation: still tear down
    try:
        return run_all(runs, keep)
    except KeyboardInterrupt:
        _say("rillet-bench: interrupted; cluster stopped")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
