"""The records a stream has decoded and not handed out yet, and the chain that hands them out.

A stream's ``__next__`` is a list iterator step over its :class:`RecordBuffer`; ``for record
in stream`` runs :func:`chained` over the buffered lists, so between the socket (or the
leader's file) and the caller's loop body a record costs no Python-level call at all.
"""

from __future__ import annotations

from itertools import chain
from typing import Callable, Iterator

from ._record import Record


class RecordBuffer:
    """Decoded records waiting to be handed out: a list and an iterator over it.

    ``__next__`` of the streams is ``for record in buffer.it: return record``, a list
    iterator step; ``take()`` hands out what is left as a list, the decoded list
    itself when none of it was handed out (no copy). Not thread-safe: one reader.
    """

    __slots__ = ("records", "it")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.it: Iterator[Record] = iter(self.records)

    def __len__(self) -> int:
        """Records not handed out yet."""
        return self.it.__length_hint__()

    def handed_out(self) -> int:
        """How many records of ``records`` were handed out, from the front."""
        return len(self.records) - self.it.__length_hint__()

    def put(self, records: list[Record]) -> None:
        """Buffer ``records`` after whatever is left."""
        if self.it.__length_hint__():
            records = self.take() + records
        self.records = records
        self.it = iter(records)

    def clear(self) -> None:
        """Drop the used-up list. Called before waiting for the next fetch, so its
        records are freed first and the next answer reuses their memory (freed after
        the next answer arrived, a 1 MiB batch lets glibc give the heap's top back to
        the kernel and fault it in again: 0.3 s of 0.7 s for 200 MB of 1 KiB records)."""
        self.records = []
        self.it = iter(self.records)

    def take(self) -> list[Record]:
        """Everything not handed out, as a list; the buffer is empty afterwards."""
        records, it = self.records, self.it
        left = it.__length_hint__()
        it.__setstate__(len(records))       # used up: a chain still holding it sees nothing more
        self.records = []
        self.it = iter(self.records)
        return records if left == len(records) else records[len(records) - left:]


class _Raise:
    """An iterator that raises ``exc`` once, then is used up."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __iter__(self) -> "_Raise":
        return self

    def __next__(self):
        exc, self.exc = self.exc, None
        if exc is None:
            raise StopIteration
        raise exc


def _guarded(refill: Callable[[], Iterator[Record] | None]) -> Iterator[Record] | None:
    try:
        return refill()
    except BaseException as exc:     # Ctrl-C too: a chain whose source raised would be dead
        return _Raise(exc)


def chained(refill: Callable[[], Iterator[Record] | None]) -> Iterator[Record]:
    """The records of the iterators ``refill()`` returns, until it returns None.

    ``itertools.chain`` steps the list iterators in C, so a record costs no Python
    call. ``refill`` (a stream's wait for its next fetch) runs once per batch; an
    error it raises comes out of the chain through a _Raise iterator, after which
    the chain asks ``refill`` again, as a retried ``next()`` would (an exception
    from chain's source itself would end the chain for good).
    """
    return chain.from_iterable(iter(lambda: _guarded(refill), None))
