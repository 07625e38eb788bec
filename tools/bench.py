"""`rillet-bench`: the peer-comparison workloads, run against a cluster of its own.

Starts a one-SPU LocalCluster in a temporary directory (stopped in a finally, on Ctrl-C and
SIGTERM too), runs each workload on a topic of its own and prints one JSON line per workload
on stdout (diagnostics on stderr). The workloads are the peer benchmarks' (see
shared/bench/peers/README.md), so the figures compare with theirs as ratios from one run:

    W1  1,000,000 records of 100 B   throughput: 1 producer process -> 1 consumer process
    W2    200,000 records of 1 KiB   the same
    W3     10,000 records of 100 B   one-way latency: one send about every 100 us, linger 0,
                                     after 200 warm-up records that are not measured
    W4  1,000,000 records of 100 B   fan-out: 1 producer process -> 4 consumer processes, each
                                     reading the whole of one partition (--consumers N)
    W5  1,000,000 records of 100 B   4 producer processes -> a 4-partition topic -> 4 consumer
                                     processes, one partition each (--producers, --consumers)
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
W4's records/s and MB/s count records delivered, summed over its consumers (records x 4).
The children (producers and consumers) live in tools/bench_children.py.
W5's producers each send their share of the records keyless (round-robin over the
partitions), then one empty end marker to every partition; a consumer stops once it has a
marker from every producer on each of its partitions (markers are neither timed nor counted).

Producers send with ``send_all`` on chunks of 1000 records and a 64 KiB batch, linger 5 ms
(W1, W2, W4, W5); ``--send-mode send`` makes them a loop of ``producer.send(None, value)``
with the client's default config (16 KiB, linger 100 ms) instead, then ``flush()``: the
producer most users write. W3 always sends one record at a time.

CPU. Every line has ``cpu_s`` and ``cpu_us_per_record``: CPU seconds (user + system) of each
process from the release of the producers to the end (children measure themselves with
time.process_time, the SC and SPUs are read with psutil by the parent), keyed ``producer``,
``consumer`` (``producer-0``... when there are several), ``sc`` and ``spu-<id>``; per record
divides by the records sent (warm-up included); FAILOVER's by the records acknowledged, and
an SPU killed during it reads as null. In W3 the producer also sleeps and spins to keep its
pace: ``cpu_producer_pacing_s`` is the CPU its sending thread spends there (thread CPU time
around the sleep and the spin), and ``producer_net`` in cpu_us_per_record the producer's CPU
without it.

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
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import shutil
import signal
import struct
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, replace

from rillet.ipc.errors import InvalidArgument
from rillet.ipc.units import parse_duration, parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# id: (mode, records, value bytes, producer processes, consumer processes, consumers split the partitions)
WORKLOADS = {"W1": ("throughput", 1_000_000, 100, 1, 1, False),
             "W2": ("throughput", 200_000, 1024, 1, 1, False),
             "W3": ("latency", 10_000, 100, 1, 1, False),
             "W4": ("throughput", 1_000_000, 100, 1, 4, False),   # every consumer reads every record
             "W5": ("throughput", 1_000_000, 100, 4, 4, True),    # 4 partitions, one per consumer
             "FAILOVER": ("failover", 0, 8, 1, 0, False)}     # records: as many as the kills leave time for
SPLIT_PARTITIONS = 4            # W5's partitions unless --partitions says otherwise
SEND_MODES = ("send_all", "send")
END_MARKER = b""                # W5: a producer's last record on every partition (data values are never empty)
DEFAULT_WORKLOADS = ("W1", "W2", "W3")          # FAILOVER takes a while and a cluster of its own
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
HDR = struct.Struct("<qq")      # (seq, perf_counter_ns at send): the head of every W3 value
WARMUP = 200                    # W3 records sent first and not measured (the peers' figure)
INTERVAL_NS = 100_000           # W3 pacing: one send about every 100 us
SPIN_NS = 20_000                # W3 pacing: sleep until this close to the send time, then spin
SETUP_TIMEOUT_S = 60.0          # spawning and connecting both children (imports take ~1 s each)
SETTLE_LIMIT_S = 6.0            # the longest the first workload waits for the cluster's start-up (_settle)
SETTLE_QUIET_S = 0.1            # a standby SC that used no CPU this long is done starting
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
    producers: int = 1          # producer processes; each sends its share of ``records``
    consumers: int = 1          # consumer processes
    split: bool = False         # consumers share the partitions (W5); otherwise each reads them all
    send_mode: str = "send_all"     # "send_all" chunks, or a "send" loop with the default config
    kills: int = 0              # FAILOVER: leader kills
    kill_interval_s: float = 0.0    # FAILOVER: time from one kill to the next
    cluster: str = ""
    home: str = ""
    metrics: bool = False       # the cluster serves metrics and the parent scrapes them (--metrics)

    @property
    def spus(self) -> int:
        return FAILOVER_SPUS if self.mode == "failover" else 1

    @property
    def topic(self) -> str:
        return f"bench-{self.workload.lower()}"

    @property
    def total(self) -> int:
        return self.records + self.warmup

    @property
    def delivered(self) -> int:
        """Measured records handed to consumers, summed over them."""
        return self.records if self.split else self.records * self.consumers

    def roles(self) -> list[str]:
        """The child processes: ``consumer``/``producer``, or ``consumer-0``... when several."""
        def named(role: str, n: int) -> list[str]:
            return [role] if n == 1 else [f"{role}-{i}" for i in range(n)]
        return named("consumer", self.consumers) + named("producer", self.producers)

    def share(self, index: int) -> int:
        """Records producer ``index`` sends (the first ones take the remainder)."""
        return self.total // self.producers + (index < self.total % self.producers)

    def partitions_of(self, index: int) -> list[int]:
        """Partitions consumer ``index`` reads: all of them, or every consumers-th one when split."""
        return list(range(index, self.partitions, self.consumers)) if self.split else list(range(self.partitions))


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
                   help="comma-separated W1, W2, W3, W4, W5, FAILOVER (default W1,W2,W3)")
    p.add_argument("--records", type=_positive, default=None, help="measured records (default: the workload's)")
    p.add_argument("--size", type=_bytes, default=None, help="value bytes (default: the workload's)")
    p.add_argument("--compression", type=str.lower, choices=CODECS, default="none")
    p.add_argument("--batch-size", type=_bytes, default=None,
                   help="producer batch bytes (default 64KiB; with --send-mode send the client's 16KiB)")
    p.add_argument("--linger-ms", type=_non_negative, default=None,
                   help="default 5 for W1/W2/W4/W5 (100 with --send-mode send), 0 for W3")
    p.add_argument("--send-mode", type=str.lower, choices=SEND_MODES, default="send_all",
                   help="W1/W2/W4/W5: send_all chunks (default) or a send() loop with the default config")
    p.add_argument("--partitions", type=_positive, default=None, help="partitions of each topic (default 1; W5: 4)")
    p.add_argument("--producers", type=_positive, default=None, help="W5: producer processes (default 4)")
    p.add_argument("--consumers", type=_positive, default=None, help="W4/W5: consumer processes (default 4)")
    p.add_argument("--timeout", type=_seconds, default=300.0, help="seconds one workload may run (default 300)")
    p.add_argument("--kills", type=_positive, default=20, help="FAILOVER: leader kills (default 20)")
    p.add_argument("--kill-interval", type=_duration, default=1.0, help="FAILOVER: between kills (default 1s)")
    p.add_argument("--keep", action="store_true", help="keep the cluster's home directory (logs) after the run")
    p.add_argument("--metrics", action="store_true",
                   help="run with the metrics endpoint on, scraped every second (to measure what metrics cost)")
    p.add_argument("--plot", type=_svg_path, default=None, metavar="FILE.svg",
                   help="also draw throughput over time and W3's latency distribution into FILE.svg")
    return p


def _svg_path(text: str) -> str:
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no directory {folder} for {text}")
    return text


def parse_args(argv: list[str] | None) -> tuple[list[Run], bool]:
    """The workloads to run, validated, and --keep; raises UsageError."""
    args = build_parser().parse_args(argv)
    return parse_runs(args), args.keep


def parse_runs(args: argparse.Namespace) -> list[Run]:
    from rillet import TopicProducerConfig
    client_default = TopicProducerConfig()      # what --send-mode send uses unless told otherwise
    runs = []
    for name in args.workload:
        mode, records, size, producers, consumers, split = WORKLOADS[name]
        latency = mode == "latency"
        plain = args.send_mode == "send" and not latency
        batch_size = args.batch_size or (client_default.batch_size if plain else 64 * 1024)
        linger_ms = args.linger_ms if args.linger_ms is not None else \
            0 if latency else client_default.linger_ms if plain else 5
        fanout = consumers > 1 or split         # W4, W5: --producers/--consumers apply
        run = Run(workload=name, mode=mode, records=args.records or records, size=args.size or size,
                  warmup=WARMUP if latency else 0, compression=args.compression, batch_size=batch_size,
                  linger_ms=linger_ms, partitions=args.partitions or (SPLIT_PARTITIONS if split else 1),
                  timeout_s=args.timeout, kills=args.kills, kill_interval_s=args.kill_interval,
                  producers=(args.producers or producers) if split else producers,
                  consumers=(args.consumers or consumers) if fanout else consumers, split=split, metrics=args.metrics,
                  send_mode="send" if latency else args.send_mode)
        if latency and run.size < HDR.size:
            raise UsageError(f"rillet-bench: {name} needs --size of at least {HDR.size}, got {run.size}")
        if split and run.partitions < run.consumers:
            raise UsageError(f"rillet-bench: {name} needs at least as many partitions as consumers, "
                             f"got --partitions {run.partitions} for {run.consumers} consumers")
        if mode == "failover":      # its shape is fixed: one partition, seq values, each sent alone
            run = replace(run, records=0, size=SEQ.size, linger_ms=0, partitions=1)
        runs.append(run)
    return runs


# --- helpers of parent and children ------------------------------------------------------------

def _cpu_s() -> float:
    """This process's CPU seconds, user + system, all threads (finer than os.times' 10 ms ticks)."""
    return time.process_time()


def _left_s(deadline_ns: int) -> float:
    return max(0.001, (deadline_ns - now_ns()) / 1e9)


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
            "partitions": run.partitions, "api": run.send_mode, "producers": run.producers,
            "consumers": run.consumers, "cpu_s": None, "cpu_us_per_record": None}
    if run.mode == "latency":
        line.update(warmup=run.warmup, interval_us=INTERVAL_NS / 1000)
    return line


def measure(ctx, cluster, run: Run, plot: dict | None = None) -> dict:
    """Run one workload on a topic of its own; the result line, with "error" on failure.
    ``plot``, when given, collects the throughput series and W3's latencies for --plot."""
    line, procs = _blank(run), {}
    watch = LogWatch(cluster, run, progress=True, series=plot is not None)
    try:
        cluster.create_topic(run.topic, partitions=run.partitions)
        results, go = ctx.Queue(), ctx.Event()
        ready = {role: ctx.Event() for role in run.roles()}     # consumers first: they open at the end
        deadline_ns = now_ns() + int((SETUP_TIMEOUT_S + run.timeout_s) * 1e9)
        for role, event in ready.items():
            proc = ctx.Process(target=bench_children._child, args=(role, run, event, go, results, deadline_ns),
                               name=f"rillet-bench-{role}", daemon=True)
            proc.start()
            procs[role] = proc
        got: dict = {}
        _collect(lambda: all(e.is_set() for e in ready.values()), results, procs, got, SETUP_TIMEOUT_S, "ready")
        servers = _server_processes(cluster)
        server_cpu = _cpu_times(servers)
        watch.start()                   # progress and --plot only; reads shared memory, asks nothing
        go.set()
        _collect(lambda: len(got) == len(procs), results, procs, got, run.timeout_s, "done")
        watch.stop()
        samples = got.get("consumer", {}).pop("latency_samples", None)
        if plot is not None:
            plot["series"][run.workload] = watch.series
            if samples is not None:
                plot["latencies_us"] = [ns / 1000 for ns in samples]
        line.update(_figures(run, got))
        server_used = {name: used - server_cpu[name] for name, used in _cpu_times(servers).items()}
        if not any(math.isnan(v) for v in server_used.values()):
            line["cpu_server_s"] = round(sum(server_used.values()), 3)
        line.update(_cpu_figures(run, got, server_used))
    except Exception as exc:  # noqa: BLE001 - any failure becomes the line's error field
        line["error"] = f"{type(exc).__name__}: {exc}"
        _say(f"rillet-bench: {run.workload} failed: {line['error']}")
    finally:
        watch.stop()
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
            # A result ends the wait at once; the timeout only paces the check for dead children
            # (a parent waking 20 times a second shared the two cores with what it measured).
            role, res = results.get(timeout=0.5)
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


