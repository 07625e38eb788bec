"""bench_wake: real reader processes woken through a real positions table; it reports the
wake-up latency and what a wake-up costs each side (the figure README's W3 budget rests on)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_wake_reports_latency_and_the_cpu_of_both_sides_of_a_wake_up():
    out = subprocess.run([sys.executable, "-m", "rillet.tools.bench_wake", "--readers", "1", "--publishes", "120"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.splitlines()[-1])
    assert line["readers"] == 1 and line["wakes"] > 0
    assert 0 < line["p50_us"] <= line["p99_us"]
    # Each side's CPU per wake-up is measured, not left out: above zero, below a millisecond.
    assert 0 < line["writer_cpu_per_publish_us"] < 1000
    assert 0 < line["reader_cpu_per_wake_us"] < 1000
