"""`rillet-bench --workload FAILOVER`: leader kills under a ReadCommitted producer.

Split from tools/bench.py, which runs it; see that module's docstring for what is timed.
"""

from __future__ import annotations

import bisect
import collections
import os
import signal
import time
from array import array
from dataclasses import replace

from .bench import (
    FAILOVER_SPUS, NEW_LEADER_LIMIT_S, RETRY_DELAY_MS, RETRY_TIMEOUT_MS, SEQ, SETUP_TIMEOUT_S, TABLE_POLL_S, Run,
    _blank, _collect, _cpu_figures, _cpu_s, _cpu_times, _kill, _left_s, _rank, _say, _server_processes, now_ns,
)
from . import bench_children


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
    cpu0 = _cpu_s()
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
            "failed": failed, "first_failure": first_failure, "cpu_s": _cpu_s() - cpu0}


def _blank_failover(run: Run) -> dict:
    return {"peer": "rillet", "workload": run.workload, "mode": run.mode, "kills": None, "records_acked": None,
            "lost": None, "duplicates": None, "time_to_new_leader_ms": None, "time_to_first_ack_ms": None,
            "kills_requested": run.kills, "kill_interval_ms": round(run.kill_interval_s * 1000, 3),
            "spus": FAILOVER_SPUS, "replication": FAILOVER_SPUS, "min_in_sync": 2, "isolation": "ReadCommitted",
            "delivery": "at-least-once", "signal": "SIGKILL", "linger_ms": 0, "compression": run.compression,
            "retry": f"fixed {RETRY_DELAY_MS} ms for {RETRY_TIMEOUT_MS // 1000} s", "cpu_s": None,
            "cpu_us_per_record": None}


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
            procs["producer"] = ctx.Process(target=bench_children._child, name="rillet-bench-producer", daemon=True,
                                            args=("producer", run, ready, go, results, deadline_ns, stop))
            procs["producer"].start()
            _collect(ready.is_set, results, procs, got, SETUP_TIMEOUT_S, "ready")
            servers = _server_processes(cluster)     # an SPU killed during the run reads as null
            server_cpu = _cpu_times(servers)
            go.set()
            failure = _kill_loop(cluster, table, run, procs["producer"], kills)
            time.sleep(run.kill_interval_s)         # acknowledgements after the last kill too
            stop.set()
            _collect(lambda: "producer" in got, results, procs, got, RETRY_TIMEOUT_MS / 1e3 + 15, "done")
            epochs = _batch_epochs(cluster, table.snapshot().partition(run.topic, 0).leader, run.topic)
            server_used = {name: used - server_cpu[name] for name, used in _cpu_times(servers).items()}
        line.update(_failover_figures(kills, got["producer"], _read_committed(cluster, run.topic), epochs))
        line.update(_cpu_figures(replace(run, records=max(1, line["records_acked"])),
                                 {"producer": got["producer"]}, server_used))
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
        # Every replica back in sync first: a kill then never takes the last in-sync replica (that
        # partition would rightly stay LeaderOffline; this workload measures failover, not double faults).
        t_sync = time.monotonic()
        _wait_all_in_sync(table, run.topic, SETUP_TIMEOUT_S)
        in_sync_wait_ms = (time.monotonic() - t_sync) * 1000
        next_kill = time.monotonic() + run.kill_interval_s
        kills.append(kill := _kill_leader(cluster, table, run.topic))
        kill["in_sync_wait_ms"] = in_sync_wait_ms
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
                         "restart_ms": _r3(k["restart_ms"]), "in_sync_wait_ms": _r3(k.get("in_sync_wait_ms"))})
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
