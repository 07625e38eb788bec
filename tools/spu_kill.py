"""`tools/spu-kill` (also `rillet-spu-kill`): the failover drill.

    spu-kill [--cluster NAME] (--spu ID | --leader TOPIC[/PARTITION] | --random)
             [--signal KILL|TERM|STOP] [--restart-after DUR] [--wait] [--timeout DUR] [--json]

Sends the signal to the chosen SPU process. With ``--wait`` it watches the shared-memory
metadata table (as clients do) until every partition the SPU led has a new Online
leader, and prints each one with the time from the signal to that moment. Partitions
that cannot fail over (replication factor 1, or no other in-sync replica) are
reported at once and never waited for. ``--restart-after`` brings the SPU back on
schedule, counted from the signal and whatever ``--wait`` is doing (SIGCONT for STOP,
a new process through the SC otherwise), then waits until the SC lists it online.
Exit 0 when the drill completed; 1 with the reason otherwise (no such SPU, no leader
to kill, a partition that could fail over got no new leader in time, the restart
failed); 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

from rillet.ipc.errors import RilletError
from rillet.ipc.metadata_table import PartitionStatus, SpuStatus
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import TableReader

from .args import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, UsageError, duration_s, say
from .commands import spu

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
    p.add_argument("--timeout", type=duration_s, default=30.0, help="how long --wait may take (default 30s); the restart may take as long (at least 10s)")
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


def split_led(rows, victim: int) -> tuple[dict, list[dict]]:
    """The partitions the victim leads: those that can fail over (another in-sync
    replica), to wait for, keyed (topic, partition) -> leader epoch; and those that
    cannot, reported at once and never waited for."""
    pending, stuck = {}, []
    for row in rows:
        if len(row.replicas) <= 1:
            reason = "replication factor 1: no other replica"
        elif not set(row.in_sync) - {victim}:
            reason = "no other in-sync replica"
        else:
            pending[(row.topic, row.partition)] = row.leader_epoch
            continue
        stuck.append({"topic": row.topic, "partition": row.partition, "new_leader": None,
                      "cannot_fail_over": reason})
    return pending, stuck


def settle(pending: dict, snapshot, victim: int, restarted: bool, elapsed_ms: float) -> list[dict]:
    """Take from ``pending`` the partitions that are settled in ``snapshot``: a new
    Online leader with a newer epoch; or, once the victim was restarted, Online
    again (its old leader back, never superseded: a short SIGSTOP). Pure."""
    done = []
    for (topic, partition), epoch in list(pending.items()):
        row = snapshot.partition(topic, partition)
        if row is None:                            # deleted meanwhile
            pending.pop((topic, partition))
            continue
        if row.status != PartitionStatus.ONLINE or row.leader < 0:
            continue
        if row.leader != victim and row.leader_epoch > epoch:
            entry = {"new_leader": row.leader}
        elif restarted:
            entry = {"new_leader": None, "leader": row.leader, "back_after_restart": True}
        else:
            continue
        pending.pop((topic, partition))
        done.append({"topic": topic, "partition": partition, **entry, "leader_epoch": row.leader_epoch,
                     "elected_ms": round(elapsed_ms, 2)})
    return done


class Restarter(threading.Thread):
    """Brings the victim back at ``due`` (monotonic), whatever the wait for leaders is
    doing: SIGCONT for a stopped SPU, a new process through the SC otherwise; done
    once the SC lists it Online."""

    def __init__(self, paths: ClusterPaths, spu_id: int, pid: int, sig: int, due: float, killed_at: float,
                 timeout_s: float) -> None:
        super().__init__(name="spu-kill-restart", daemon=True)
        self.paths, self.spu_id, self.pid, self.sig = paths, spu_id, pid, sig
        self.due, self.killed_at, self.timeout_s = due, killed_at, timeout_s
        self.done = threading.Event()
        self.after_ms: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        time.sleep(max(0.0, self.due - time.monotonic()))
        try:
            if self.sig == signal.SIGSTOP:
                os.kill(self.pid, signal.SIGCONT)
                spu.wait_online(self.paths, self.spu_id, self.timeout_s)
            else:
                spu.start_spu(self.paths, self.spu_id, self.timeout_s, old_pid=self.pid)
            self.after_ms = round((time.monotonic() - self.killed_at) * 1000, 1)
        except (RilletError, OSError) as exc:
            self.error = f"could not restart SPU {self.spu_id}: {exc}"
        finally:
            self.done.set()


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
        pending, stuck = split_led([r for r in snapshot.partitions
                                    if r.leader == victim and r.status == PartitionStatus.ONLINE], victim)
        sig = SIGNALS[args.signal]
        killed_at = time.monotonic()
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            raise DrillFailed(f"SPU {victim} (pid {pid}) is already gone") from None
        report = {"cluster": paths.cluster, "spu": victim, "pid": pid, "signal": args.signal, "partitions": stuck}
        restarter = None
        if args.restart_after is not None:
            restarter = Restarter(paths, victim, pid, sig, killed_at + args.restart_after, killed_at,
                                  max(args.timeout, 10.0))
            restarter.start()
        if args.wait:
            report["partitions"] += wait_for_leaders(table, pending, victim, killed_at, args.timeout, restarter)
        if restarter is not None:
            restarter.done.wait()
            if restarter.error is not None:
                raise DrillFailed(restarter.error)
            report["restarted_after_ms"] = restarter.after_ms
        return report


def wait_for_leaders(table: TableReader, pending: dict, victim: int, killed_at: float, timeout_s: float,
                     restarter: "Restarter | None" = None) -> list[dict]:
    """Watch the table until every pending partition settled (see ``settle``) or
    ``timeout_s`` passed since the kill; the ones left are reported as failures."""
    results = []
    deadline = killed_at + timeout_s
    seen = (-1, False)
    while pending and time.monotonic() < deadline:
        restarted = restarter is not None and restarter.done.is_set() and restarter.error is None
        if (table.generation(), restarted) != seen:
            snapshot = table.snapshot()
            seen = (snapshot.generation, restarted)
            results += settle(pending, snapshot, victim, restarted, (time.monotonic() - killed_at) * 1000)
        time.sleep(0.0005)
    for topic, partition in pending:
        results.append({"topic": topic, "partition": partition, "new_leader": None,
                        "error": f"no new leader within {timeout_s:g} s"})
    return results


def print_text(report: dict) -> None:
    print(f"killed SPU {report['spu']} (pid {report['pid']}) with SIG{report['signal']}")
    for p in report["partitions"]:
        where = f"{p['topic']}/{p['partition']}"
        if p.get("new_leader") is not None:
            print(f"{where}: new leader SPU {p['new_leader']} (epoch {p['leader_epoch']}) "
                  f"online {p['elected_ms']} ms after the kill")
        elif p.get("back_after_restart"):
            print(f"{where}: leader SPU {p['leader']} online again {p['elected_ms']} ms after the kill (restarted)")
        elif "cannot_fail_over" in p:
            print(f"{where}: cannot fail over ({p['cannot_fail_over']}); offline until SPU {report['spu']} is back")
        else:
            print(f"{where}: no new leader ({p['error']})")
    if "restarted_after_ms" in report:
        how = "resumed (SIGCONT)" if report["signal"] == "STOP" else "restarted"
        print(f"{how} SPU {report['spu']}: online {report['restarted_after_ms']} ms after the kill")


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
    failed = [p for p in report["partitions"] if "error" in p]     # could fail over, and did not
    if failed:
        say(f"spu-kill: {len(failed)} partition(s) got no new leader")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
