"""A replica an SPU cannot create or keep is reported, not waited on (issue 10, items 6 and 7).

The full-disk test runs a cluster whose RILLET_HOME is a 2 MiB tmpfs (it needs root to
mount one, and is skipped otherwise): a topic whose segments cannot be preallocated fails
at once with the SPU's cause, and leaves nothing behind, so a smaller one can be made.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rillet.ipc.errors import StorageError
from rillet.testing import LocalCluster
from tests.conftest import run_cli


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs mounted at tmp_path/disk, unmounted after the test (also on failure)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_topic_create_on_a_full_disk_fails_at_once_with_the_cause(tiny_disk):
    with LocalCluster(spus=1, home=tiny_disk) as cluster:
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            cluster.create_topic("big", segment_size=64 * 1024 * 1024)
        assert time.monotonic() - started < 5                      # not the 30 s wait for Online
        message = str(caught.value)
        assert "topic 'big' not created: SPU 5001 cannot create replica big/0" in message
        assert "cannot preallocate 67108864 bytes" in message and "ENOSPC" in message

        done = run_cli(cluster, "topic", "create", "big2", "--segment-size", "64MiB")
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error: topic 'big2' not created: SPU 5001 cannot create replica big2/0")
        assert "ENOSPC" in lines[0]

        # Undone, not half made: the names are free again and a topic that fits is created.
        with cluster.admin() as admin:
            assert admin.list_topics(["big"]) == [] and admin.list_topics(["big2"]) == []
        assert not list((cluster.paths.data_dir / "spu-5001").glob("big*"))
        cluster.create_topic("big", segment_size=64 * 1024)
        with cluster.admin() as admin:
            assert [p.status for p in admin.list_partitions(["big"])] == ["Online"]
    assert not cluster.leftovers()
