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

KEYS = {"peer", "workload", "mode", "records", "size", "seconds", "records_per_s", "mb_per_s", "p50_us", "p99_us",
        "p999_us", "durable", "compression", "batch_size", "linger_ms"}


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
        assert "error" not in line
        assert (line["peer"], line["records"], line["size"], line["durable"]) == ("rillet", 2000, 100, True)
        assert line["compression"] == compression and line["batch_size"] == 64 * 1024
        assert line["seconds"] > 0 and line["records_per_s"] > 0 and line["mb_per_s"] > 0
    w1, w3 = lines
    assert (w1["mode"], w1["linger_ms"], w1["p50_us"]) == ("throughput", 5, None)
    assert (w3["mode"], w3["linger_ms"]) == ("latency", 0)
    assert 0 < w3["p50_us"] <= w3["p99_us"] <= w3["p999_us"]
    assert not leftovers(result.stderr)


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
])
def test_invalid_flags_exit_2_with_one_line(args):
    result = bench(*args, timeout=30)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert result.stdout == ""