def _figures(run: Run, got: dict[str, dict]) -> dict:
    prods = [res for role, res in got.items() if role.startswith("producer")]
    conss = [res for role, res in got.items() if role.startswith("consumer")]
    counts = [c["count"] for c in conss]
    wrong = sum(c["wrong_size"] for c in conss)
    if (sum(counts) != run.total if run.split else any(n != run.total for n in counts)) or wrong:
        raise RuntimeError(f"consumer(s) received {counts} records ({wrong} not of {run.size} bytes), expected "
                           f"{run.total} {'in all' if run.split else 'each'}")
    t_first = min(p["t_first_ns"] for p in prods)
    secs = (max(c["t_last_ns"] for c in conss) - t_first) / 1e9
    fig = {"seconds": round(secs, 6), "records_per_s": round(run.delivered / secs, 1),
           "mb_per_s": round(run.delivered * run.size / 1e6 / secs, 3),
           "producer_seconds": round((max(p["t_done_ns"] for p in prods) - t_first) / 1e9, 6),
           "cpu_producer_s": round(sum(p["cpu_s"] for p in prods), 3),
           "cpu_consumer_s": round(sum(c["cpu_s"] for c in conss), 3)}
    if run.mode == "latency":
        fig["cpu_producer_pacing_s"] = round(sum(p["pacing_s"] for p in prods), 3)
        lat = conss[0]["latency"]
        if lat.get("samples") != run.records:
            raise RuntimeError(f"{lat.get('samples', 0)} latency samples, expected {run.records}")
        fig.update({k: round(v, 3) for k, v in lat.items()})
    return fig


