"""Supervisor: ``python -m rillet.broker.supervisor --cluster NAME --home DIR [--spus N]``.

Why it exists: the SC must not be a single point of failure. SPUs keep serving while
their SC is away (broker/spu/process.py), and this process brings the SC back: it is
what `rillet cluster start` launches, the head of the cluster's session (process
group), and it runs the SC as its only direct child.

* The SC exits 0: the cluster was stopped (ShutdownCluster, SIGTERM). The supervisor
  exits too.
* The SC dies any other way (SIGKILL, a crash): it is started again at once with
  ``--restarted``, and the new SC adopts the SPUs that are still running (same pids).
  An SC that keeps crashing (dying before it is ready, or exiting with an error within
  YOUNG_S) is restarted after a growing delay (`restart_delay_s`), never in a tight
  loop; a ready SC killed by a signal is always back at once, however often it happens.
* The very first SC dies before it is ready (it never wrote its pid file): the
  supervisor exits with its code, so `cluster start` reports the failure at once.

A standby SC waits beside the running one: a process started with ``--standby`` that
has done its imports (0.1-0.2 s of CPU, far more wall time on a loaded machine) and
blocks reading its stdin. A restart writes "go" to it, so the new SC serves within
milliseconds of the old one's death; a fresh standby is then started. The standby is
only started once the running SC has been ready for STANDBY_DELAY_S, so short-lived
clusters (tests) do not pay for it, and a restart without one starts an SC cold.

It is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): SPUs orphaned by a dead SC are
re-parented here instead of to init, and reaped here when they exit, so no zombie is
left whatever dies in which order. SIGTERM or SIGINT: stop the SC the clean way (it
stops its SPUs), then terminate any SPU of the cluster still running, then exit.

The SC watches its supervisor in turn: if the supervisor is gone (SIGKILL), the SC starts
a new one with ``--watch-sc PID``, which is not the SC's parent, so it waits on a pidfd of
that pid instead. A watched SC that vanishes leaving its pid file behind was killed and is
started again; one that removed its pid file stopped cleanly.

It sleeps until something happens (broker/wakeups.py): a process it waits on exits (a
pidfd), a child exits (SIGCHLD), SIGTERM/SIGINT, or a timer of its own is due (the
standby's start, a restart's backoff). An idle cluster's supervisor does not wake at all;
it used to look every 20 ms, 50 wake-ups a second taken from the data path's cores.

It does nothing else: no sockets, no metadata. Its pid is in ``sc/supervisor.pid``;
SPUs look for it to decide whether an SC will come back (see broker/spu/process.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from rillet.ipc.names import ClusterPaths

from .wakeups import Wakeups

YOUNG_S = 5.0               # an SC exiting with an error sooner than this counts towards the backoff
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0
STOP_WAIT_S = 15.0          # the SC stops its SPUs within 5 s; then it is killed
STANDBY_DELAY_S = 1.0       # the running SC must have been ready this long before a standby starts
# Readiness (the SC's pid file) has no event to wait on: looked at this often only between
# STANDBY_DELAY_S and the SC writing it (usually never: an SC is ready well within 1 s).
READY_LOOK_S = 0.1
PR_SET_CHILD_SUBREAPER = 36


def restart_delay_s(crashes: int) -> float:
    """How long to wait before starting the SC again, given how many times in a row it
    crashed (see `is_crash`): none for the first, then doubling from FIRST_DELAY_S up to
    MAX_DELAY_S (a crash loop costs little CPU)."""
    if crashes <= 1:
        return 0.0
    return min(FIRST_DELAY_S * 2 ** (crashes - 2), MAX_DELAY_S)


def is_crash(code: int, ready: bool, lived_s: float) -> bool:
    """A death that says something is wrong with the SC itself (so restarting it at once
    would loop): it never became ready, or it exited with an error soon after. A signal
    (SIGKILL from a drill, the OOM killer) to a ready SC is not."""
    return not ready or (code > 0 and lived_s < YOUNG_S)


def _become_subreaper(log: logging.Logger) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:     # not Linux: orphaned SPUs go to init, which reaps them
        log.warning("cannot become a child subreaper: %s", exc)


class Supervisor:
    def __init__(self, paths: ClusterPaths, spus: int | None, log: logging.Logger) -> None:
        self.paths = paths
        self.spus = spus
        self.log = log
        self.wakeups = Wakeups()                # made on the main thread: it installs signal handling
        self.stopping = False
        self.sc: subprocess.Popen | None = None
        self.sc_started = 0.0
        self.standby: subprocess.Popen | None = None
        self.standby_not_before = 0.0           # a standby that died is replaced no sooner than this

    def request_stop(self, signum, _frame) -> None:
        self.stopping = True
        if self.sc is not None and self.sc.returncode is None:
            try:
                os.kill(self.sc.pid, signal.SIGTERM)    # not Popen.send_signal: it may reap the SC here
            except ProcessLookupError:
                pass

    def _sc_command(self, restarted: bool) -> list[str]:
        cmd = [sys.executable, "-m", "rillet.broker.sc", "--cluster", self.paths.cluster,
               "--home", str(self.paths.home)]
        if restarted:
            cmd.append("--restarted")
        elif self.spus is not None:
            cmd += ["--spus", str(self.spus)]
        return cmd

    def spawn_sc(self, restarted: bool) -> subprocess.Popen:
        if restarted and self.standby is not None:
            standby, self.standby = self.standby, None
            try:
                standby.stdin.write(b"go\n")
                standby.stdin.close()
                return standby
            except OSError:                     # it died meanwhile: reaped as any child; start cold
                pass
        # stdout/stderr are inherited: the launcher pointed them at logs/sc.log.
        return subprocess.Popen(self._sc_command(restarted), stdin=subprocess.DEVNULL, close_fds=True)

    def _maybe_start_standby(self) -> float | None:
        """Start the standby when it is due; else when to look again (None: not until an
        event, as with a standby running or the cluster stopping)."""
        if self.standby is not None or self.stopping or self.sc is None:
            return None
        now = time.monotonic()
        due = max(self.sc_started + STANDBY_DELAY_S, self.standby_not_before)
        if now < due:
            return due
        if not self.sc_became_ready(self.sc.pid):
            return now + READY_LOOK_S
        self.standby = subprocess.Popen(self._sc_command(True) + ["--standby"], stdin=subprocess.PIPE,
                                        close_fds=True)
        self.wakeups.watch(self.standby.pid, child=True)
        return None

    def _drop_standby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is None:
            return
        try:
            standby.stdin.close()               # EOF: it exits
        except OSError:
            pass
        try:
            standby.wait(2.0)
        except subprocess.TimeoutExpired:
            standby.kill()
            standby.wait()
        self.wakeups.forget(standby.pid)

    def wait_sc(self) -> int:
        """Reap every exited child (orphaned SPUs included) until the SC exits; its code.
        Sleeps between events (see the module's docstring)."""
        assert self.sc is not None
        self.wakeups.watch(self.sc.pid, child=True)
        while True:
            self._reap_children()
            if self.sc.returncode is not None:
                self.wakeups.forget(self.sc.pid)
                return self.sc.returncode
            self.wakeups.wait(self._maybe_start_standby())

    def _reap_children(self) -> None:
        """waitpid every exited child: the SC and the standby get their Popen's returncode
        (Popen must not wait for them again), orphans are just reaped."""
        for proc in (self.sc, self.standby):
            # A pidfd can be readable a moment before waitpid(WNOHANG) sees the zombie:
            # then wait for that one pid, which has exited and returns at once.
            if proc is not None and proc.returncode is None and self.wakeups.exited(proc.pid):
                self._reaped(*_waitpid(proc.pid, 0))
        while True:
            pid, status = _waitpid(-1, os.WNOHANG)
            if pid <= 0:
                return
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        if pid <= 0:
            return
        self.wakeups.forget(pid)                  # its pid may name another process from now on
        if self.sc is not None and pid == self.sc.pid:
            self.sc.returncode = os.waitstatus_to_exitcode(status)
        elif self.standby is not None and pid == self.standby.pid:
            self.standby.returncode = os.waitstatus_to_exitcode(status)
            self.log.warning("supervisor: standby SC pid %d exited (%s)", pid, _describe(self.standby.returncode))
            self.standby = None
            # Not at once: a standby that cannot start would otherwise be started in a loop.
            self.standby_not_before = time.monotonic() + STANDBY_DELAY_S

    def sc_became_ready(self, sc_pid: int) -> bool:
        try:
            return int(self.paths.sc_pid_file.read_text().strip()) == sc_pid
        except (OSError, ValueError):
            return False

    def watch_sc(self, pid: int) -> int:
        """Wait for an SC that is not our child (we replaced a dead supervisor) to exit:
        0 if it stopped cleanly (it removes its pid file), else -SIGKILL."""
        self.wakeups.watch(pid, child=False)
        signalled = False
        while not self.wakeups.exited(pid):
            if self.stopping and not signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                signalled = True
            self._reap_children()
            self.wakeups.wait()
        self.wakeups.forget(pid)
        return -signal.SIGKILL if self.sc_became_ready(pid) else 0

    def run(self, watch_pid: int | None = None) -> int:
        crashes = 0
        restarted = watch_pid is not None
        clean = False                                 # the last SC stopped its SPUs itself
        if watch_pid is not None:
            self.log.info("supervisor: watching SC pid %d (the previous supervisor is gone)", watch_pid)
            clean = self.watch_sc(watch_pid) == 0
            if clean or self.stopping:
                self.stopping = True
            else:
                self.log.warning("supervisor: SC pid %d died; starting it again", watch_pid)
        while not self.stopping:
            self.sc = self.spawn_sc(restarted)
            if self.stopping:                        # the signal came while it was being spawned
                self.request_stop(signal.SIGTERM, None)
            started = self.sc_started = time.monotonic()
            self.log.info("supervisor: SC started as pid %d%s", self.sc.pid, " (restart)" if restarted else "")
            code = self.wait_sc()
            clean = code == 0
            if self.stopping or clean:
                break
            if not restarted and not self.sc_became_ready(self.sc.pid):
                self.log.error("supervisor: the SC exited with code %s before it was ready; giving up", code)
                return code if code > 0 else 1
            lived = time.monotonic() - started
            crashes = crashes + 1 if is_crash(code, self.sc_became_ready(self.sc.pid), lived) else 0
            delay = restart_delay_s(crashes)
            self.log.warning("supervisor: SC pid %d died (%s) after %.1f s; starting it again in %.1f s",
                             self.sc.pid, _describe(code), lived, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                self._reap_children()
                self.wakeups.wait(deadline)
            restarted = True
        self._drop_standby()
        if not clean:
            self._stop_leftover_spus()
        return 0

    def _stop_leftover_spus(self) -> None:
        """After the SC is gone: SPUs it did not stop (it was dead, or stopped with SIGKILL)."""
        from rillet.broker.launcher import cluster_processes
        import psutil
        # connectors too: a cluster stopped without its SC leaves none running (broker/sc/connectors.py)
        procs = [p for p in cluster_processes(self.paths, modules=("rillet.broker.spu", "rillet.connectors"))]
        for proc in procs:
            self.wakeups.watch(proc.pid, child=False)    # orphans are ours; others (after --watch-sc) are not
            try:
                proc.terminate()
            except psutil.Error:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        while not all(self.wakeups.exited(p.pid) for p in procs) and time.monotonic() < deadline:
            self._reap_children()
            self.wakeups.wait(deadline)
        for proc in procs:
            if not self.wakeups.exited(proc.pid):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            self.wakeups.forget(proc.pid)
        self._reap_children()


def _waitpid(pid: int, options: int) -> tuple[int, int]:
    try:
        return os.waitpid(pid, options)
    except ChildProcessError:
        return 0, 0


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rillet-supervisor",
                                     description="keep a rillet SC running (started by `rillet cluster start`)")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--spus", type=int, default=None)
    parser.add_argument("--watch-sc", type=int, default=None, metavar="PID",
                        help="take over a running SC whose supervisor died (started by that SC)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("supervisor")
    paths = ClusterPaths.for_cluster(args.cluster, args.home)
    paths.sc_dir.mkdir(parents=True, exist_ok=True)
    _become_subreaper(log)
    sup = Supervisor(paths, args.spus, log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.request_stop)
    paths.supervisor_pid_file.write_text(f"{os.getpid()}\n")
    try:
        return sup.run(args.watch_sc)
    finally:
        try:
            if int(paths.supervisor_pid_file.read_text().strip()) == os.getpid():
                paths.supervisor_pid_file.unlink()
        except (OSError, ValueError):
            pass
        log.info("supervisor: stopped")


if __name__ == "__main__":
    sys.exit(main())
