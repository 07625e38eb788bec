"""broker/wakeups.py: the supervisor's sleep ends on a watched exit, a child's exit, a signal or
its deadline, and on nothing else. Run in a child Python (it installs a SIGCHLD handler and
the process's signal wake-up fd, which the test runner's own process must keep)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from rillet.broker.wakeups import Wakeups

    w = Wakeups()
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))

    def slept(deadline=None):
        t = time.monotonic(); w.wait(deadline); return time.monotonic() - t

    # nothing happens: the deadline ends the sleep, not a poll
    print("deadline", 0.19 < slept(time.monotonic() + 0.2) < 1.5)
    # a child exits: SIGCHLD ends the sleep long before the 5 s deadline
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.1)"])
    w.watch(child.pid, child=True)
    print("child", slept(time.monotonic() + 5) < 2, w.exited(child.pid))
    child.wait(); w.forget(child.pid)
    # a process that is not our child (the grandchild of a shell that exits at once): its pidfd
    out = subprocess.run(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True).stdout
    other = int(out)
    w.watch(other, child=False)
    alive = not w.exited(other)
    woke = []
    while not w.exited(other) and len(woke) < 50:
        woke.append(slept(time.monotonic() + 5))
    print("other", alive, w.exited(other), 0.1 < sum(woke) < 2, len(woke) <= 3)
    w.forget(other)
    # a signal with a Python handler ends the sleep at once (no lost wake-up)
    os.kill(os.getpid(), signal.SIGTERM)
    print("signal", slept(time.monotonic() + 5) < 1, stopped == [1])
    # a pid that is gone already counts as exited
    dead = subprocess.Popen(["true"]); dead.wait()
    w.watch(dead.pid, child=True)
    print("gone", w.exited(dead.pid))
    # without pidfds (Linux < 5.3): a non-child is polled every POLL_S, a child still ends the sleep
    w.pidfds = False
    other = int(subprocess.run(["sh", "-c", "sleep 0.2 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True).stdout)
    w.watch(other, child=False)
    alive = not w.exited(other)
    woke = []
    while not w.exited(other) and len(woke) < 500:
        woke.append(slept(time.monotonic() + 5))
    print("polled", alive, w.exited(other), len(woke) > 3, max(woke) < 0.5)
    w.forget(other)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.1)"])
    w.watch(child.pid, child=True)
    print("child without pidfd", slept(time.monotonic() + 5) < 2)
    child.wait()
    w.close()
""")


def test_wakeups_end_on_events_and_deadlines_only():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == [
        "deadline True", "child True True", "other True True True True", "signal True True", "gone True",
        "polled True True True True", "child without pidfd True",
    ], r.stdout