def _cpu_figures(run: Run, got: dict[str, dict], server_s: dict[str, float]) -> dict:
    """``cpu_s`` and ``cpu_us_per_record`` for every process (NaN, printed as null, if one vanished)."""
    cpu = {role: res["cpu_s"] for role, res in got.items()} | server_s
    per_record = {name: s * 1e6 / run.total for name, s in cpu.items()}
    if run.mode == "latency":
        net = sum(res["cpu_s"] - res["pacing_s"] for role, res in got.items() if role.startswith("producer"))
        per_record["producer_net"] = net * 1e6 / run.total
    return {"cpu_s": {k: _round_or_none(cpu[k], 3) for k in sorted(cpu)},
            "cpu_us_per_record": {k: _round_or_none(per_record[k], 2) for k in sorted(per_record)}}


def _round_or_none(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _server_processes(cluster) -> dict:
    """The cluster's processes by name: ``sc``, ``sc-standby``, ``supervisor``, ``spu-<id>``.
    (Every process but an SPU was named ``sc`` before, and the last one listed, usually the
    idle standby, was the one measured: W3's SC read 0.0.)"""
    from rillet.broker import launcher
    named = {}
    for proc in launcher.cluster_processes(cluster.paths):
        cmd = proc.info["cmdline"]
        if "--spu-id" in cmd:
            named[f"spu-{cmd[cmd.index('--spu-id') + 1]}"] = proc
        elif "rillet.broker.sc" in cmd:
            named["sc-standby" if "--standby" in cmd else "sc"] = proc
        elif "rillet.broker.supervisor" in cmd:
            named["supervisor"] = proc
    return named


def _cpu_times(procs: dict) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far; NaN for one that is gone.

    Read from the scheduler's nanosecond counters of the process's threads
    (``/proc/PID/task/*/schedstat``), not from ``/proc/PID/stat``'s 10 ms ticks: W4's SPU uses
    ~0.16 s for the whole run, so a tick is 6% of it and two ticks decide a 10% comparison.
    A thread that ended during the run is not counted there (the SPU's threads live as long as
    it does); where schedstat is missing the ticks are used.
    """
    import psutil
    used = {}
    for name, proc in procs.items():
        try:
            if not proc.is_running():       # gone, or its pid reused: psutil compares start times
                raise psutil.NoSuchProcess(proc.pid)
            used[name] = _schedstat_cpu_s(proc.pid)
        except (OSError, psutil.Error):
            try:
                used[name] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                used[name] = math.nan
    return used


def _schedstat_cpu_s(pid: int) -> float:
    """The CPU time of every live thread of ``pid``, in seconds, at nanosecond resolution."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:        # the thread ended since the listing
            continue
    return total / 1e9



def _settle(cluster, limit_s: float = SETTLE_LIMIT_S) -> bool:
    """Wait for the cluster's one-time start-up work before the first workload: True once it
    is done, False at ``limit_s``. The supervisor starts a standby SC once the SC has been ready
    for a second (broker/supervisor.py), and the standby's imports take ~0.2 s of CPU: measured,
    that landed in the second workload (`--workload W1,W2`, three alternating runs: W2 731, 772,
    902 MB/s against 892, 964, 962 once the standby was up). Done when a standby exists and has
    used no CPU for SETTLE_QUIET_S (it then blocks on its stdin)."""
    from rillet.broker import launcher
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        standby = [proc for proc in launcher.cluster_processes(cluster.paths, modules=(launcher.SC,))
                   if "--standby" in (proc.info["cmdline"] or [])]
        used = _cpu_times({"standby": standby[0]})["standby"] if standby else None
        if used is not None and used == last:
            return True
        last = used
        time.sleep(SETTLE_QUIET_S)
    return False


def _kill(proc) -> None:
    """Reap a finished child; SIGKILL one still running, by its pid (not yet reaped, so still ours)."""
    proc.join(0.5)
    if proc.exitcode is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)



def run_all(runs: list[Run], keep: bool = False, plot_path: str | None = None) -> int:
    """Run the workloads, one cluster per SPU count (in order of first use); 1 if any failed.
    With ``plot_path``, then draw throughput over time and W3's latencies there (SVG)."""
    ctx = mp.get_context("spawn")       # never fork the parent: it may hold threads
    failed = False
    plot = {"series": {}, "latencies_us": None} if plot_path else None
    for spus in dict.fromkeys(run.spus for run in runs):
        failed = _run_on_cluster(ctx, spus, [r for r in runs if r.spus == spus], keep, plot) or failed
    if plot_path:
        from .bench_plot import write_svg
        write_svg(plot_path, {w: s for w, s in plot["series"].items() if s}, plot["latencies_us"],
                  f"rillet-bench {','.join(r.workload for r in runs)}, {time.strftime('%Y-%m-%d %H:%M')}")
        _say(f"rillet-bench: wrote {plot_path}")
    return EXIT_FAILED if failed else EXIT_OK


def _run_on_cluster(ctx, spus: int, runs: list[Run], keep: bool, plot: dict | None = None) -> bool:
    """Start a cluster, print one line per workload, stop the cluster whatever happens; True if one failed."""
    from rillet.testing import LocalCluster
    home = tempfile.mkdtemp(prefix="rillet-bench-")
    metrics = runs[0].metrics
    cluster = LocalCluster(spus=spus, home=home, metrics_port=0 if metrics else None)
    failed, not_started, scraper = False, None, None
    try:
        try:
            cluster.start()
            _settle(cluster)
            if metrics:
                scraper = _Scraper(cluster.metrics_url)
        except Exception as exc:  # noqa: BLE001 - reported on every workload's line
            not_started = f"cluster did not start: {type(exc).__name__}: {exc}"
        _say(f"rillet-bench: cluster {cluster.name} in {home} ({spus} SPU{'s' if spus > 1 else ''})")
        for run in runs:
            run = replace(run, cluster=cluster.name, home=home)
            _say(f"rillet-bench: {run.workload}: " + (f"{run.kills} leader kills, {run.kill_interval_s:g} s apart"
                 if run.mode == "failover" else f"{run.records} records of {run.size} B ({run.mode})"))
            line = {**_blank(run), "error": not_started} if not_started else \
                bench_failover.measure_failover(ctx, cluster, run) if run.mode == "failover" else \
                measure(ctx, cluster, run, plot)
            line.update(python=platform.python_version(), ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if scraper is not None:
                line.update(metrics=True, metrics_scrapes=scraper.take())
            print(json.dumps(line), flush=True)
            failed = failed or "error" in line
    finally:  # a second Ctrl-C or SIGTERM must not cut the teardown short
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if scraper is not None:
                scraper.stop()
            cluster.close()
        finally:
            if keep:
                _say(f"rillet-bench: kept {home} (logs in {cluster.paths.log_dir})")
            else:
                shutil.rmtree(home, ignore_errors=True)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return failed


class _Scraper:
    """Scrapes the cluster's metrics every SCRAPE_INTERVAL_S in a thread of the parent, as a
    Prometheus server would (its default interval is 15 s: this is the harsher case)."""

    SCRAPE_INTERVAL_S = 1.0

    def __init__(self, url: str) -> None:
        import threading
        self.url, self.count, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import urllib.request
        while not self._stop.wait(self.SCRAPE_INTERVAL_S):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.count += 1
            except OSError as exc:
                _say(f"rillet-bench: metrics scrape failed: {exc}")

    def take(self) -> int:
        """Scrapes since the last call."""
        count, self.count = self.count, 0
        return count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        runs = parse_runs(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _interrupt)   # `timeout`, CI cancellation: still tear down
    try:
        return run_all(runs, args.keep, args.plot)
    except KeyboardInterrupt:
        _say("rillet-bench: interrupted; cluster stopped")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


# Imported after the harness they use is defined (both import from this module).
from . import bench_children, bench_failover  # noqa: E402
from .bench_watch import LogWatch  # noqa: E402


if __name__ == "__main__":
    sys.exit(main())
