"""`rillet-bench` end to end: it starts its own cluster, prints one JSON line per workload
(the peer harness's contract) and leaves no process or shared-memory object behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest

from tests.cli._terminal import stderr_on_a_terminal

from rillet.tools import bench as bench_tool
from rillet.tools import bench_failover

KEYS = {"peer", "workload", "mode", "records", "size", "seconds", "records_per_s", "mb_per_s", "p50_us", "p99_us",
        "p999_us", "durable", "compression", "batch_size", "linger_ms", "cpu_s", "cpu_us_per_record"}


SERVERS = ("sc", "sc-standby", "supervisor")     # measured under their own names, beside the SPUs


def cpu_per_record_of(line: dict) -> dict:
    per_record = line["cpu_us_per_record"]
    assert set(per_record) == set(line["cpu_s"]) | ({"producer_net"} if line["mode"] == "latency" else set())
    assert all(v is not None and v >= 0 for v in per_record.values()), per_record
    return per_record


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rillet.tools.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def leftovers(stderr: str) -> list[str]:
    """What of the run's cluster (named on stderr) still exists: processes, shm objects, its home."""
    match = re.search(r"cluster (\S+) in (\S+)", stderr)
    assert match, stderr
    name, home = match.groups()
    found = [f"shm {n}" for n in os.listdir("/dev/shm") if name in n]
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (name in cmd or home in cmd):
            found.append(f"process {proc.info['pid']} {cmd}")
    return found + ([f"home {home}"] if os.path.exists(home) else [])


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_workloads_print_one_json_line_each(compression):
    result = bench("--workload", "W1,W3", "--records", "2000", "--timeout", "120", "--compression", compression)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["workload"] for line in lines] == ["W1", "W3"]
    for line in lines:
        assert KEYS <= set(line), KEYS - set(line)
        assert "error" not in line and "metrics" not in line           # no --metrics: no endpoint, no key
        assert (line["peer"], line["records"], line["size"], line["durable"]) == ("rillet", 2000, 100, True)
        assert line["compression"] == compression and line["batch_size"] == 64 * 1024
        assert line["seconds"] > 0 and line["records_per_s"] > 0 and line["mb_per_s"] > 0
        # each server process under its own name (the idle standby SC was measured as "sc")
        assert set(cpu_per_record_of(line)) >= {"producer", "consumer", "sc", "sc-standby", "supervisor", "spu-5001"}
    w1, w3 = lines
    assert (w1["mode"], w1["linger_ms"], w1["p50_us"], w1["api"]) == ("throughput", 5, None, "send_all")
    assert (w3["mode"], w3["linger_ms"]) == ("latency", 0)
    assert 0 < w3["p50_us"] <= w3["p99_us"] <= w3["p999_us"]
    assert 0 <= w3["cpu_producer_pacing_s"] <= w3["cpu_producer_s"]
    assert w3["cpu_us_per_record"]["producer_net"] <= w3["cpu_us_per_record"]["producer"]
    assert not leftovers(result.stderr)


