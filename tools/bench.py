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
            res = bench_failover._produce_acked(run, ready, go, deadline_ns, stop)
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
        return bench_failover._blank_failover(run)
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
                (bench_failover.measure_failover if run.mode == "failover" else measure)(ctx, cluster, run)
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


# Imported after the harness it uses is defined (bench_failover imports from this module).
from . import bench_failover  # noqa: E402


if __name__ == "__main__":
    sys.exit(main())
