"""Linux futexes on 32-bit words in shared memory: the direct readers' wake-up.

An SPU bumps a row's word in its positions table (positions.py) and calls
:func:`wake` once per publish; consumers sleep in :func:`wait` (one word) or
:func:`wait_any` (several words, one per partition they read). The kernel keys a
shared futex by the page and offset behind the address, so waiters in other
processes, mapping the object read-only, are found: the futexes here are never
FUTEX_PRIVATE.

Waking costs the waker's CPU per task woken (about 3 us each on the development VM:
FUTEX_WAKE of 10 sleepers cost 3x one), so the SPU wakes only ``RELAY_FANOUT``
sleepers, and each consumer that wakes to a changed word relays the wake to
``RELAY_FANOUT`` more (client/_direct.py): the SPU's cost stays flat however many
consumers wait, the wake spreads as a tree, and a consumer that dies before relaying
leaves the other branch going (the rest notice at their wait slice). A relay does
not write the shared memory: readers still never write state they do not own. When the
SPU's wake found fewer sleepers than it may wake, it woke them all and says so in the
row (positions.py, ``woken``): the readers it woke then skip the relay, a syscall per
record that would wake nobody (the common case: one reader per partition).

``wait_any`` uses futex_waitv (Linux 5.16+); where it is missing it waits on the
first word only, in short slices (the caller re-checks every row between waits).
:data:`AVAILABLE` is False off Linux or when the syscall cannot be made at all:
then callers fall back to the SPU's socket long poll.

All functions take raw addresses (``shm.RawMapping.address``); a wrong address is
EFAULT, reported as OSError, never a crash.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX2_SIZE_U32 = 0x02
_INT_MAX = 0x7FFFFFFF
_CLOCK_MONOTONIC = 1
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine())
_SYS_FUTEX_WAITV = 449                    # the same number on every architecture (new syscall table)
MAX_WAITV = 128                           # the kernel's FUTEX_WAITV_MAX
_SLICE_S = 0.005                          # wait_any's slice without futex_waitv
RELAY_FANOUT = 2                          # sleepers the SPU wakes per publish, and each woken one relays to


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Waitv(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32)]


def _load_syscall():
    if _SYS_FUTEX is None or os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
AVAILABLE = _syscall is not None
_waitv_ok = AVAILABLE


def _timespec(timeout_s: float) -> _Timespec:
    timeout_s = max(0.0, timeout_s)
    sec = int(timeout_s)
    return _Timespec(sec, int((timeout_s - sec) * 1e9))


# FUTEX_WAIT's relative timeouts by value: a direct reader sleeps in the same slice every time,
# and building the struct cost as much as the rest of the call's Python.
_TIMEOUTS: dict[float, _Timespec] = {}


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def wake(address: int, count: int = _INT_MAX) -> int:
    """Wake up to ``count`` waiters (default all) on the word at ``address``; returns how many woke."""
    # FUTEX_WAKE reads only these three arguments (the kernel ignores the rest).
    n = _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, count)
    if n < 0:
        raise _fail("futex wake")
    return n


def wait(address: int, expected: int, timeout_s: float) -> bool:
    """Sleep while the word at ``address`` holds ``expected``, at most ``timeout_s``.

    True when woken or the word already differed; False on timeout. A signal
    (EINTR) counts as a wake: callers re-check their condition anyway.
    """
    ts = _TIMEOUTS.get(timeout_s)
    if ts is None:
        ts = _timespec(timeout_s)
        if len(_TIMEOUTS) < 16:              # the few slices callers use; the kernel only reads it
            _TIMEOUTS[timeout_s] = ts
    r = _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAIT, ctypes.c_uint32(expected),
                 ctypes.byref(ts), None, 0)
    return True if r == 0 else _outcome(ctypes.get_errno(), "futex wait")


def _outcome(err: int, what: str) -> bool:
    """A failed wait's errno as :func:`wait`'s result: a changed word or a signal is a wake
    (True), a timeout False; anything else raises."""
    if err in (errno.EAGAIN, errno.EINTR):
        return True
    if err == errno.ETIMEDOUT:
        return False
    raise OSError(err, f"{what}: {os.strerror(err)}")


def wait_any(words: list[tuple[int, int]], timeout_s: float) -> bool:
    """Sleep until one of the ``(address, expected)`` words changes or is woken.

    Same results as :func:`wait`. Raises ValueError for no words or more than MAX_WAITV.
    """
    global _waitv_ok
    if not words or len(words) > MAX_WAITV:
        raise ValueError(f"wait_any takes 1 to {MAX_WAITV} words, got {len(words)}")
    if len(words) == 1:
        return wait(words[0][0], words[0][1], timeout_s)
    if _waitv_ok:
        vec = (_Waitv * len(words))(*[_Waitv(expected, address, _FUTEX2_SIZE_U32, 0) for address, expected in words])
        deadline = time.clock_gettime(_CLOCK_MONOTONIC) + max(0.0, timeout_s)
        ts = _timespec(deadline)                # futex_waitv takes an absolute time
        r = _syscall(_SYS_FUTEX_WAITV, ctypes.byref(vec), len(words), 0, ctypes.byref(ts), _CLOCK_MONOTONIC)
        if r >= 0:
            return True
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            return _outcome(err, "futex_waitv")
        _waitv_ok = False                       # an older kernel: slices from now on
    return wait(words[0][0], words[0][1], min(timeout_s, _SLICE_S))
