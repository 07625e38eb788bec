"""`rillet-chaos`: random process faults under live producers and consumers, then a Jepsen-style check.

A cluster of its own (3 SPUs, a topic with ``--partitions`` partitions and 3 replicas, min in-sync
2) in a temporary directory. ``--producers`` processes send unique values (tools/chaos_check.py's
``encode_value``: producer index + sequence) with the idempotent, at-least-once, ReadCommitted
producer, and record every acknowledgement. ``--consumers`` processes follow every partition
with COMMITTED continuous streams and record every record handed out. Meanwhile the nemesis
(this process) injects ``--faults`` faults, one at a time, ``--interval`` apart: SIGKILL or
SIGSTOP of a partition leader, of a follower, or (``--sc-faults``) of the SC; each is healed
before the next (a killed SPU restarted after a random short delay, a stopped process continued;
a killed SC comes back by itself). At the end the cluster is healed (every replica in sync), the
producers stop, the consumers read up to the final log end, and the checker counts: acknowledged
records lost, duplicates, reordering within a partition, an offset holding different records on
two replicas, consumer skips, repeats and phantoms. One JSON line on stdout; exit 0 when every
count is 0, 1 otherwise, 2 for bad flags.

    rillet-chaos --faults 500 --sc-faults
"""

from __future__ import annotations

import json
import mmap
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from rillet.tools.chaos_check import PartitionHistory, check, encode_value

SPUS = 3
TOPIC = "chaos"
VALUE_BYTES = 64
HEAL_TIMEOUT_S = 60.0           # a healed cluster has every replica of every partition in sync by then
RETRY_DELAY_MS, RETRY_TIMEOUT_MS = 10, 60_000
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Plan:
    cluster: str
    home: str
    partitions: int
    producers: int
    consumers: int
    faults: int
    interval_s: float
    sc_faults: bool
    seed: int
    keep: bool = False


# --- the client processes (spawned) ------------------------------------------------------------