def test_fan_out_split_and_the_plain_send_loop():
    # W4: every consumer gets every record; W5: 3 producers, 2 consumers sharing 4 partitions.
    result = bench("--workload", "W1,W4,W5", "--records", "3000", "--send-mode", "send", "--consumers", "2",
                   "--producers", "3", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    w1, w4, w5 = [json.loads(line) for line in result.stdout.splitlines()]
    for line in (w1, w4, w5):
        assert "error" not in line and line["api"] == "send" and line["records"] == 3000
        assert (line["batch_size"], line["linger_ms"]) == (16_384, 100)     # the client's defaults
    assert (w1["producers"], w1["consumers"]) == (1, 1)
    assert set(cpu_per_record_of(w4)) == {"producer", "consumer-0", "consumer-1", *SERVERS, "spu-5001"}
    assert w4["records_per_s"] == pytest.approx(2 * 3000 / w4["seconds"], rel=1e-3)   # delivered, both consumers
    assert (w5["producers"], w5["consumers"], w5["partitions"]) == (3, 2, 4)
    assert set(cpu_per_record_of(w5)) == {"producer-0", "producer-1", "producer-2", "consumer-0", "consumer-1",
                                           *SERVERS, "spu-5001"}
    assert w5["records_per_s"] == pytest.approx(3000 / w5["seconds"], rel=1e-3)
    assert not leftovers(result.stderr)


def test_workload_shapes():
    def runs(*argv):
        return {r.workload: r for r in bench_tool.parse_runs(bench_tool.build_parser().parse_args(list(argv)))}
    got = runs("--workload", "W1,W3,W4,W5")
    shape = {w: (r.producers, r.consumers, r.partitions, r.split, r.send_mode, r.batch_size, r.linger_ms)
             for w, r in got.items()}
    assert shape == {"W1": (1, 1, 1, False, "send_all", 65536, 5), "W3": (1, 1, 1, False, "send", 65536, 0),
                     "W4": (1, 4, 1, False, "send_all", 65536, 5), "W5": (4, 4, 4, True, "send_all", 65536, 5)}
    assert got["W5"].partitions_of(1) == [1] and got["W4"].partitions_of(3) == [0]
    assert [got["W5"].share(i) for i in range(4)] == [250_000] * 4
    odd = runs("--workload", "W5", "--records", "10", "--producers", "3", "--partitions", "5", "--consumers", "2")
    assert [odd["W5"].share(i) for i in range(3)] == [4, 3, 3] and odd["W5"].partitions_of(0) == [0, 2, 4]
    # --producers/--consumers shape W4/W5 only; W1 keeps its one producer and one consumer
    assert (runs("--workload", "W1", "--consumers", "3")["W1"].consumers) == 1


def test_a_failed_workload_prints_its_error_and_exits_1():
    # 1 ms is far too short for 20,000 records: the run passes --timeout, the children are killed
    result = bench("--workload", "W1", "--records", "20000", "--timeout", "0.001")
    assert result.returncode == 1, result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert KEYS <= set(line) and "timeout" in line["error"].lower()
    assert line["seconds"] is None and line["records_per_s"] is None
    assert not leftovers(result.stderr)


@pytest.mark.parametrize("args", [
    ["--workload", "W9"],
    ["--records", "0"],
    ["--size", "ten"],
    ["--compression", "brotli"],
    ["--workload", "W3", "--size", "8"],
    ["--timeout", "-1"],
    ["--no-such-flag"],
    ["--workload", "FAILOVER", "--kills", "0"],
    ["--workload", "FAILOVER", "--kill-interval", "soon"],
    ["--workload", "FAILOVER", "--kill-interval", "0"],
    ["--send-mode", "batch"],
    ["--workload", "W5", "--partitions", "2"],
    ["--consumers", "0"],
])
def test_invalid_flags_exit_2_with_one_line(args):
    result = bench(*args, timeout=30)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert result.stdout == ""


FAILOVER_KEYS = {"peer", "workload", "kills", "records_acked", "lost", "duplicates", "time_to_new_leader_ms",
                 "time_to_first_ack_ms", "per_kill"}


def test_failover_kills_the_leader_and_loses_no_acknowledged_record():
    result = bench("--workload", "FAILOVER", "--kills", "3", "--kill-interval", "300ms", "--timeout", "60",
                   timeout=120)
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert FAILOVER_KEYS <= set(line), FAILOVER_KEYS - set(line)
    assert "error" not in line, line["error"]
    assert (line["peer"], line["workload"], line["kills"], line["lost"]) == ("rillet", "FAILOVER", 3, 0)
    assert line["records_acked"] > 0 and line["duplicates"] >= 0 and line["send_failures"] == 0
    for figure in ("time_to_new_leader_ms", "time_to_first_ack_ms"):
        stats = line[figure]
        assert set(stats) >= {"p50", "p99", "max"} and 0 < stats["p50"] <= stats["p99"] <= stats["max"], stats
    assert line["time_to_new_leader_ms"]["max"] < 5000
    per_record = line["cpu_us_per_record"]      # SPUs killed during the run read as null
    # (the standby SC may not be up yet in a run this short)
    assert set(per_record) - {"sc-standby"} == {"producer", "sc", "supervisor", "spu-5001", "spu-5002", "spu-5003"}
    assert per_record["producer"] > 0
    epochs = [(k["epoch"], k["new_epoch"]) for k in line["per_kill"]]
    assert all(new > old for old, new in epochs) and all(k["spu"] != k["new_leader"] for k in line["per_kill"])
    assert not leftovers(result.stderr)


def test_failover_figures_find_lost_records_and_the_new_leaders_first_ack():
    # Offsets 0-3 written at epoch 1, 4-6 at epoch 2 (offset 4 holds seq 3 again: a retried
    # duplicate). The kill of the epoch-1 leader happens at t=100; the ack at t=101 (offset 3)
    # was the old leader's, still in the socket; the new leader's first is at t=150 (t in ms).
    seq, MS = bench_tool.SEQ.pack, 1_000_000
    log = [(0, seq(0)), (1, seq(1)), (2, seq(2)), (3, seq(3)), (4, seq(3)), (5, seq(4)), (6, seq(5))]
    acked = {"seq": [0, 1, 2, 3, 4, 5], "offset": [0, 1, 2, 3, 5, 6],
             "t_ns": [t * MS for t in (10, 20, 30, 101, 150, 160)]}
    prod = {**{k: bench_tool.array("q", v).tobytes() for k, v in acked.items()}, "sent": 6, "failed": 0,
            "first_failure": None}
    kill = {"spu": 5001, "epoch": 1, "in_sync": 3, "t_kill_ns": 100 * MS, "t_leader_ns": 120 * MS, "new_leader": 5002,
            "new_epoch": 2, "restart_ms": 1.0}
    epochs = ([0, 4], [1, 2])
    fig = bench_failover._failover_figures([kill], prod, log, epochs)
    assert (fig["lost"], fig["duplicates"], fig["offset_gaps"], fig["records_acked"]) == (0, 1, 0, 6)
    [k] = fig["per_kill"]
    assert (k["old_leader_acks"], k["first_ack_ms"], k["new_leader_ms"]) == (1, 50.0, 20.0)
    # A record acknowledged at an offset that now holds something else is lost.
    fig = bench_failover._failover_figures([kill], prod, log[:5] + [(5, seq(9)), (6, seq(5))], epochs)
    assert fig["lost"] == 1


def test_failover_is_not_in_the_default_set():
    runs, keep = bench_tool.parse_args([])
    assert [r.workload for r in runs] == ["W1", "W2", "W3"] and not keep
    [run] = bench_tool.parse_runs(bench_tool.build_parser().parse_args(["--workload", "failover", "--records", "5"]))
    assert (run.mode, run.spus, run.kills, run.kill_interval_s, run.partitions, run.linger_ms) == \
        ("failover", 3, 20, 1.0, 1, 0)


def test_metrics_option_runs_with_the_endpoint_scraped():
    """--metrics: the cluster serves metrics and the run scrapes them (to compare on and off)."""
    result = bench("--workload", "W1", "--records", "200000", "--size", "10", "--metrics", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert "error" not in line and line["metrics"] is True and line["metrics_scrapes"] >= 0
    assert "metrics scrape failed" not in result.stderr
    assert not leftovers(result.stderr)
    # without --metrics the line has no "metrics" key: test_workloads_print_one_json_line_each


def test_plot_draws_an_svg_and_a_pipe_gets_no_progress(tmp_path):
    import xml.etree.ElementTree as ET
    out = tmp_path / "bench.svg"
    result = bench("--workload", "W1,W3", "--records", "2000", "--timeout", "120", "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and " records/s" not in result.stderr       # no progress line in a pipe
    assert all(line.startswith("rillet-bench: ") for line in result.stderr.splitlines()), result.stderr
    assert f"rillet-bench: wrote {out}" in result.stderr
    root = ET.parse(out).getroot()                  # well-formed, or this raises
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    assert any(t.startswith("W1: throughput over time") for t in texts), texts
    assert any(t.startswith("W3: throughput over time") for t in texts), texts
    assert "W3: one-way latency distribution" in texts and any(t.startswith("p99 ") for t in texts)
    assert len(list(root.iter(f"{ns}polyline"))) == 2 and len(list(root.iter(f"{ns}rect"))) > 10
    assert not leftovers(result.stderr)


def test_plot_needs_an_existing_directory(tmp_path):
    result = bench("--plot", str(tmp_path / "missing" / "x.svg"), timeout=30)
    assert result.returncode == 2 and "no directory" in result.stderr


def test_progress_on_a_terminal():
    rc, seen = stderr_on_a_terminal([sys.executable, "-m", "rillet.tools.bench", "--workload", "W1", "--records", "2000"])
    assert rc == 0
    text = seen.decode()
    assert "\rrillet-bench: W1: 2,000 of 2,000 records (100%), " in text, text
    assert not leftovers(text)


def test_bench_cpu_times_each_path_and_leaves_nothing():
    result = subprocess.run([sys.executable, "-m", "rillet.tools.bench_cpu", "--records", "300", "--rounds", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == ["send", "linger0", "send_all", "consume", "spu", "wait",
                                                "send_all_kib"]
    send, linger0, send_all, consume, spu, wait, kib = lines
    for line, key in ((send, "caller_us_per_send"), (linger0, "caller_us_per_send"), (linger0, "spu_us_per_record"),
                      (send_all, "caller_us_per_record"), (consume, "consumer_us_per_record"),
                      (spu, "spu_us_per_request"), (wait, "producer_us_per_record"), (wait, "spu_us_per_record"),
                      (wait, "round_trip_us_median"), (kib, "producer_us_per_record"), (kib, "spu_us_per_record")):
        assert len(line[key]) == 2 and all(f >= 0 for f in line[key])       # the warm-up round is dropped
        assert line[f"{key}_min"] <= line[f"{key}_median"]
    assert send["caller_us_per_send_median"] > 0 and linger0["caller_us_per_send_median"] > 0
    assert wait["round_trip_us_median_min"] > 0
    assert not leftovers(result.stderr)


def test_bench_cpu_refuses_unknown_paths():
    result = subprocess.run([sys.executable, "-m", "rillet.tools.bench_cpu", "--paths", "send,nope"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--paths takes send, linger0, send_all, consume, spu, wait" in result.stderr


def test_the_first_workload_waits_for_the_standby_sc_to_be_up(tmp_path):
    """rillet-bench's _settle: the standby SC (started a second after the SC is ready) has done its
    imports before any workload is timed; without a standby it gives up at its limit."""
    import time

    from rillet.broker import launcher
    from rillet.testing import LocalCluster
    from rillet.tools.bench import _schedstat_cpu_s, _settle
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        start = time.monotonic()
        assert _settle(cluster)
        assert time.monotonic() - start < 6.0
        standby = [p for p in launcher.cluster_processes(cluster.paths, modules=(launcher.SC,))
                   if "--standby" in (p.info["cmdline"] or [])]
        assert len(standby) == 1
        before = _schedstat_cpu_s(standby[0].pid)
        time.sleep(0.2)
        assert _schedstat_cpu_s(standby[0].pid) - before < 0.005        # idle: blocked on its stdin
    with LocalCluster(spus=1, home=tmp_path / "short") as cluster:
        assert not _settle(cluster, limit_s=0.3)                      # no standby that soon
