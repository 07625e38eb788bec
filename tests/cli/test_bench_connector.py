"""`python -m rillet.tools.bench_connector`: one JSON line with the connector figures; it fails
if its cluster left anything behind (checked inside, after the cluster stopped)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_connector_prints_its_figures_and_cleans_up():
    out = subprocess.run([sys.executable, "-m", "rillet.tools.bench_connector", "--records", "40"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert set(line) == {"records", "sink_records_per_s", "restart_ms", "redeliver_ms", "load_avg_1m"}
    assert line["records"] == 40 and line["sink_records_per_s"] > 0
    assert 0 <= line["restart_ms"] < line["redeliver_ms"]
