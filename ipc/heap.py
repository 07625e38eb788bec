"""glibc malloc settings for a producing process: freed batch buffers stay in the heap.

A producer builds each batch as a new ``bytes`` (one ``bytes.join``, 16-64 KiB), copies it into
its produce ring or socket, and frees it. glibc serves blocks under its mmap threshold (128 KiB)
from the heap and gives the heap's top back to the kernel whenever more than the trim threshold
(128 KiB) is free there, so a freed batch at the top is trimmed and the next one faults its pages
in again: a `send_all` of 1 KiB records took one page fault per ~9 KiB sent (46,000 for 400 MB),
about a quarter of the producing process's CPU. glibc raises both thresholds by itself only after
a large block was mapped and freed, which a producer of 64 KiB batches never does.

:func:`keep_freed_heap` sets them once per process (``mallopt``): blocks under 4 MiB come from
the heap, and up to 16 MiB of free heap top is kept. The cost is that much memory held after a
burst; ``RILLET_MALLOC_TUNING=0`` leaves glibc's defaults. Nothing happens off glibc.
"""

from __future__ import annotations

import ctypes
import os
import threading

from . import env

ENV_SWITCH = "RILLET_MALLOC_TUNING"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 16 << 20
MMAP_THRESHOLD = 4 << 20

_done = False
_lock = threading.Lock()


def keep_freed_heap(environ=os.environ) -> bool:
    """Set the thresholds above, once per process; True if they are set (now or before)."""
    global _done
    with _lock:
        if _done:
            return True
        if not env.switch(ENV_SWITCH, True, environ):
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):     # not glibc (musl, macOS): its allocator is its own
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        # Both, and in this order: setting either turns glibc's own adjustment of the other off.
        _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        return _done
