"""What a running cluster exposes on the machine: only to its own user."""

from __future__ import annotations

import os
import stat


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sockets_and_shared_memory_are_private(cluster):
    paths = cluster.paths
    assert mode(paths.runtime_dir) == 0o700
    for sock in [paths.sc_socket, paths.spu_socket(5001)]:
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
        assert st.st_uid == os.getuid()
    assert mode("/dev/shm" + paths.shm_name) == 0o600
