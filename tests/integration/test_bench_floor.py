"""bench_floor: three real processes doing only a linger-0 record's system calls; it reports the
CPU each spends per record (the floor README's W3 figures are read against)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_floor_reports_the_cpu_per_record_of_each_process():
    out = subprocess.run([sys.executable, "-m", "rillet.tools.bench_floor", "--records", "300"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.splitlines()[-1])
    assert line["records"] == 300
    # Measured in each process, not left out: above zero, below a millisecond a record.
    for side in ("client", "server", "consumer"):
        assert 0 < line[f"{side}_cpu_us_per_record"] < 1000, line


def test_bench_floor_refuses_a_bad_count_with_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "rillet.tools.bench_floor", "--records", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--records must be at least 1" in out.stderr
