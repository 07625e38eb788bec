"""rillet-bench reads the cluster processes' CPU from the scheduler's nanosecond counters."""

import os
import threading
import time

from rillet.tools.bench import _cpu_times, _schedstat_cpu_s


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_schedstat_counts_every_thread_at_sub_tick_resolution():
    before = _schedstat_cpu_s(os.getpid())
    release, burned = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (_burn(0.013), burned.set(), release.wait(5)))
    worker.start()             # 13 ms each: not a multiple of a 10 ms tick; the worker stays alive
                               # until read (a thread that ended is no longer listed)
    _burn(0.013)
    burned.wait(5)
    used = _schedstat_cpu_s(os.getpid()) - before
    release.set()
    worker.join()
    assert 0.024 <= used < 0.2, used          # both threads' 13 ms
    assert abs(used * 100 - round(used * 100)) > 1e-6, used     # not whole 10 ms ticks


def test_a_gone_process_reads_as_nan():
    import math
    import subprocess
    import sys

    import psutil
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    child.wait()
    assert math.isnan(_cpu_times({"gone": proc})["gone"])

