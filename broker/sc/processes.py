"""The OS processes an SC looks after, apart from its decisions (broker/sc/process.py).

* SPUs it spawned: its children, reaped here with ``Popen.poll``.
* SPUs it adopted: found running when it started (a previous SC spawned them). They
  are not its children: the supervisor, a child subreaper, reaps them; here they are
  followed by pid with psutil, and a zombie counts as gone.
* A replacement supervisor: when the supervisor that runs this SC was killed, the SC
  starts one that watches it by pid (broker/supervisor.py ``--watch-sc``), so the SC's
  own next death is healed too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import psutil

from rillet.broker import launcher
from rillet.broker.spu_start import process_gone
from rillet.ipc.names import ClusterPaths

SUPERVISOR_CHECK_S = 1.0       # how often the SC looks for its supervisor (no pidfd to follow it by)


class SpuProcesses:
    def __init__(self, paths: ClusterPaths, log: logging.Logger) -> None:
        self.paths = paths
        self.log = log
        self.children: dict[int, subprocess.Popen] = {}     # SPUs this SC started
        self.adopted: dict[int, psutil.Process] = {}        # SPUs found running when it started
        self._supervisor: subprocess.Popen | None = None    # one this SC started, after its own died
        self._supervisor_checked = 0.0
        self._supervisor_fd: int | None = None              # a pidfd of the live supervisor, on the loop

    def spawn(self, spu_id: int) -> None:
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.paths.spu_log_file(spu_id), "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", launcher.SPU, "--cluster", self.paths.cluster,
                 "--home", str(self.paths.home), "--spu-id", str(spu_id)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, close_fds=True,
            )
        self.children[spu_id] = proc
        self.log.info("spawned SPU %d as pid %d", spu_id, proc.pid)

    def adopt(self, spu_id: int, proc: psutil.Process) -> None:
        self.adopted[spu_id] = proc
        self.log.info("adopting SPU %d (pid %d)", spu_id, proc.pid)

    def running(self, spu_id: int) -> bool:
        proc = self.children.get(spu_id)
        return (proc is not None and proc.poll() is None) or self.adopted_running(spu_id)

    def adopted_running(self, spu_id: int) -> bool:
        proc = self.adopted.get(spu_id)
        return proc is not None and alive(proc)

    def any_running(self) -> bool:
        return any(self.running(s) for s in set(self.children) | set(self.adopted))

    def reap(self) -> None:
        """Forget exited SPUs (their control links already told the SC they died)."""
        for spu_id, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                self.children.pop(spu_id, None)
                self.log.warning("SPU %d (pid %d) exited with code %s", spu_id, proc.pid, code)
        for spu_id, proc in list(self.adopted.items()):
            if not alive(proc):
                self.adopted.pop(spu_id, None)
                self.log.warning("adopted SPU %d (pid %d) exited", spu_id, proc.pid)
        if self._supervisor is not None and self._supervisor.poll() is not None:
            self._supervisor = None

    def terminate_unregistered(self, except_ids) -> None:
        """SIGTERM SPUs not in ``except_ids`` (not registered: they cannot hear Shutdown), adopted
        ones and ones this SC started that have not registered yet (a stop right after the start:
        they would otherwise be killed only after SPU_STOP_TIMEOUT_S)."""
        for spu_id, proc in self.adopted.items():
            if spu_id not in except_ids:
                signal_quietly(proc, "terminate")
        for spu_id, child in self.children.items():
            if spu_id not in except_ids and child.poll() is None:
                child.terminate()

    def kill(self, spu_id: int) -> None:
        """SIGKILL SPU ``spu_id`` if it still runs, and forget it (an SPU removed from the cluster)."""
        proc = self.children.pop(spu_id, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        adopted = self.adopted.pop(spu_id, None)
        if adopted is not None:
            signal_quietly(adopted, "kill")

    def kill_all(self, why: str | None = None) -> None:
        """SIGKILL every SPU still running (logged with ``why``) and forget them all."""
        for spu_id in sorted(set(self.children) | set(self.adopted)):
            if self.running(spu_id) and why:
                self.log.warning("SPU %d %s; killing it", spu_id, why)
        for proc in self.children.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in self.adopted.values():
            signal_quietly(proc, "kill")
        self.children.clear()
        self.adopted.clear()

    def keep_supervisor(self, now: float) -> None:
        """With no live supervisor (it was killed), start one that watches this SC. A live one is
        followed by a pidfd on the event loop and not looked for again until it exits: the look
        (its pid file, then /proc) cost ~0.5 ms of CPU a second. Without pidfds (Linux < 5.3)
        it is looked for at most every SUPERVISOR_CHECK_S, as it always was."""
        if self._supervisor_fd is not None or now - self._supervisor_checked < SUPERVISOR_CHECK_S:
            return
        self._supervisor_checked = now
        if self._supervisor is not None and self._supervisor.poll() is None:
            self._follow_supervisor(self._supervisor.pid)      # ours is alive (perhaps still starting)
            return
        self._supervisor = None
        pid = launcher.supervisor_pid(self.paths)
        if pid is not None:
            self._follow_supervisor(pid)
            return
        self.log.warning("the supervisor is gone; starting a new one to watch this SC")
        self._supervisor = subprocess.Popen(
            [sys.executable, "-m", launcher.SUPERVISOR, "--cluster", self.paths.cluster,
             "--home", str(self.paths.home), "--watch-sc", str(os.getpid())],
            stdin=subprocess.DEVNULL, close_fds=True)
        self._follow_supervisor(self._supervisor.pid)

    def _follow_supervisor(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):        # no pidfds, or it is gone already: look again next time
            return
        self._supervisor_fd = fd
        asyncio.get_running_loop().add_reader(fd, self._supervisor_exited)

    def _supervisor_exited(self) -> None:
        """Its pidfd is readable: it exited. The liveness loop's next call looks at once."""
        self.stop_following_supervisor()
        self._supervisor_checked = 0.0

    def stop_following_supervisor(self) -> None:
        fd, self._supervisor_fd = self._supervisor_fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)


def alive(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an adopted SPU's exit is reaped by the supervisor, later). A
    zombie main thread whose other threads still exit is alive: it still holds its sockets,
    and an SPU started beside it would find its socket in use (broker/spu_start.py ``process_gone``)."""
    try:
        return proc.is_running() and not process_gone(proc.pid)
    except psutil.Error:
        return False


def signal_quietly(proc: psutil.Process, how: str) -> None:
    try:
        getattr(proc, how)()
    except psutil.Error:
        pass

