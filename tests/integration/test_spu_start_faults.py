"""Starting an SPU while things go wrong (broker/spu_start.py, the SC's StartSpu): what
`rillet cluster spu start`, `tools/spu-kill --restart-after` and `rillet-chaos` go through.

* The SC is killed while a start waits: the start asks the SC that replaces it, and the SPU
  comes online (it used to fail on the dead admin connection).
* The SPU the SC starts exits before it comes online: the start fails at once saying why
  (the SPU log's last line), not after its whole timeout with "did not come online".
* A killed process whose main thread is a zombie while another thread still exits is not
  gone yet: a start sent then found the SC counting it running and Online, started nothing,
  and waited out its timeout (the CHAOS failure this file was written for).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from rillet.broker import launcher
from rillet.broker.spu_start import process_gone, start_spu
from rillet.ipc.errors import RilletError, Timeout
from rillet.testing import LocalCluster
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    with LocalCluster(spus=1, home=tmp_path_factory.mktemp("rillet")) as c:
        c.create_topic("solo", partitions=1)
        yield c
    assert not c.leftovers()


def sc_answers(cluster) -> bool:
    try:
        launcher.cluster_status(cluster.paths)
        return True
    except RilletError:
        return False


@contextlib.contextmanager
def stand_in():
    """A live process the start waits out as if it were the SPU's old one (killed, not yet exited)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_start_asks_the_sc_that_replaced_a_killed_one(solo):
    start_spu(solo.paths, 5001, 30.0)        # online (a test before may have left it down)
    old = solo.kill_spu(5001)
    wait_for(lambda: process_gone(old), what="SPU 5001 gone")
    result: dict = {}
    with stand_in() as waited:
        def start():
            try:
                result["info"] = start_spu(solo.paths, 5001, 30.0, old_pid=waited.pid)[0]
            except Exception as exc:  # noqa: BLE001 - handed to the test's thread
                result["error"] = exc
        thread = threading.Thread(target=start)
        thread.start()
        time.sleep(0.5)                      # the start has asked the SC for the SPU's row and waits
        sc = launcher.sc_pid(solo.paths)
        os.kill(sc, signal.SIGKILL)
        wait_for(lambda: launcher.sc_pid(solo.paths) not in (None, sc) and sc_answers(solo), what="a new SC")
        waited.kill()
        waited.wait()
        thread.join(40)
    assert not thread.is_alive()
    assert "error" not in result, result
    info = result["info"]
    assert info.status == "Online" and info.pid not in (0, old, waited.pid), info
    assert solo.spu_pid(5001) == info.pid


def test_a_spu_that_exits_at_start_fails_the_start_at_once_saying_why(solo):
    """Its socket taken by another process: the SPU started exits with an error; the start
    says so within seconds (the SC stops waiting when its child exits), with the log's line."""
    start_spu(solo.paths, 5001, 30.0)
    old = solo.kill_spu(5001)
    wait_for(lambda: process_gone(old), what="SPU 5001 gone")
    path = solo.paths.spu_socket(5001)
    path.unlink(missing_ok=True)             # the killed SPU's stale socket
    taken = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        taken.bind(str(path))
        taken.listen()
        started = time.monotonic()
        with pytest.raises(RilletError) as failed:
            start_spu(solo.paths, 5001, 20.0, old_pid=old)
        elapsed = time.monotonic() - started
    finally:
        taken.close()
        path.unlink(missing_ok=True)
    message = str(failed.value)
    assert "exited" in message and "before coming online" in message, message
    assert "in use by a running process" in message, message          # the SPU log's last line
    assert elapsed < 8.0, (elapsed, message)
    info, already = start_spu(solo.paths, 5001, 30.0)                  # the socket free again: it starts
    assert not already and info.status == "Online" and info.pid != old


