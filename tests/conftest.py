"""Shared test set-up: the real-cluster fixture and a leak check over the whole run."""

from __future__ import annotations

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


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_the_suite():
    """After the whole run: no process, socket or shm object of any cluster this run made."""
    yield
    from rillet.testing import CREATED
    left = {c.name: c.leftovers() for c in CREATED}
    left = {name: what for name, what in left.items() if what}
    assert not left, f"clusters left things behind: {left}"
