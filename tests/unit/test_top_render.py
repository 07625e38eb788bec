"""`rillet top`'s drawing (pure): a frame as text, and cutting it to the terminal."""

from __future__ import annotations

import time

from rillet.tools.commands.top import clock, fit, render_text
from rillet.tools.view import Event, Frame

WALL = int(time.mktime((2026, 11, 27, 14, 2, 3, 0, 0, -1)) * 1000) + 45
PART = dict(topic="t", partition=0, leader=5002, leader_epoch=4, replicas=[5001, 5002], in_sync=[5002],
            status="Online", hw=10, leo=12, rate=250.0, lag=3)
SPU = dict(id=5001, status="Offline", online=False, pid=None, leaders=0, replicas=1)


def test_clock():
    assert clock(WALL) == "14:02:03.045"


def test_a_frame_with_an_event():
    event = Event(WALL, "leader", "leader changed t/0: 5001 -> 5002 epoch 3 -> 4")
    text = render_text("local", Frame(WALL, [PART], [SPU], [dict(consumer="c", topic="t", partition=0, offset=6,
                                                                 lag=3)], [event]), [event])
    lines = text.splitlines()
    assert lines[0] == "cluster 'local' at 14:02:03.045: 0/1 SPUs online, 1/1 partitions online"
    assert "  t      0          5002    4      [5002]   Online  10  12   250.0   3" in lines
    assert "  5001  Offline  -    0        1" in lines
    assert lines[-1] == "  14:02:03.045  leader changed t/0: 5001 -> 5002 epoch 3 -> 4"
    assert "\x1b" not in text
    assert "\x1b[33mleader changed" in render_text("local", Frame(WALL, [], [], [], []), [event], colour=True)


def test_an_error_keeps_the_last_rows_under_it():
    text = render_text("local", Frame(WALL, [PART], [SPU], [], [], "Timeout: no answer"))
    assert text.splitlines()[0] == "cluster 'local' at 14:02:03.045: the SC cannot be asked: Timeout: no answer"
    assert "5002" in text
    assert render_text("x", Frame(WALL, [], [], [], [], "ClusterNotRunning: gone")).count("\n") == 0


def test_fit_cuts_lines_and_rows():
    assert fit("abcdef\nghij\nkl\nmn", 3, 3) == "abc\nghi"
    assert fit("\x1b[33mlong coloured line\x1b[0m", 4, 10) == "\x1b[33mlong\x1b[0m"
    assert fit("ab\x1b[33mcd\x1b[0mef", 3, 10) == "ab\x1b[33mc\x1b[0m"
