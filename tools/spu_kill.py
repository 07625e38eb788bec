"""`tools/spu-kill` (also `rillet-spu-kill`): the failover drill.

    spu-kill [--cluster NAME] (--spu ID | --leader TOPIC[/PARTITION] | --random)
             [--signal KILL|TERM|STOP] [--restart-after DUR] [--wait] [--timeout DUR] [--json]

Sends the signal to the chosen SPU process. With ``--wait`` it watches the shared-memory
metadata table (as clients do) until every partition the SPU led has a new Online
leader, and prints each one with the time from the signal to that moment.
``--restart-after`` brings the SPU back after the given time (SIGCONT for STOP, a new
process otherwise) and waits until it is online again. Exit 0 when the drill
completed; 1 with the reason otherwise (no such SPU, no leader to kill, no new
leader in time); 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from rillet.ipc import messages as m
from rillet.ipc.errors import RilletError
from rillet.ipc.metadata_table import PartitionStatus, SpuStatus
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import TableReader

from .args import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, UsageError, duration_s, say

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP}


class DrillFailed(Exception):
    pass


def build_parser() -> Parser:
    p = Parser(prog="spu-kill", description="kill an SPU and watch its partitions fail over")
    p.add_argument("--cluster", default=None, help="cluster name (default: $RILLET_CLUSTER or 'local')")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--spu", type=int, default=None, help="the SPU id to kill")
    target.add_argument("--leader", default=None, metavar="TOPIC[/PARTITION]", help="kill the leader of this partition (default partition 0)")
    target.add_argument("--random", action="store_true", help="kill a random online SPU")
    p.add_argument("--signal", default="KILL", type=str.upper, choices=sorted(SIGNALS))
    p.add_argument("--restart-after", type=duration_s, default=None, metavar="DUR", help="bring the SPU back after DUR (e.g. 500ms)")
    p.add_argument("--wait", action="store_true", help="wait for new leaders and report the failover times")
    p.add_argument("--timeout", type=duration_s, default=30.0, help="how long --wait may take (default 30s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def choose_victim(snapshot, args) -> int:
    online = [s.spu_id for s in snapshot.spus if s.status == SpuStatus.ONLINE]
    if args.spu is not None:
        if snapshot.spu(args.spu) is None:
            known = ", ".join(str(s.spu_id) for s in snapshot.spus)
            raise DrillFailed(f"no such SPU {args.spu} (the cluster has {known})")
        if args.spu not in online:
            raise DrillFailed(f"SPU {args.spu} is not online")
        return args.spu
    if args.random:
        if not online:
            raise DrillFailed("no online SPU to kill")
        return random.choice(online)
    topic, _, part = args.leader.partition("/")
    try:
        partition = int(part) if part else 0
    except ValueError:
        raise UsageError(f"spu-kill: --leader takes TOPIC[/PARTITION], got {args.leader!r}") from None
    row = snapshot.partition(topic, partition)
    if row is None:
        raise DrillFailed(f"no partition {topic}/{partition} in cluster")
    if row.status != PartitionStatus.ONLINE or row.leader < 0:
        raise DrillFailed(f"{topic}/{partition} has no online leader to kill (it is {row.status.label})")
    return row.leader


def run(args) -> dict:
    paths = ClusterPaths.for_cluster(args.cluster)
    try:
        table = TableReader.open(paths.shm_name)
    except RilletError as exc:
        raise DrillFailed(str(exc)) from None
    with table:
        snapshot = table.snapshot()
        victim = choose_victim(snapshot, args)
        pid = snapshot.spu(victim).pid
        led = [(r.topic, r.partition, r.leader_epoch, len(r.replicas)) for r in snapshot.partitions
               if r.leader == victim and r.status == PartitionStatus.ONLINE]
        sig = SIGNALS[args.signal]
        killed_at = time.monotonic()
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            raise DrillFailed(f"SPU {victim} (pid {pid}) is already gone") from None
        report = {"cluster": paths.cluster, "spu": victim, "pid": pid, "signal": args.signal, "partitions": []}
        if args.wait:
            report["partitions"] = wait_for_leaders(table, led, victim, killed_at, args.timeout)
        if args.restart_after is not None:
            time.sleep(max(0.0, killed_at + args.restart_after - time.monotonic()))
            restart(paths, victim, pid, sig)
            report["restarted_after_ms"] = round((time.monotonic() - killed_at) * 1000, 1)
        return report


def wait_for_leaders(table: TableReader, led, victim: int, killed_at: float, timeout_s: float) -> list[dict]:
    pending = {(t, p): (epoch, rf) for t, p, epoch, rf in led}
    results = []
    deadline = killed_at + timeout_s
    generation = -1
    while pending and time.monotonic() < deadline:
        if table.generation() != generation:
            snapshot = table.snapshot()
            generation = snapshot.generation
            for (topic, partition), (epoch, rf) in list(pending.items()):
                row = snapshot.partition(topic, partition)
                if row is None:
                    pending.pop((topic, partition))
                    continue
                if row.leader != victim and row.leader_epoch > epoch and row.status == PartitionStatus.ONLINE:
                    pending.pop((topic, partition))
                    results.append({"topic": topic, "partition": partition, "new_leader": row.leader,
                                    "leader_epoch": row.leader_epoch,
                                    "elected_ms": round((time.monotonic() - killed_at) * 1000, 2)})
        time.sleep(0.0005)
    for (topic, partition), (_epoch, rf) in pending.items():
        reason = "replication factor 1: no other replica" if rf == 1 else f"no new leader within {timeout_s} s"
        results.append({"topic": topic, "partition": partition, "new_leader": None, "error": reason})
    return results


def restart(paths: ClusterPaths, spu_id: int, pid: int, sig: int) -> None:
    if sig == signal.SIGSTOP:
        os.kill(pid, signal.SIGCONT)
        return
    from rillet.broker.launcher import admin_connection
    try:
        with admin_connection(paths) as conn:
            conn.call(m.StartSpu(conn.next_cid(), spu_id), timeout_s=30)
    except RilletError as exc:
        raise DrillFailed(f"could not restart SPU {spu_id}: {exc}") from None


def print_text(report: dict) -> None:
    print(f"killed SPU {report['spu']} (pid {report['pid']}) with SIG{report['signal']}")
    for p in report["partitions"]:
        if p.get("new_leader") is not None:
            print(f"{p['topic']}/{p['partition']}: new leader SPU {p['new_leader']} (epoch {p['leader_epoch']}) "
                  f"online {p['elected_ms']} ms after the kill")
        else:
            print(f"{p['topic']}/{p['partition']}: no new leader ({p['error']})")
    if "restarted_after_ms" in report:
        print(f"restarted SPU {report['spu']} {report['restarted_after_ms']} ms after the kill")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        report = run(args)
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    except (DrillFailed, RilletError) as exc:
        say(f"spu-kill: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report))
    else:
        print_text(report)
    failed = [p for p in report["partitions"] if p.get("new_leader") is None]
    if failed:
        say(f"spu-kill: {len(failed)} partition(s) got no new leader")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
