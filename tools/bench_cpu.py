"""CPU per operation of seven hot paths, each timed on its own against a temporary cluster.

    .venv/bin/python -m rillet.tools.bench_cpu [--paths send,linger0,send_all,consume,spu,wait,send_all_kib] [--records N] [--rounds R]

``rillet-bench`` times whole workloads, whose figures swing by tens of percent on a shared
machine; these time one path each, by the CPU of the thread or process that runs it, which
moves much less. Use them to compare code before and after a change in the same minutes.

* ``send``: a loop of ``producer.send(None, value)`` (100 B values, the default config),
  then ``flush()``: the calling thread's CPU per send (``time.thread_time``).
* ``linger0``: at ``linger(0)``, one send every ``INTERVAL_US`` (spun, as W3 paces): the
  caller's CPU inside ``send`` per record (reading the thread's clock twice adds ~0.5 µs), and
  the SPU's CPU per record (no consumer). Unpaced, the batch queue fills and records share
  batches, which is not the linger-0 path.
* ``send_all``: ``send_all`` of 100 B values in chunks of 1,000 (64 KiB batches, linger 5 ms,
  as W1 sends): the calling thread's CPU per record, then ``flush()``.
* ``consume``: a stream from the beginning over that many records (what ``send_all`` wrote,
  read directly from the leader's segment files): the reading thread's CPU per record,
  ``len(record.value())`` included.
* ``spu``: produce requests of one 100 B record, ``WINDOW`` in flight on one connection, so
  the SPU handles them back to back: its CPU per request (Python and socket calls, without a
  wake-up per request).
* ``wait``: at ``linger(0)``, ``producer.send(None, value).wait()`` in a loop (one round trip
  per record, as a synchronous producer or FAILOVER sends): the producer process's CPU per
  acknowledged record (every thread: who reads the answer is what this path measures), the
  SPU's, and the median round trip.
* ``send_all_kib``: ``send_all`` of 1 KiB values as W2 sends (64 KiB batches, linger 5 ms, no
  consumer): the producer process's CPU per record (every thread) and the SPU's: where the
  record bytes' way to the SPU (produce ring or socket) shows.

One JSON line per path: the figure of each round (the first round, a warm-up, is dropped),
their minimum and median. The SPU's CPU is read from /proc in 10 ms ticks: with 20,000
records that is 0.5 µs per record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import psutil

from rillet import TopicProducerConfigBuilder
from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.records import encode_batch
from rillet.testing import LocalCluster

PATHS = ("send", "linger0", "send_all", "consume", "spu", "wait", "send_all_kib")
SEND_ALL_CHUNK = 1000          # records per send_all call (W1's)
VALUE = b"x" * 100
WINDOW = 32                    # produce requests in flight in the spu path
INTERVAL_US = 100              # the linger0 path's pace (W3's)
SPU_ID = 5001


def _process_cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _send_rounds(cluster: LocalCluster, topic: str, records: int, rounds: int, linger0: bool) -> dict:
    fluvio = cluster.fluvio()
    config = TopicProducerConfigBuilder().linger(0).build() if linger0 else None
    producer = (fluvio.topic_producer_with_config(topic, config) if config is not None
                else fluvio.topic_producer(topic))
    spu = psutil.Process(cluster.spu_pid(SPU_ID))
    caller, server = [], []
    try:
        for _ in range(rounds + 1):
            spu0 = _process_cpu_s(spu)
            cpu = _paced(producer.send, records) if linger0 else _loop(producer.send, records)
            producer.flush()
            caller.append(cpu / records * 1e6)
            server.append((_process_cpu_s(spu) - spu0) / records * 1e6)
    finally:
        producer.close()
    line = _summary("caller_us_per_send", caller[1:])
    if linger0:
        line.update(_summary("spu_us_per_record", server[1:]))
    return line


def _loop(send, records: int) -> float:
    """CPU seconds of this thread for ``records`` sends in a plain loop."""
    t0 = time.thread_time()
    for _ in range(records):
        send(None, VALUE)
    return time.thread_time() - t0


def _paced(send, records: int) -> float:
    """CPU seconds of this thread inside ``send`` for ``records`` sends, one every INTERVAL_US."""
    interval, cpu = INTERVAL_US * 1000, 0.0
    due = time.perf_counter_ns()
    for _ in range(records):
        while time.perf_counter_ns() < due:
            pass
        due += interval
        t0 = time.thread_time()
        send(None, VALUE)
        cpu += time.thread_time() - t0
    return cpu


def _bulk_rounds(cluster: LocalCluster, topic: str, records: int, rounds: int, consume: bool) -> dict:
    """send_all rounds (each to a topic of its own), and with ``consume`` a stream over each."""
    from rillet import ConsumerConfig, Offset
    fluvio = cluster.fluvio()
    config = TopicProducerConfigBuilder().batch_size(65536).linger(5).build()
    values = [bytes([i]) * len(VALUE) for i in range(256)]
    pairs = [(None, values[i % 256]) for i in range(SEND_ALL_CHUNK)]
    sender, reader = [], []
    for r in range(rounds + 1):
        name = f"{topic}-{r}"
        cluster.create_topic(name)
        with fluvio.topic_producer_with_config(name, config) as producer:
            t0 = time.thread_time()
            for start in range(0, records, SEND_ALL_CHUNK):
                producer.send_all(pairs[:min(SEND_ALL_CHUNK, records - start)])
            producer.flush()
            sender.append((time.thread_time() - t0) / records * 1e6)
        if consume:
            cc = ConsumerConfig()
            cc.max_bytes(1 << 20)
            with fluvio.partition_consumer(name, 0).stream_with_config(Offset.beginning(), cc) as stream:
                t0, n = time.thread_time(), 0
                for record in stream:
                    n += len(record.value()) > 0
                    if n == records:
                        break
                reader.append((time.thread_time() - t0) / records * 1e6)
    return _summary("consumer_us_per_record", reader[1:]) if consume else _summary("caller_us_per_record", sender[1:])


def _bytes_rounds(cluster: LocalCluster, topic: str, records: int, rounds: int) -> dict:
    config = TopicProducerConfigBuilder().batch_size(65536).linger(5).build()
    values = [bytes([i]) * 1024 for i in range(256)]
    pairs = [(None, values[i % 256]) for i in range(SEND_ALL_CHUNK)]
    spu, me = psutil.Process(cluster.spu_pid(SPU_ID)), psutil.Process()
    client, server = [], []
    with cluster.fluvio().topic_producer_with_config(topic, config) as producer:
        for _ in range(rounds + 1):
            spu0, cpu0 = _process_cpu_s(spu), _process_cpu_s(me)
            for start in range(0, records, SEND_ALL_CHUNK):
                producer.send_all(pairs[:min(SEND_ALL_CHUNK, records - start)])
            producer.flush()
            client.append((_process_cpu_s(me) - cpu0) / records * 1e6)
            server.append((_process_cpu_s(spu) - spu0) / records * 1e6)
    return {**_summary("producer_us_per_record", client[1:]), **_summary("spu_us_per_record", server[1:])}


def _spu_rounds(cluster: LocalCluster, topic: str, records: int, rounds: int) -> dict:
    spu = psutil.Process(cluster.spu_pid(SPU_ID))
    batch = memoryview(encode_batch([(None, VALUE, int(time.time() * 1000))]))
    figures = []
    with Connection(cluster.paths.spu_socket(SPU_ID)) as conn:
        for _ in range(rounds + 1):
            before = _process_cpu_s(spu)
            for start in range(0, records, WINDOW):
                n = min(WINDOW, records - start)
                for _ in range(n):
                    conn.send(m.ProduceRequest(conn.next_cid(), topic, 0, m.ISOLATION_READ_UNCOMMITTED, 1000, batch))
                for _ in range(n):
                    reply = conn.recv()
                    if not isinstance(reply, m.ProduceResponse):
                        raise RuntimeError(f"SPU answered a produce request with {reply!r}")
            figures.append((_process_cpu_s(spu) - before) / records * 1e6)
    return _summary("spu_us_per_request", figures[1:])


def _wait_rounds(cluster: LocalCluster, topic: str, records: int, rounds: int) -> dict:
    producer = cluster.fluvio().topic_producer_with_config(topic, TopicProducerConfigBuilder().linger(0).build())
    spu = psutil.Process(cluster.spu_pid(SPU_ID))
    me = psutil.Process()
    client, server, trips = [], [], []
    try:
        for _ in range(rounds + 1):
            spu0, cpu0, took = _process_cpu_s(spu), _process_cpu_s(me), []
            for _ in range(records):
                t0 = time.perf_counter_ns()
                producer.send(None, VALUE).wait()
                took.append(time.perf_counter_ns() - t0)
            client.append((_process_cpu_s(me) - cpu0) / records * 1e6)
            server.append((_process_cpu_s(spu) - spu0) / records * 1e6)
            trips.append(statistics.median(took) / 1000)
    finally:
        producer.close()
    return {**_summary("producer_us_per_record", client[1:]), **_summary("spu_us_per_record", server[1:]),
            **_summary("round_trip_us_median", trips[1:])}


def _summary(name: str, figures: list[float]) -> dict:
    return {name: [round(f, 3) for f in figures], f"{name}_min": round(min(figures), 3),
            f"{name}_median": round(statistics.median(figures), 3)}


def run(paths: list[str], records: int, rounds: int) -> list[dict]:
    lines = []
    with LocalCluster(spus=1) as cluster:
        print(f"bench_cpu: cluster {cluster.name} in {cluster.home} (1 SPU)", file=sys.stderr, flush=True)
        for path in paths:
            topic = f"cpu-{path.replace('_', '-')}"
            if path not in ("send_all", "consume"):     # those make a topic per round
                cluster.create_topic(topic)
            if path == "spu":
                line = _spu_rounds(cluster, topic, records, rounds)
            elif path in ("send_all", "consume"):
                line = _bulk_rounds(cluster, topic, records, rounds, consume=path == "consume")
            elif path == "wait":
                line = _wait_rounds(cluster, topic, records, rounds)
            elif path == "send_all_kib":
                line = _bytes_rounds(cluster, topic, records, rounds)
            else:
                line = _send_rounds(cluster, topic, records, rounds, linger0=path == "linger0")
            lines.append({"path": path, "records": records, "rounds": rounds, **line})
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bad = [p for p in paths if p not in PATHS]
    if bad or not paths:
        parser.error(f"--paths takes {', '.join(PATHS)}; got {args.paths!r}")
    if args.records < 1 or args.rounds < 1:
        parser.error("--records and --rounds must be at least 1")
    for line in run(paths, args.records, args.rounds):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