def test_a_start_that_times_out_names_what_the_sc_lists_and_the_process_state(solo):
    """A paused SPU (SIGSTOP) is alive, so the SC starts no other; the wait cannot end, and
    its Timeout says why: the SC lists it Offline, its process is stopped."""
    start_spu(solo.paths, 5001, 30.0)
    pid = solo.kill_spu(5001, signal.SIGSTOP)
    try:
        wait_for(lambda: launcher.cluster_status(solo.paths).spus_online == 0, what="SPU 5001 silent")
        with pytest.raises(Timeout) as timed_out:
            start_spu(solo.paths, 5001, 3.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    message = str(timed_out.value)
    assert "did not come online within 3 s" in message, message
    assert "the SC lists it Offline" in message and f"pid {pid} stopped" in message, message
    wait_for(lambda: start_spu(solo.paths, 5001, 10.0)[0].pid == pid, what="SPU 5001 online again")


def test_an_sc_killed_right_after_it_spawned_a_spu_leaves_it_to_the_next_sc(solo):
    """StartSpu answered or not: the SC that spawned the SPU dies before the SPU registers
    with it. The next SC adopts that process (same pid, no second one) and lists it Online
    without being asked again."""
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    from rillet.broker.spu_start import _spu_pids
    start_spu(solo.paths, 5001, 30.0)
    old = solo.kill_spu(5001)
    wait_for(lambda: process_gone(old), what="SPU 5001 gone")
    log = solo.paths.sc_log_file
    seen = log.read_text().count("spawned SPU 5001 as pid")
    with admin_connection(solo.paths) as conn:
        conn.send(m.StartSpu(conn.next_cid(), 5001))               # its answer is not waited for
        wait_for(lambda: log.read_text().count("spawned SPU 5001 as pid") > seen, what="the spawn", timeout=10)
        sc = launcher.sc_pid(solo.paths)
        os.kill(sc, signal.SIGKILL)
    spawned = int(log.read_text().rsplit("spawned SPU 5001 as pid ", 1)[1].split()[0])
    wait_for(lambda: launcher.sc_pid(solo.paths) not in (None, sc) and sc_answers(solo), what="a new SC")
    wait_for(lambda: solo.spu_pid(5001) == spawned, what=f"SPU 5001 Online as pid {spawned}")
    assert _spu_pids(solo.paths, 5001, None) == [spawned]


def test_waiting_for_a_resumed_spu_outlives_an_sc_restart(solo):
    """`tools/spu-kill --signal STOP --restart-after` waits for the SPU to be Online again
    (wait_online); the SC is killed meanwhile: the wait asks the next SC."""
    from rillet.broker.spu_start import wait_online
    start_spu(solo.paths, 5001, 30.0)
    pid = solo.kill_spu(5001, signal.SIGSTOP)
    result: dict = {}
    try:
        wait_for(lambda: launcher.cluster_status(solo.paths).spus_online == 0, what="SPU 5001 silent")

        def wait():
            try:
                result["info"] = wait_online(solo.paths, 5001, 30.0)
            except Exception as exc:  # noqa: BLE001 - handed to the test's thread
                result["error"] = exc
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)
        sc = launcher.sc_pid(solo.paths)
        os.kill(sc, signal.SIGKILL)
        wait_for(lambda: launcher.sc_pid(solo.paths) not in (None, sc) and sc_answers(solo), what="a new SC")
    finally:
        os.kill(pid, signal.SIGCONT)
    thread.join(40)
    assert not thread.is_alive()
    assert "error" not in result, result
    assert result["info"].status == "Online" and result["info"].pid == pid


# A process whose main thread ends alone (the exit syscall, not exit_group) while another thread
# runs on: what a SIGKILLed SPU looks like for a moment while its last thread tears it down.
SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())
MAIN_THREAD_EXITS_FIRST = ("import ctypes, threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); "
                           f"time.sleep(0.1); ctypes.CDLL(None).syscall({SYS_EXIT}, 0)")


@pytest.mark.skipif(SYS_EXIT is None, reason="the exit syscall's number is known for x86_64 and aarch64 only")
def test_a_process_is_gone_only_once_every_thread_of_it_has_exited():
    from rillet.broker.sc.processes import alive
    proc = subprocess.Popen([sys.executable, "-c", MAIN_THREAD_EXITS_FIRST])
    try:
        wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, what="its main thread a zombie")
        assert proc.poll() is None                      # its parent cannot reap it yet: not gone
        assert not process_gone(proc.pid)
        assert alive(psutil.Process(proc.pid))          # what the SC asks of an adopted SPU
    finally:
        proc.kill()
    wait_for(lambda: process_gone(proc.pid), what="gone once killed")
    proc.wait()
    assert process_gone(proc.pid)


def test_bench_spu_exit_prints_its_counts():
    """tools/bench_spu_exit.py, which measured the race (README, Benchmarks): a short run."""
    done = subprocess.run([sys.executable, "-m", "rillet.tools.bench_spu_exit", "--kills", "4", "--settle", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.splitlines()[-1])
    assert line["starts"] == {"zombie": 2, "exited": 2}, line
    assert line["sent_before_exit"]["exited"] == 0 and line["started_nothing"]["exited"] == 0, line
