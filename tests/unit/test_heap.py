"""ipc/heap.py: a producing process keeps freed batch buffers in its heap instead of having glibc
trim them and fault them in again for the next batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rillet.ipc import heap

CHURN = """
import resource, sys
from rillet.ipc.heap import keep_freed_heap
print(keep_freed_heap())
values = [b"v" * 1024] * 100
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3000):           # four 100 KiB batches built and freed, as a producer does: over
    a = b"".join(values); b = b"".join(values); c = b"".join(values); d = b"".join(values)
    del a, b, c, d              # the free holes imports leave, under the mmap threshold
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def churn(switch: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHURN], env={"RILLET_MALLOC_TUNING": switch, "PATH": ""},
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_batches_are_not_faulted_in_again():
    tuned, faults = churn("1")
    default, default_faults = churn("0")
    assert (tuned, default) == ("True", "False")
    assert faults < 500 <= default_faults, (faults, default_faults)


def test_the_switch_and_once_per_process(monkeypatch):
    monkeypatch.setattr(heap, "_done", False)
    assert not heap.keep_freed_heap({"RILLET_MALLOC_TUNING": "off"})
    assert heap.keep_freed_heap({}) is True and heap.keep_freed_heap({"RILLET_MALLOC_TUNING": "0"}) is True
