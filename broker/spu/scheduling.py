"""The SPU's CPU scheduling policy: it yields to its producers while they stream through rings.

Why. A task woken under the default policy (SCHED_OTHER) may preempt the task running on the
CPU it is placed on. On a host whose producers share the CPUs with the SPU, the SPU woken by a
produce ring's eventfd often took the CPU from the very producer that had just handed it a
batch: a `send()` loop's caller spent 28 us of wall time in that eventfd write for 3.6 us of
CPU, about a sixth of its time (README, Benchmarks, session 10). Under SCHED_BATCH a woken task
runs on an idle CPU, or waits for the running task's next tick or sleep: the producer keeps
its CPU and the SPU takes several batches a turn. But a linger-0 record waits for that tick or
sleep too (W3's p50 went from ~90 to ~110 us with the SPU always under SCHED_BATCH).

So, by default (``auto``), the SPU's event loop thread runs under SCHED_BATCH only while
produce rings stream (a ring delivered entries, and the rings' safety look has not since found
them all still: at most SAFETY_LOOK_S, 0.1 s), and under SCHED_OTHER otherwise; produce
requests on the socket (small ones, linger 0) never switch it. ``RILLET_SPU_SCHED`` = ``batch``
or ``normal`` fixes one policy. Switching costs one system call, made only on a change. No
privilege is needed: both are the kernel's normal policies (priority 0).
"""

from __future__ import annotations

import logging
import os

SCHED_ENV = "RILLET_SPU_SCHED"
SETTINGS = ("auto", "batch", "normal")


def setting_from(environ, log: logging.Logger) -> str:
    """RILLET_SPU_SCHED (default ``auto``); a value it does not take is logged and ``auto``
    used: a typo must not keep an SPU from starting."""
    value = environ.get(SCHED_ENV, "").strip().lower() or "auto"
    if value not in SETTINGS:
        log.error("%s=%r is not one of %s; using auto", SCHED_ENV, environ[SCHED_ENV], ", ".join(SETTINGS))
        return "auto"
    return value


class Scheduling:
    """The calling thread's policy (the SPU's event loop thread: make it there)."""

    def __init__(self, setting: str, log: logging.Logger) -> None:
        self.setting = setting
        self.log = log
        self.batch = False                       # the policy in force: SCHED_BATCH, else SCHED_OTHER
        if not hasattr(os, "SCHED_BATCH") or not hasattr(os, "sched_setscheduler"):
            self.setting = "normal"              # not Linux: the default policy, always
        elif setting == "batch":
            self._set(True)

    def streaming(self) -> None:
        """A produce ring delivered entries: yield the CPU to the producers (``auto``)."""
        if not self.batch and self.setting == "auto":
            self._set(True)

    def quiet(self) -> None:
        """No ring moved since the last look: preempt again for the next linger-0 record (``auto``)."""
        if self.batch and self.setting == "auto":
            self._set(False)

    def _set(self, batch: bool) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH if batch else os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:                   # a sandbox that forbids it: stay as we are, for good
            self.log.warning("cannot change the scheduling policy: %s; keeping %s", exc,
                             "SCHED_BATCH" if self.batch else "SCHED_OTHER")
            self.setting = "normal"
            return
        self.batch = batch
