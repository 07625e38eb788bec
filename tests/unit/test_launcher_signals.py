"""`launcher.sigint_deferred`: a Ctrl-C inside the block is delivered when it ends, so
`cluster start` always knows the supervisor it started (a KeyboardInterrupt raised inside
Popen left one running that nothing stopped)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rillet.broker.launcher import sigint_deferred


def _interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)          # Python runs handlers between bytecodes: let it run now


def test_a_ctrl_c_in_the_block_is_raised_once_it_ends():
    finished = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigint_deferred():
                _interrupt_self()
                finished.append("block")
        assert finished == ["block"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigint_deferred():
            _interrupt_self()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_block_just_runs():
    ran = []

    def body():
        with sigint_deferred():
            ran.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert ran == [before]
