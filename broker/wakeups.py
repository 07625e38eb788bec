"""Sleep until something happens: a watched process exits, a signal arrives, or a deadline.

Why: on the 2-core machines rillet runs on, every wake-up of an idle Python process costs
tens of microseconds of a core that the data path needs (README, Benchmarks). The
supervisor used to look for its SC's exit every 20 ms; with this it sleeps in one
``poll`` until one of these is readable:

* a pidfd (``os.pidfd_open``, Linux >= 5.3) per process it waits on: readable once that
  process has exited, whether it is our child or not (``--watch-sc``, leftover SPUs);
* the signal wake-up pipe (``signal.set_wakeup_fd``): Python's C-level handler writes a
  byte for every signal that has a Python handler, so SIGTERM/SIGINT (stop) and SIGCHLD
  (any child exited: the SC, the standby, an SPU orphaned to this child subreaper) end the
  sleep. A signal that comes just before ``poll`` leaves its byte in the pipe: no lost
  wake-up.

Fallback: where ``pidfd_open`` is missing (ENOSYS: Linux < 5.3; not Linux) children are
still seen through SIGCHLD, but a process that is not our child cannot be: while one is
watched, the sleep is cut to POLL_S and the caller looks again (``exited`` asks psutil).
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal
import time

POLL_S = 0.02               # only without pidfds: how often a non-child is looked at


def _ignore(_signum, _frame) -> None:
    """SIGCHLD's handler: it only has to exist, so the wake-up pipe gets a byte."""


class Wakeups:
    """One per process, made and used on the main thread (``signal.set_wakeup_fd`` needs it)."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._read_fd, select.POLLIN)
        self._pidfds: dict[int, int] = {}          # pid -> pidfd, registered with the poll
        self._fd_pids: dict[int, int] = {}
        self._exited: set[int] = set()             # pids whose pidfd was readable
        self._polled: set[int] = set()             # non-children watched without a pidfd
        self.pidfds = hasattr(os, "pidfd_open")    # False once the kernel said ENOSYS
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)

    def watch(self, pid: int, *, child: bool) -> None:
        """Wake up when ``pid`` exits. A child needs no pidfd to be seen (SIGCHLD), one that
        is not ours does, or the sleep falls back to polling while it is watched."""
        if pid in self._pidfds or pid in self._polled:
            return
        if self.pidfds:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._exited.add(pid)             # gone already (or reaped): nothing to wait for
                return
            except OSError as exc:
                # ENOSYS: no pidfds on this kernel, for good. Anything else (EMFILE, say): this
                # pid is looked after as without them, never a crash of the supervisor.
                if exc.errno == errno.ENOSYS:
                    self.pidfds = False
            else:
                self._exited.discard(pid)          # a pid seen exit before, now reused
                self._pidfds[pid], self._fd_pids[fd] = fd, pid
                self._poll.register(fd, select.POLLIN)
                return
        if not child:
            self._polled.add(pid)

    def exited(self, pid: int) -> bool:
        """``pid`` has exited (a zombie counts): seen on its pidfd, or asked of psutil when
        it has none."""
        if pid in self._exited:
            return True
        if pid in self._pidfds:
            return False
        import psutil
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def forget(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            self._poll.unregister(fd)
            del self._fd_pids[fd]
            os.close(fd)
        self._exited.discard(pid)
        self._polled.discard(pid)

    def wait(self, deadline: float | None = None) -> None:
        """Sleep until a watched pid exits, a signal comes, or ``deadline`` (time.monotonic;
        None: no timer). It may return early (a stopped child's SIGCHLD): callers look at
        what they wait for and call again."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._polled:
            timeout = POLL_S if timeout is None else min(timeout, POLL_S)
        ready = self._poll.poll(None if timeout is None else math.ceil(timeout * 1000))
        for fd, _mask in ready:
            if fd == self._read_fd:
                self._drain()
            elif (pid := self._fd_pids.get(fd)) is not None:
                self._exited.add(pid)
                self._poll.unregister(fd)          # it stays readable: do not wake on it again
                del self._fd_pids[fd]
                os.close(self._pidfds.pop(pid))

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self._pidfds):
            self.forget(pid)
        os.close(self._read_fd)
        os.close(self._write_fd)
