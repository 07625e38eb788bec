"""A ReadCommitted produce waiting for the high watermark, answered by a callback.

It parks in ``Replica._waiters`` beside the futures of long-poll fetches and quacks
like one of them (``done``, ``set_result``, ``set_exception``, ``cancel``), so the
replica's wake, failure and close paths treat both alike and in the same order: when
``_wake`` sees the HW pass the batch, the answer is built and handed to the
connection at once, with no Task to schedule and resume (see ipc/deferred.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from rillet.ipc import messages as m
from rillet.ipc.deferred import Deferred
from rillet.ipc.errors import RequestTimedOut

if TYPE_CHECKING:
    from .replica import Replica

log = logging.getLogger(__name__)


class CommitWaiter(Deferred):
    __slots__ = ("replica", "cid", "base", "offset", "timeout_s", "_entry", "_timer", "_done")

    def __init__(self, replica: Replica, cid: int, base: int, end: int, timeout_s: float) -> None:
        self.replica, self.cid, self.base, self.timeout_s = replica, cid, base, timeout_s
        self.offset = end - 1             # a waiter is woken once the HW passes its offset
        self._entry = self._timer = None
        self._done = False

    def start(self, deliver) -> None:
        self._deliver = deliver
        replica = self.replica
        if replica.hw > self.offset:      # the HW moved since produce() looked
            self.set_result(None)
            return
        self._entry = (True, self.offset, self)
        replica._waiters.append(self._entry)
        self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._time_out)

    # --- the future's side, as Replica calls it ---
    def done(self) -> bool:
        return self._done

    def set_result(self, _value) -> None:
        if self._finish():
            r = self.replica
            self._give(m.ProduceResponse(self.cid, self.base, r.leo, r.hw))

    def set_exception(self, exc: BaseException) -> None:
        if self._finish():
            self._give(exc)

    def cancel(self) -> bool:
        if self._finish():
            self._unpark()
            self._give(None)
        return True

    # --- internals ---
    def _time_out(self) -> None:
        self._timer = None
        if self._finish():
            self._unpark()
            self._give(RequestTimedOut(
                f"{self.replica.name}: high watermark {self.replica.hw} did not reach {self.offset + 1} "
                f"within timeout_ms={int(self.timeout_s * 1000)}"))

    def _give(self, value) -> None:
        # Called from inside Replica._wake and _fail_waiters: a failure here must not stop
        # them from resolving the other waiters.
        try:
            self._deliver(value)
        except Exception:
            log.exception("answering ReadCommitted produce cid %d failed", self.cid)

    def _finish(self) -> bool:
        """Mark this waiter done (once); False if it was already."""
        if self._done:
            return False
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return True

    def _unpark(self) -> None:
        # _wake drops done waiters, but one that timed out or was cancelled would stay until the
        # next append (Replica._wait does the same for its futures).
        try:
            self.replica._waiters.remove(self._entry)
        except ValueError:
            pass
