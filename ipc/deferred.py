"""An answer given later through a plain callback: no asyncio Task, no future.

A handler that cannot answer at once (a ReadCommitted produce waiting for the high
watermark) may return a :class:`Deferred` instead of an awaitable. The connection
(``ipc/transport.py``) then calls ``start(deliver)`` and counts it among its requests
in flight; the deferred calls ``deliver`` exactly once with the answer (a message),
the error to answer with (an exception), or None for no answer (cancelled). A
connection that closes calls ``cancel``.

Why not a coroutine: each one costs the server an asyncio Task, its coroutine frames
and a future to park on (3-5 us per request on the SPU's event loop); a waiter that
is a plain object woken by a callback costs a fraction of that.
"""

from __future__ import annotations

from typing import Any, Callable

Deliver = Callable[[Any], None]


class Deferred:
    """Base class: subclasses arm themselves in ``start`` and call ``self._deliver`` once."""

    __slots__ = ("_deliver",)

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def cancel(self) -> None:
        """The answer is no longer wanted (the connection closed): deliver nothing."""
        raise NotImplementedError
