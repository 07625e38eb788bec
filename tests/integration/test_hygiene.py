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


def test_logs_pid_file_and_data_are_private(cluster):
    """Logs name topics and consumers; only the cluster's user may read them (issue 10)."""
    fluvio = cluster.fluvio()
    cluster.create_topic("private-data")
    with fluvio.topic_producer("private-data") as producer:
        producer.send(None, b"x")
    paths = cluster.paths
    files = [paths.sc_log_file, *paths.log_dir.glob("spu-*.log"), paths.sc_dir / "sc.pid",
             *paths.data_dir.rglob("*.log"), *paths.data_dir.rglob("*.index")]
    assert len(files) >= 5
    for f in files:
        assert mode(f) & 0o077 == 0, f"{f} has mode {oct(mode(f))}"
    for d in [paths.sc_dir, paths.log_dir, paths.data_dir, *[p for p in paths.data_dir.rglob("*") if p.is_dir()]]:
        assert mode(d) & 0o077 == 0, f"{d} has mode {oct(mode(d))}"
