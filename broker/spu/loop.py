"""The SPU's main loop: drain the event queue, ``decide`` (broker/spu/control.py), carry it out.

``EventQueue`` is where replicas, follower loops and the control link record what
happened; nothing in them decides what follows. ``run_control`` is the one task that
does: it wakes on an event or at the time the last decision named, and is the only
place that reports to the SC, checkpoints HWs, expires ISRs, flushes, applies retention
and gives up on a lost SC.

The produce path pays one attribute test per request (``offsets_moved`` when the flag is
already up): the flag is lowered only when a report goes out, so a stream of produces
wakes this loop at most once per report interval, not once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .control import OFFSETS_MOVED, PROBLEMS_CHANGED, ControlState, IsrChanged, Timings, decide


class EventQueue:
    __slots__ = ("moved", "_events", "_waiter")

    def __init__(self) -> None:
        self.moved = False          # offsets changed since the last report (hot path: a flag, not a list entry)
        self._events: list = []
        self._waiter: asyncio.Future | None = None

    def offsets_moved(self) -> None:
        """A replica's offsets changed (produce, replication, retention, a new assignment)."""
        if not self.moved:
            self.moved = True
            self._wake()

    def isr_changed(self, key: tuple[str, int]) -> None:
        self.push(IsrChanged(key))

    def problems_changed(self) -> None:
        self.push(PROBLEMS_CHANGED)

    def push(self, event) -> None:
        self._events.append(event)
        self._wake()

    def drain(self) -> list:
        """The events since the last drain, ``OFFSETS_MOVED`` first while the flag is up
        (it stays up until :meth:`reported`)."""
        events, self._events = self._events, []
        if self.moved:
            events.insert(0, OFFSETS_MOVED)
        return events

    def reported(self) -> None:
        """A report (or a checkpoint pass with no SC) has taken the offsets as they are now."""
        self.moved = False

    @property
    def pending(self) -> bool:
        return bool(self._events)

    async def wait(self, timeout_s: float) -> None:
        """Return on the next event, or after ``timeout_s``."""
        if self._events or timeout_s <= 0:
            return
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def run_control(queue: EventQueue, service, link, stop: asyncio.Event, log: logging.Logger,
                      timings: Timings, *, supervised=lambda: True) -> None:
    """Decide and act until ``stop``. ``supervised()`` says whether a supervisor of this
    cluster lives (asked only when no SC has been seen for ``sc_lost_timeout_s``).

    The clock is ``time.monotonic()``, the one the replicas' follower tracking uses
    (uvloop's ``loop.time()`` counts from another origin)."""
    state = ControlState.start(time.monotonic())
    while not stop.is_set():
        now = time.monotonic()
        decision = decide(state, queue.drain(), now, timings, quiet=service.quiet(now))
        state = decision.state
        if decision.actions:
            try:
                carry_out(decision.actions, queue, service, link, now)
            except Exception:       # a bug here must not end reporting (the SC would call this SPU dead)
                log.exception("SPU control loop: carrying out %s failed", decision.actions)
            if decision.actions.stop_unless_supervised:
                if supervised():
                    log.info("no SC for %g s, but the cluster's supervisor lives: waiting for it",
                             timings.sc_lost_timeout_s)
                else:
                    log.error("no SC for %g s and no supervisor to restart it: stopping", timings.sc_lost_timeout_s)
                    stop.set()
                    return
        await queue.wait(decision.wake_at - time.monotonic())


def carry_out(actions, queue: EventQueue, service, link, now: float) -> None:
    """Carry out one decision (all but stopping) in the order ``Actions`` lists."""
    try:
        if actions.checkpoint_hw:
            queue.reported()             # before reading the offsets: a change from here on is reported next time
            service.checkpoint_hws(now)
        if actions.report:
            link.report(service.status_report)
    finally:
        # Even if the report failed: a HW held for good would stall every ReadCommitted produce,
        # and an unsent report is what losing the SC means anyway.
        for key in actions.release_hw:
            service.release_hw(key)
    if actions.expire_isr:
        service.expire(now)
    if actions.flush_due:
        service.flush_due(now)
    if actions.retention:
        service.apply_retention(int(time.time() * 1000))
    if actions.check_replicas:
        service.check_health(now)       # rate-limited inside to once a second
        service.scrub(now)