def _producer(plan: Plan, index: int, stop, results) -> None:
    """Send unique values until ``stop``; report {partition: [(value, offset)]} and the failures."""
    from rillet import DeliverySemantic, Fluvio, Isolation, RilletError, TopicProducerConfigBuilder
    fluvio = Fluvio.connect(plan.cluster, home=plan.home)
    config = (TopicProducerConfigBuilder().linger(2).isolation(Isolation.ReadCommitted)
              .delivery_semantic(DeliverySemantic.AtLeastOnce)
              .retry_policy(strategy="fixed", initial_delay_ms=RETRY_DELAY_MS, max_delay_ms=RETRY_DELAY_MS,
                            max_retries=RETRY_TIMEOUT_MS // RETRY_DELAY_MS, timeout_ms=RETRY_TIMEOUT_MS).build())
    acked: dict[int, list] = {p: [] for p in range(plan.partitions)}
    failed, first_failure, seq = 0, None, 0
    producer = fluvio.topic_producer_with_config(TOPIC, config)
    try:
        while not stop.is_set():
            sent = []
            for _ in range(20):
                value = encode_value(index, seq, VALUE_BYTES)
                sent.append((value, producer.send(None, value)))
                seq += 1
            for value, output in sent:
                try:
                    meta = output.wait(timeout=RETRY_TIMEOUT_MS / 1e3 + 10)
                except RilletError as exc:
                    failed += 1
                    first_failure = first_failure or f"{type(exc).__name__}: {exc}"
                else:
                    acked[meta.partition_id()].append((value, meta.offset()))
            if failed:
                break                       # a send that failed for good: the report says which and why
    finally:
        try:
            producer.close()
        except RilletError:                 # the failures are counted above already
            pass
    results.put(("producer", index, {"acked": acked, "sent": seq, "failed": failed, "first_failure": first_failure}))


def _consumer(plan: Plan, index: int, ends_queue, results) -> None:
    """Follow every partition (COMMITTED) until the parent's final ends are reached; report what came.

    The stream is read in a thread, since a continuous stream waits for records without end;
    this thread waits for the final ends and reports once they are reached.
    """
    import threading
    from rillet import ConsumerConfigExtBuilder, Fluvio, Isolation, Offset
    fluvio = Fluvio.connect(plan.cluster, home=plan.home)
    config = (ConsumerConfigExtBuilder(TOPIC).offset_start(Offset.beginning())
              .isolation(Isolation.ReadCommitted).build())
    seen: dict[int, list] = {p: [] for p in range(plan.partitions)}
    next_offset = dict.fromkeys(range(plan.partitions), 0)
    lock = threading.Lock()

    def follow() -> None:
        for batch in iter(fluvio.consumer_with_config(config).next_batch, []):
            with lock:
                for record in batch:
                    p = record.partition()
                    seen[p].append((record.offset(), record.value()))
                    next_offset[p] = max(next_offset[p], record.offset() + 1)

    threading.Thread(target=follow, daemon=True).start()
    ends = ends_queue.get()
    while True:
        with lock:
            if all(next_offset[p] >= ends[p] for p in ends):
                results.put(("consumer", index, {p: list(r) for p, r in seen.items()}))
                return
        time.sleep(0.05)


# --- the nemesis -------------------------------------------------------------------------------

def _table(cluster):
    from rillet.ipc.shm import TableReader
    return TableReader.open(cluster.paths.shm_name)


def _pick_fault(rng: random.Random, snapshot, plan: Plan) -> tuple[str, str, int]:
    """(what, signal, spu id or 0 for the SC) for the next fault."""
    kinds = ["leader", "follower"] + (["sc"] if plan.sc_faults else [])
    kind = rng.choice(kinds)
    sig = rng.choice(["KILL", "STOP"])
    if kind == "sc":
        return "sc", sig, 0
    row = snapshot.partition(TOPIC, rng.randrange(plan.partitions))
    if kind == "leader" and row.leader >= 0:
        return "leader", sig, row.leader
    followers = [r for r in row.replicas if r != row.leader]
    return "follower", sig, rng.choice(followers)


def _inject(cluster, rng: random.Random, plan: Plan, log: Counter) -> bool:
    """One fault, healed; False when the chosen process was not there (an SC mid-restart): none injected."""
    from rillet.broker import launcher
    with _table(cluster) as table:
        what, sig, spu = _pick_fault(rng, table.snapshot(), plan)
        pid = launcher.sc_pid(cluster.paths) if spu == 0 else table.snapshot().spu(spu).pid
    if not pid:
        log["skipped"] += 1
        time.sleep(0.01)
        return False
    try:
        os.kill(pid, getattr(signal, f"SIG{sig}"))
    except ProcessLookupError:          # it died between the look-up and the signal (an SC being replaced)
        log["skipped"] += 1
        return False
    log[f"{what}_{sig.lower()}"] += 1
    time.sleep(rng.uniform(0.05, 1.0) if sig == "STOP" else rng.uniform(0.0, 0.3))
    if sig == "STOP":
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:      # killed while stopped (a paused SC replaced): nothing to continue
            pass
    elif spu:
        _start_spu(cluster, spu, old_pid=pid)
    else:
        _wait_admin(cluster, HEAL_TIMEOUT_S)         # a killed SC comes back by itself
    return True


def _start_spu(cluster, spu: int, old_pid: int | None = None) -> None:
    """Restart a killed SPU and wait until the SC lists it Online under a new pid, waiting
    out an SC that is itself coming back (a StartSpu answered by an SC that is then killed
    may never have started anything: only the SPU Online counts as healed)."""
    from rillet.broker.spu_start import start_spu
    until = time.monotonic() + HEAL_TIMEOUT_S
    while True:
        try:
            start_spu(cluster.paths, spu, timeout_s=max(1.0, until - time.monotonic()), old_pid=old_pid)
            return
        except Exception as exc:
            if time.monotonic() > until:
                raise
            # Said, not swallowed: a start that failed is a finding even when the retry heals it.
            print(f"rillet-chaos: starting SPU {spu} failed ({type(exc).__name__}: {exc}); retrying",
                  file=sys.stderr)
            time.sleep(0.1)


def _wait_admin(cluster, limit_s: float) -> float:
    from rillet.broker import launcher
    t0 = time.monotonic()
    while True:
        try:
            launcher.cluster_status(cluster.paths)
            return time.monotonic() - t0
        except Exception:
            if time.monotonic() - t0 > limit_s:
                raise TimeoutError(f"the SC did not answer within {limit_s:g} s")
            time.sleep(0.02)


def _heal(cluster, plan: Plan) -> None:
    """Every SPU running and every replica of every partition in sync."""
    from rillet.ipc.metadata_table import PartitionStatus, SpuStatus
    _wait_admin(cluster, HEAL_TIMEOUT_S)
    until = time.monotonic() + HEAL_TIMEOUT_S
    with _table(cluster) as table:
        while time.monotonic() < until:
            snap = table.snapshot()
            for spu in snap.spus:
                if spu.status != SpuStatus.ONLINE:
                    _start_spu(cluster, spu.spu_id)
            rows = [snap.partition(TOPIC, p) for p in range(plan.partitions)]
            if all(r.status == PartitionStatus.ONLINE and len(r.in_sync) == SPUS for r in rows):
                return
            time.sleep(0.1)
    raise TimeoutError(f"the cluster did not heal within {HEAL_TIMEOUT_S:g} s")


# --- reading the final state -------------------------------------------------------------------

def _committed_log(cluster, plan: Plan) -> dict[int, list]:
    from rillet import ConsumerConfig, Isolation, Offset
    config = ConsumerConfig().disable_continuous().isolation(Isolation.ReadCommitted)
    fluvio = cluster.fluvio()
    return {p: [(r.offset(), r.value()) for r in fluvio.partition_consumer(TOPIC, p).stream_with_config(
        Offset.beginning(), config)] for p in range(plan.partitions)}


def _replica_records(cluster, spu: int, partition: int) -> list:
    from rillet.ipc.record_decoding import decode_records
    out: list = []
    for path in sorted(cluster.paths.replica_dir(spu, TOPIC, partition).glob("*.log")):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            out += [(r._offset, r._value) for r in decode_records(data, partition)]
    return out


# --- the run -----------------------------------------------------------------------------------

def run(plan: Plan, cluster) -> dict:
    ctx = mp.get_context("spawn")
    rng = random.Random(plan.seed)
    stop, results = ctx.Event(), ctx.Queue()
    ends_queues = [ctx.Queue() for _ in range(plan.consumers)]
    procs = [ctx.Process(target=_producer, args=(plan, i, stop, results), daemon=True) for i in range(plan.producers)]
    procs += [ctx.Process(target=_consumer, args=(plan, i, ends_queues[i], results), daemon=True)
              for i in range(plan.consumers)]
    faults: Counter = Counter()
    got: dict = {}
    t0 = time.monotonic()
    try:
        for proc in procs:
            proc.start()
        time.sleep(plan.interval_s)
        injected = 0
        while injected < plan.faults:
            if _inject(cluster, rng, plan, faults):
                injected += 1
                time.sleep(plan.interval_s)
        _heal(cluster, plan)
        time.sleep(0.5)                     # acknowledgements on the healed cluster too
        stop.set()
        _collect(results, got, procs, ("producer",), plan.producers)
        log = _committed_log(cluster, plan)
        ends = {p: (records[-1][0] + 1 if records else 0) for p, records in log.items()}
        for q in ends_queues:
            q.put(ends)
        _collect(results, got, procs, ("consumer",), plan.consumers)
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    history = {p: PartitionHistory(
        acked=[a for i in range(plan.producers) for a in got[("producer", i)]["acked"][p]],
        log=log[p],
        replicas={spu: _replica_records(cluster, spu, p) for spu in range(5001, 5001 + SPUS)},
        consumed=[got[("consumer", i)][p] for i in range(plan.consumers)],
    ) for p in range(plan.partitions)}
    report = check(history)
    producers = [got[("producer", i)] for i in range(plan.producers)]
    return {"workload": "CHAOS", "faults": sum(v for k, v in faults.items() if k != "skipped"),
            "faults_by_kind": dict(faults), "seconds": round(time.monotonic() - t0, 1),
            "records_acked": sum(len(a) for h in history.values() for a in [h.acked]),
            "records_sent": sum(p["sent"] for p in producers), "send_failures": sum(p["failed"] for p in producers),
            "first_send_failure": next((p["first_failure"] for p in producers if p["first_failure"]), None),
            "log_records": sum(len(h.log) for h in history.values()),
            "consumed": sum(len(c) for h in history.values() for c in h.consumed),
            **report.counts, "clean": report.clean and not any(p["failed"] for p in producers),
            "examples": report.examples,
            "partitions": plan.partitions, "producers": plan.producers, "consumers": plan.consumers,
            "sc_faults": plan.sc_faults, "seed": plan.seed}


def _collect(results, got: dict, procs, kinds: tuple, count: int, limit_s: float = 120.0) -> None:
    until = time.monotonic() + limit_s
    while sum(1 for k in got if k[0] in kinds) < count:
        if time.monotonic() > until:
            raise TimeoutError(f"{kinds[0]}s did not report within {limit_s:g} s")
        try:
            kind, index, payload = results.get(timeout=0.5)
        except Exception:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a client process exited with {dead[0].exitcode}") from None
            continue
        got[(kind, index)] = payload


def _diagnose(cluster, lines: int = 5) -> None:
    """On stderr, for a run that failed: the cluster's processes (pid, what, state) and the
    last lines of its logs, so that a failure is readable after its directory is gone."""
    import psutil
    from rillet.broker import launcher
    print("rillet-chaos: the run failed; the cluster's processes and its logs' last lines:", file=sys.stderr)
    for proc in launcher.cluster_processes(cluster.paths):
        try:
            cmd = proc.cmdline()
            what = " ".join([cmd[cmd.index("-m") + 1]] + [a for a in cmd if a in ("--restarted", "--standby")]
                            + (["spu", cmd[cmd.index("--spu-id") + 1]] if "--spu-id" in cmd else []))
            print(f"  pid {proc.pid} {proc.status()}: {what}", file=sys.stderr)
        except (ValueError, psutil.Error):
            continue
    for path in sorted(cluster.paths.log_dir.glob("*.log")):
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        print(f"  {path.name}:", *(f"    {t}" for t in tail), sep="\n", file=sys.stderr)


def _parse(argv: list[str] | None) -> Plan:
    from rillet.tools.args import Parser, duration_s, non_negative, positive
    parser = Parser(prog="rillet-chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=non_negative, default=50, help="faults to inject (default 50)")
    parser.add_argument("--interval", type=duration_s, default=0.2, help="time between faults (default 200ms)")
    parser.add_argument("--partitions", type=positive, default=2)
    parser.add_argument("--producers", type=positive, default=2)
    parser.add_argument("--consumers", type=positive, default=2)
    parser.add_argument("--sc-faults", action="store_true", help="also SIGKILL and SIGSTOP the SC")
    parser.add_argument("--seed", type=int, default=None, help="the nemesis's random seed (printed on stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs, data) afterwards")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    return Plan("", "", args.partitions, args.producers, args.consumers, args.faults, args.interval,
                args.sc_faults, seed, args.keep)


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace
    from rillet.testing import LocalCluster
    from rillet.tools.args import UsageError
    try:
        plan = _parse(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    print(f"rillet-chaos: seed {plan.seed}", file=sys.stderr)
    try:
        home = tempfile.mkdtemp(prefix="rillet-chaos-") if plan.keep else None
        if home:
            print(f"rillet-chaos: cluster directory kept in {home}", file=sys.stderr)
        with LocalCluster(spus=SPUS, home=home) as cluster:
            plan = replace(plan, cluster=cluster.name, home=str(cluster.home))
            cluster.create_topic(TOPIC, partitions=plan.partitions, replication=SPUS)
            try:
                line = run(plan, cluster)
            except Exception:
                _diagnose(cluster)          # before the directory goes (without --keep)
                raise
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(json.dumps({"workload": "CHAOS", "error": f"{type(exc).__name__}: {exc}", "seed": plan.seed}))
        return EXIT_FAILED
    print(json.dumps(line))
    return EXIT_OK if line["clean"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
