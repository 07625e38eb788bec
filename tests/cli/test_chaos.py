"""rillet-chaos: a short run of real faults ends with a clean check, and bad flags are usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

CHAOS = [sys.executable, "-m", "rillet.tools.chaos"]


def test_a_short_chaos_run_loses_nothing():
    done = subprocess.run([*CHAOS, "--faults", "6", "--interval", "200ms", "--sc-faults", "--seed", "11"],
                          capture_output=True, timeout=240)
    line = json.loads(done.stdout.splitlines()[-1])
    assert "error" not in line, line
    assert line["faults"] == 6
    assert any(kind.startswith("sc_") for kind in line["faults_by_kind"]), line["faults_by_kind"]   # seed 11 hits the SC
    assert line["records_acked"] > 0 and line["consumed"] > 0
    for kind in ("lost", "duplicates", "reordered", "divergent", "offset_gaps", "skips", "repeats", "phantoms"):
        assert line[kind] == 0, (kind, line["examples"])
    assert b"seed 11" in done.stderr


def test_bad_flags_are_one_line_and_exit_2():
    done = subprocess.run([*CHAOS, "--faults", "-3"], capture_output=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.decode().strip().count("\n") == 0 and "--faults" in done.stderr.decode()


def test_a_failed_run_says_what_ran_and_what_the_logs_said_last(cluster, capsys):
    """What rillet-chaos prints before a failed run's directory goes (without --keep)."""
    from rillet.tools.chaos import _diagnose
    _diagnose(cluster, lines=2)
    err = capsys.readouterr().err
    assert f"pid {cluster.spu_pid(5001)} " in err and "rillet.broker.spu spu 5001" in err, err
    assert "rillet.broker.sc" in err and "rillet.broker.supervisor" in err, err
    assert "  sc.log:" in err and "  spu-5001.log:" in err, err
    assert any(f"pid {cluster.spu_pid(5001)} {state}:" in err for state in ("sleeping", "running")), err   # the state
