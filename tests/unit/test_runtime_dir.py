"""The runtime directory and the peer check: another local user cannot stand in for a cluster."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
import stat

import pytest

from rillet.ipc.connection import Connection
from rillet.ipc.errors import ForeignPeer, RilletError
from rillet.ipc.transport import prepare_runtime_dir

as_root = pytest.mark.skipif(os.getuid() != 0, reason="making a directory or process of another uid needs root")
NOBODY = 65534


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_creates_both_levels_private(tmp_path):
    run = tmp_path / "rillet-uid" / "local-abc"
    prepare_runtime_dir(run)
    assert mode(run.parent) == 0o700 and mode(run) == 0o700


def test_a_loose_parent_of_ours_is_tightened(tmp_path):
    parent = tmp_path / "rillet-uid"
    parent.mkdir(mode=0o777)
    os.chmod(parent, 0o777)
    prepare_runtime_dir(parent / "local-abc")
    assert mode(parent) == 0o700


def test_a_symlinked_parent_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "rillet-uid").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RilletError, match="symlink"):
        prepare_runtime_dir(tmp_path / "rillet-uid" / "local-abc")
    assert not (tmp_path / "elsewhere" / "local-abc").exists()


def test_a_loose_cluster_directory_is_refused(tmp_path):
    run = tmp_path / "rillet-uid" / "local-abc"
    run.mkdir(parents=True)
    os.chmod(run, 0o755)
    with pytest.raises(RilletError, match="mode 755"):
        prepare_runtime_dir(run)


@as_root
def test_a_parent_made_by_another_user_is_refused(tmp_path):
    parent = tmp_path / "rillet-uid"
    parent.mkdir(mode=0o777)
    os.chown(parent, NOBODY, NOBODY)
    with pytest.raises(RilletError, match=f"belongs to uid {NOBODY}"):
        prepare_runtime_dir(parent / "local-abc")


@as_root
def test_a_client_refuses_a_server_of_another_user(tmp_path):
    """A process of uid nobody listens where a cluster's socket would be: no request reaches it."""
    shared = tempfile.mkdtemp(prefix="rillet-peer-test-", dir="/tmp")   # pytest's tmp_path is root-only
    os.chmod(shared, 0o777)
    path = os.path.join(shared, "sc.sock")
    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the impostor: listen as nobody, report what arrives
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            server = socket.socket(socket.AF_UNIX)
            server.bind(path)
            server.listen()
            os.write(ready_w, b"up")
            conn, _ = server.accept()
            conn.settimeout(2)
            try:
                data = conn.recv(100)
            except OSError:
                data = b""
            os.write(got_w, len(data).to_bytes(4, "little"))
        finally:
            os._exit(0)
    os.close(ready_w)           # so a child that failed before "up" ends the read with b""
    os.close(got_w)
    try:
        assert os.read(ready_r, 2) == b"up"
        with pytest.raises(ForeignPeer, match=f"runs as uid {NOBODY}"):
            Connection(path, timeout_s=2)
        assert int.from_bytes(os.read(got_r, 4), "little") == 0      # not even the handshake was sent
    finally:
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(got_r)
        shutil.rmtree(shared, ignore_errors=True)


def test_connect_waits_out_a_full_backlog(tmp_path):
    """A server whose backlog is full is busy, not gone: the client retries until it is accepted."""
    import threading
    from rillet.ipc.unix_socket import connect_unix
    path = str(tmp_path / "busy.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(0)
    fillers = []
    with pytest.raises(OSError) as full:            # fill the backlog until the kernel says EAGAIN
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            fillers.append(s)
            s.connect(path)
    assert full.value.errno == errno.EAGAIN
    accepted = []
    drain = threading.Timer(0.3, lambda: [accepted.append(server.accept()[0]) for _ in range(len(fillers))])
    drain.start()
    t0 = time.monotonic()
    client = connect_unix(path, timeout_s=5)
    assert 0.2 < time.monotonic() - t0 < 4
    drain.join()
    for s in [client, server, *fillers, *accepted]:
        s.close()


def test_connect_gives_up_on_a_full_backlog_at_its_deadline(tmp_path):
    from rillet.ipc.unix_socket import connect_unix
    path = str(tmp_path / "stuck.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(0)
    fillers = []
    try:
        with pytest.raises(OSError):
            for _ in range(16):
                s = socket.socket(socket.AF_UNIX)
                s.setblocking(False)
                fillers.append(s)
                s.connect(path)
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            connect_unix(path, timeout_s=0.3)
        assert exc.value.errno == errno.EAGAIN and time.monotonic() - t0 < 2
    finally:
        for s in [server, *fillers]:
            s.close()
