"""tools/progress.py: the text of a progress line, and silence off a terminal."""

from __future__ import annotations

import io

import pytest

from rillet.tools.progress import Progress, describe


@pytest.mark.parametrize("kwargs, text", [
    (dict(label="produce t", done=120_000, elapsed_s=2.0, done_bytes=12_000_000, total_bytes=48_000_000),
     "produce t: 120,000 records, 12.0 MB of 48.0 MB (25%), 60,000 records/s, 2.0 s"),
    (dict(label="W1", done=430_000, elapsed_s=1.0, total=1_000_000),
     "W1: 430,000 of 1,000,000 records (43%), 430,000 records/s, 1.0 s"),
    (dict(label="x", done=0, elapsed_s=0.0), "x: 0 records, 0.0 s"),
    (dict(label="x", done=5, elapsed_s=1.0, done_bytes=900, total_bytes=0), "x: 5 records, 900 B, 5 records/s, 1.0 s"),
    (dict(label="x", done=10, elapsed_s=1.0, total=5), "x: 10 of 5 records (100%), 10 records/s, 1.0 s"),
])
def test_describe(kwargs, text):
    assert describe(**kwargs) == text


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_off_a_terminal():
    out = io.StringIO()
    progress = Progress("x", stream=out)
    progress.update(5, force=True)
    progress.finish(10)
    assert out.getvalue() == "" and not progress.enabled


def test_redraws_are_throttled_and_the_last_line_ends():
    now = [0.0]
    out = FakeTty()
    progress = Progress("x", total=100, stream=out, clock=lambda: now[0])
    progress.update(1)                  # too soon after the start: nothing yet
    now[0] = 0.3
    progress.update(30)
    now[0] = 0.35
    progress.update(35)                 # throttled
    now[0] = 1.0
    progress.finish(100)
    assert out.getvalue() == ("\rx: 30 of 100 records (30%), 100 records/s, 0.3 s"
                              "\rx: 100 of 100 records (100%), 100 records/s, 1.0 s\n")


def test_clear_wipes_the_line_for_a_message():
    now = [1.0]
    out = FakeTty()
    progress = Progress("x", stream=out, clock=lambda: now[0])
    progress.clear()                    # nothing drawn: nothing to wipe
    now[0] = 2.0
    progress.update(7)
    drawn = out.getvalue()
    progress.clear()
    assert out.getvalue() == drawn + "\r" + " " * (len(drawn) - 1) + "\r"
    progress.update(8)                  # drawn again at once, not after the throttle
    assert out.getvalue().endswith("\rx: 8 records, 8 records/s, 1.0 s")
