"""One outage of a consumer's path to its partition, as pure bookkeeping (the clock
is passed in): when it began, when to try next, whether it was logged, and when a
stream that must not wait forever gives up. ``Failover`` is the thin shell a stream
holds: the real clock, and the log line.

A leader change lasts milliseconds, a cluster restart seconds, a dead SPU with no
other replica as long as it stays dead. So retries back off from FIRST_DELAY_S,
doubling up to CAP_DELAY_S: quick for the common case, about one attempt a second
for the long ones. An outage is logged once, when it outlasts LOG_AFTER_S (a
leader change is not worth a line), or at once when the cluster itself is away
(the metadata view logs that, once per process, so the stream only marks it).
"""

from __future__ import annotations

import logging
import time

from rillet.ipc.errors import ClusterUnavailable, RilletError

FIRST_DELAY_S = 0.01      # a leader election takes a few ms
CAP_DELAY_S = 1.0         # bounded backoff: a returning cluster is noticed within about a second
LOG_AFTER_S = 1.0         # shorter outages (leader changes) are not logged

_log = logging.getLogger("rillet.consumer")


class Outage:
    """Failures since the last success. ``window_s`` None: retry forever (a
    following stream); else ``failed`` raises once the outage is older than it."""

    __slots__ = ("where", "since", "retry_at", "delay_s", "attempts", "logged", "window_s", "last_error")

    def __init__(self, where: str, now: float, window_s: float | None) -> None:
        self.where = where               # "topic/partition", for the error
        self.since = now
        self.retry_at = now
        self.delay_s = FIRST_DELAY_S
        self.attempts = 0
        self.logged = False
        self.window_s = window_s
        self.last_error: RilletError | None = None

    def failed(self, exc: RilletError, now: float) -> bool:
        """Count a retriable failure and schedule the next try at ``retry_at``.

        Returns True when this failure should be logged (the first time the outage
        qualifies). Raises ``exc`` (as its own type, saying how long it waited)
        when the window is over.
        """
        self.attempts += 1
        self.last_error = exc
        if self.window_s is not None and now - self.since >= self.window_s:
            raise type(exc)(f"{self.where} unreachable for {now - self.since:.1f} s (a stream that does not "
                            f"follow waits at most {self.window_s:g} s): {exc}") from exc
        self.retry_at = now + self.delay_s
        if self.window_s is not None:          # the last try falls on the window's end, not past it
            self.retry_at = min(self.retry_at, self.since + self.window_s)
        self.delay_s = min(CAP_DELAY_S, self.delay_s * 2)
        if self.logged:
            return False
        if isinstance(exc, ClusterUnavailable):
            self.logged = True           # the metadata view has said so, once for the process
            return False
        if now - self.since >= LOG_AFTER_S:
            self.logged = True
            return True
        return False

    def wait_s(self, now: float) -> float:
        """How long until the next try (0: now)."""
        return max(0.0, self.retry_at - now)


class Failover:
    """A stream's outages, one at a time, on the real clock: what the stream's retry
    loop asks (``wait_s``, ``active``) and tells (``failed``, ``recovered``)."""

    __slots__ = ("where", "window_s", "outage")

    def __init__(self, where: str, window_s: float | None) -> None:
        self.where = where
        self.window_s = window_s
        self.outage: Outage | None = None

    @property
    def active(self) -> bool:
        return self.outage is not None

    def wait_s(self) -> float:
        """Seconds until the next try is due (0: now, or no outage)."""
        outage = self.outage
        return 0.0 if outage is None else outage.wait_s(time.monotonic())

    def failed(self, exc: RilletError, position: int | None) -> None:
        """Count a retriable failure; raises when the window is over (see Outage.failed)."""
        now = time.monotonic()
        if self.outage is None:
            self.outage = Outage(self.where, now, self.window_s)
        try:
            log_it = self.outage.failed(exc, now)
        except RilletError:
            self.outage = None
            raise
        if log_it:
            _log.warning("%s unreachable (%s); retrying at least once a second%s", self.where, exc,
                         "" if position is None else f" from offset {position}")

    def recovered(self, position: int | None) -> None:
        outage, self.outage = self.outage, None
        if outage is not None and outage.logged:
            _log.info("%s reachable again after %.1f s%s", self.where, time.monotonic() - outage.since,
                      "" if position is None else f"; resuming at offset {position}")


__all__ = ["Outage", "Failover", "FIRST_DELAY_S", "CAP_DELAY_S", "LOG_AFTER_S"]
