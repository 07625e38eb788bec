"""A SIGKILLed SPU's exit, and a start sent too early: ``python -m rillet.tools.bench_spu_exit [--kills N] [--settle S]``.

Starts a cluster of 2 SPUs in a temporary directory with a topic of 2 partitions replicated twice
and a producer sending all along (busy SPUs: the state CHAOS kills them in), then SIGKILLs the SPUs
in turn. Each kill waits for the process to be "gone" in one of two ways, alternating two kills
each: ``zombie`` (its main thread a zombie, what ``broker/spu_start.py`` took for the end until
session 11) or ``exited`` (``process_gone``: every thread gone), polled every 50 ms as
``start_spu`` does; then it sends StartSpu at once and counts the starts sent while the process had
not exited yet and the answers that started no new process. One line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time

import psutil

from rillet.broker.spu_start import _spu_pids, process_gone, start_spu
from rillet.ipc import messages as m
from rillet.ipc.admin_link import admin_connection
from rillet.testing import LocalCluster

POLL_S = 0.05
SETTLE_S = 1.0          # a restarted SPU caught up and serving again: freshly started ones exit fast


def main_thread_zombie(pid: int) -> bool:
    """The old test of "gone": the main thread a zombie (or no such process)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _produce(cluster: LocalCluster, stop: threading.Event) -> None:
    from rillet import TopicProducerConfigBuilder
    producer = cluster.fluvio().topic_producer_with_config("busy", TopicProducerConfigBuilder().linger(2).build())
    try:
        while not stop.is_set():
            try:
                for _ in range(200):
                    producer.send(None, b"x" * 500)
                producer.flush(timeout=1.0)
            except Exception:       # noqa: BLE001 - a leader being killed: send on
                time.sleep(0.05)
    finally:
        try:
            producer.close(timeout=1.0)         # records of the last kill may never be answered
        except Exception:           # noqa: BLE001 - the measurement is done
            pass


def run(cluster: LocalCluster, kills: int, settle_s: float = SETTLE_S) -> dict:
    starts = {"zombie": 0, "exited": 0}
    early = {"zombie": 0, "exited": 0}        # StartSpu sent while the process had not exited
    missed = {"zombie": 0, "exited": 0}       # StartSpu answered, and no new process runs
    for i in range(kills):
        how = ("zombie", "exited")[(i // 2) % 2]
        gone = main_thread_zombie if how == "zombie" else process_gone
        spu = 5001 + i % 2
        pid = start_spu(cluster.paths, spu, 30.0)[0].pid
        time.sleep(settle_s)                                # busy again (following, leading) when killed
        with admin_connection(cluster.paths) as conn:
            conn.call(m.ListSpus(conn.next_cid()))          # connected before the kill
            os.kill(pid, signal.SIGKILL)
            while not gone(pid):
                time.sleep(POLL_S)
            early[how] += not process_gone(pid)
            # Answered once the SPU is Online, after the SC spawned it; or at once, having started
            # nothing, when the SC still counted the old process running and Online.
            conn.call(m.StartSpu(conn.next_cid(), spu), timeout_s=15)
        starts[how] += 1
        missed[how] += not _spu_pids(cluster.paths, spu, pid)
    return {"kills": kills, "starts": starts, "sent_before_exit": early, "started_nothing": missed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_spu_exit", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="seconds between a start and the next kill")
    args = parser.parse_args(argv)
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as home, LocalCluster(spus=2, home=home) as cluster:
        cluster.create_topic("busy", partitions=2, replication=2)
        thread = threading.Thread(target=_produce, args=(cluster, stop), daemon=True)
        thread.start()
        time.sleep(args.settle)
        try:
            result = run(cluster, args.kills, args.settle)
        finally:
            stop.set()
            thread.join(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
