"""`rillet top` and `rillet cluster status --watch` against a real cluster.

In a pipe: one plain snapshot (no escapes), exit 0; `-O json` one object with HW, LEO and
consumer lag. On a terminal (a pty): the live view redraws, and Ctrl-C ends it with exit 0.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli


def _seed(cluster) -> None:
    ok(run_cli(cluster, "topic", "create", "top-topic", "-p", "2"))
    ok(run_cli(cluster, "produce", "top-topic", "-p", "0", input=b"".join(b"r%d\n" % i for i in range(10))))
    ok(run_cli(cluster, "produce", "top-topic", "-p", "1", input=b"x\n"))
    # c1 sees offsets 0..9 of partition 0, then 5 more arrive: its lag is 5.
    ok(run_cli(cluster, "consume", "top-topic", "-p", "0", "-B", "-d", "-c", "c1"))
    ok(run_cli(cluster, "produce", "top-topic", "-p", "0", input=b"".join(b"s%d\n" % i for i in range(5))))


def _wait_reported(cluster, hw: int) -> None:
    """The SC hears of the HW from the leader's next report (within 50 ms); wait for it."""
    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(ok(run_cli(cluster, "partition", "list", "top-topic", "-O", "json")))
        if rows[0]["hw"] == hw:
            return
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_top_in_a_pipe_prints_one_plain_snapshot(cluster):
    _seed(cluster)
    _wait_reported(cluster, 15)
    result = run_cli(cluster, "top")
    text = ok(result)
    assert "\x1b" not in text
    lines = text.splitlines()
    assert re.match(rf"cluster '{cluster.name}' at \d\d:\d\d:\d\d\.\d{{3}}: 1/1 SPUs online, \d+/\d+ partitions online",
                    lines[0]), lines[0]
    rows = [re.split(r" {2,}", line.strip()) for line in lines]
    header = rows.index(["TOPIC", "PARTITION", "LEADER", "EPOCH", "IN-SYNC", "STATUS", "HW", "LEO", "RATE/S", "LAG"])
    mine = [r for r in rows[header + 1:] if r[0] == "top-topic"]
    assert mine == [["top-topic", "0", "5001", "1", "[5001]", "Online", "15", "15", "-", "5"],
                    ["top-topic", "1", "5001", "1", "[5001]", "Online", "1", "1", "-", "-"]]
    assert ["c1", "top-topic", "0", "9", "5"] in rows
    assert ["5001", "Online"] == rows[rows.index(["SPU", "STATUS", "PID", "LEADERS", "REPLICAS"]) + 1][:2]

    snapshot = json.loads(ok(run_cli(cluster, "top", "-O", "json")))
    part0 = next(p for p in snapshot["partitions"] if p["topic"] == "top-topic" and p["partition"] == 0)
    assert (part0["leader"], part0["hw"], part0["leo"], part0["lag"], part0["rate"]) == (5001, 15, 15, 5, None)
    assert {"consumer": "c1", "topic": "top-topic", "partition": 0, "offset": 9, "lag": 5} in snapshot["consumers"]
    assert snapshot["spus"][0]["online"] is True and snapshot["error"] is None and snapshot["events"] == []
    assert snapshot["cluster"] == cluster.name and isinstance(snapshot["wall_ms"], int)

    watch = ok(run_cli(cluster, "cluster", "status", "--watch"))
    assert watch.splitlines()[0].startswith(f"cluster '{cluster.name}' at ") and "top-topic" in watch


def test_top_on_a_terminal_redraws_until_ctrl_c(cluster):
    ok(run_cli(cluster, "topic", "create", "top-live"))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rillet.tools.cli", "top", "--interval", "200ms"],
                            stdin=follower, stdout=follower, stderr=follower, env=cluster.env, close_fds=True)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(b"\x1b[H") < 3 and time.monotonic() < deadline:     # three redraws
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
        while select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(leader)
    assert seen.count(b"\x1b[H") >= 3, seen[-2000:]
    assert b"top-live" in seen and b"(Ctrl-C to quit)" in seen
    assert seen.startswith(b"\x1b[?1049h") and seen.rstrip().endswith(b"\x1b[?1049l")    # the screen is given back
    assert code == 0


def test_top_on_a_cluster_that_is_not_running(cluster):
    err = one_line_error(run_cli(cluster, "--cluster", "nothing-here", "top"), code=1)
    assert err.startswith("error: cluster 'nothing-here' is not running")


def test_top_when_the_sc_does_not_answer(cluster):
    from rillet.ipc.admin_link import sc_pid
    pid = sc_pid(cluster.paths)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_cli(cluster, "top", timeout=30)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    err = one_line_error(result, code=1)
    assert err.startswith("error: ") and "SC" in err, err
    assert took < 10, f"rillet top took {took:.1f} s to say the SC does not answer"
