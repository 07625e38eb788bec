"""Shared test set-up: the real-cluster fixture and a leak check over the whole run."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["rillet.testing"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One started 1-SPU cluster shared by a test module (tests use their own topics)."""
    from rillet.testing import LocalCluster
    with LocalCluster(spus=1, home=tmp_path_factory.mktemp("rillet")) as c:
        yield c
    assert not c.leftovers()


def run_cli(cluster, *args: str, input: bytes | None = None, timeout: float = 60):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], input=input, capture_output=True,
                          env=cluster.env, timeout=timeout)


def _our_processes() -> list[str]:
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmd for m in ("rillet.broker.sc", "rillet.broker.spu")):
            if any("rillet-test" in c or "pytest" in c for c in cmd):
                out.append(f"{proc.pid} {' '.join(cmd)}")
    return out


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_the_suite():
    shm_before = set(os.listdir("/dev/shm"))
    yield
    left_procs = _our_processes()
    new_shm = [n for n in set(os.listdir("/dev/shm")) - shm_before if "rillet" in n]
    assert not left_procs, f"test processes left running: {left_procs}"
    assert not new_shm, f"shared memory left behind: {new_shm}"
