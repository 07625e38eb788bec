"""Progress of long work on a terminal: one line on stderr, redrawn in place.

Only when the stream is a terminal: in a pipe or a file (scripts, CI logs) nothing is
written, so the output stays what it was. Redraws are throttled to MIN_INTERVAL_S, so a
caller may call ``update`` as often as it likes; callers on hot paths still call it only
every few hundred records. ``describe`` is the pure part: the text of one line.
"""

from __future__ import annotations

import sys
import time

MIN_INTERVAL_S = 0.2        # five redraws a second: readable, and costs nothing measurable


def _count(n: float) -> str:
    return f"{int(n):,}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def describe(label: str, done: int, elapsed_s: float, *, total: int | None = None, unit: str = "records",
             done_bytes: int | None = None, total_bytes: int | None = None) -> str:
    """``produce: 120,000 records, 12.0 MB of 48.0 MB (25%), 60,000 records/s, 2.0 s``.

    The percentage comes from the counts when ``total`` is known, else from the bytes."""
    parts = [f"{_count(done)}" + (f" of {_count(total)}" if total is not None else "") + f" {unit}"]
    if done_bytes is not None:
        parts.append(_bytes(done_bytes) + (f" of {_bytes(total_bytes)}" if total_bytes else ""))
    share = (done / total if total else done_bytes / total_bytes if total_bytes and done_bytes is not None else None)
    if share is not None:
        parts[-1] += f" ({min(100, int(share * 100))}%)"
    if elapsed_s > 0:
        parts.append(f"{_count(done / elapsed_s)} {unit}/s")
    parts.append(f"{elapsed_s:.1f} s")
    return f"{label}: " + ", ".join(parts)


class Progress:
    """One progress line on ``stream`` (stderr), drawn only when it is a terminal."""

    def __init__(self, label: str, *, total: int | None = None, total_bytes: int | None = None,
                 unit: str = "records", stream=None, clock=time.monotonic) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self.stream)
        self.label, self.total, self.total_bytes, self.unit = label, total, total_bytes, unit
        self._clock = clock
        self._start = clock()
        self._drawn_at = self._start          # the first line after MIN_INTERVAL_S: quick work shows only its end
        self._width = 0

    def update(self, done: int, done_bytes: int | None = None, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._drawn_at < MIN_INTERVAL_S:
            return
        self._drawn_at = now
        text = describe(self.label, done, now - self._start, total=self.total, unit=self.unit,
                        done_bytes=done_bytes, total_bytes=self.total_bytes)
        pad = max(0, self._width - len(text))           # wipe what a longer line left
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def clear(self) -> None:
        """Wipe the line, so a message can be written; the next ``update`` draws it again."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
            self._drawn_at = -MIN_INTERVAL_S

    def finish(self, done: int, done_bytes: int | None = None) -> None:
        """Draw the final figures and end the line (nothing when not a terminal)."""
        if self.enabled:
            self.update(done, done_bytes, force=True)
            self.stream.write("\n")
            self.stream.flush()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):        # closed or not a real stream
        return False
