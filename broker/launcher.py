"""Start, stop and inspect a local cluster: what `rillet cluster ...` and
`rillet.testing` call.

The SC runs as a background daemon in its own session (process group), writing
its log to ``logs/sc.log``; it spawns the SPUs into that group. ``start_cluster``
returns once every SPU is online and every partition Online. ``stop_cluster`` asks
the SC to stop everything, waits, and then removes whatever a crash may have left
(processes of this cluster, socket files, the shared-memory object), so a stop
always ends with nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from rillet.ipc import messages as m
from rillet.ipc.connection import Connection
from rillet.ipc.errors import ClusterAlreadyRunning, ClusterNotRunning, RilletError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.shm import positions_objects, unlink_if_exists


def sc_pid(paths: ClusterPaths) -> int | None:
    """Pid of this cluster's live SC, or None."""
    try:
        pid = int(paths.sc_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_ours(pid, "rillet.broker.sc", paths) else None


def _is_ours(pid: int, module: str, paths: ClusterPaths) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = proc.cmdline()
    except psutil.Error:
        return False
    return _cmd_matches(cmd, module, paths)


def _cmd_matches(cmd: list[str], module: str, paths: ClusterPaths) -> bool:
    if module not in cmd:
        return False
    try:
        return cmd[cmd.index("--cluster") + 1] == paths.cluster and cmd[cmd.index("--home") + 1] == str(paths.home)
    except (ValueError, IndexError):
        return False


def admin_connection(paths: ClusterPaths, timeout_s: float = 10.0) -> Connection:
    if not paths.sc_socket.exists():
        raise ClusterNotRunning(f"cluster {paths.cluster!r} is not running (no SC socket at {paths.sc_socket})")
    try:
        return Connection(paths.sc_socket, client_id="rillet-admin", timeout_s=timeout_s)
    except RilletError as exc:
        raise ClusterNotRunning(f"cluster {paths.cluster!r} is not running: {exc}") from exc


def cluster_status(paths: ClusterPaths) -> m.ClusterStatus:
    with admin_connection(paths) as conn:
        return conn.call(m.ClusterStatusRequest(conn.next_cid()))


def start_cluster(paths: ClusterPaths, spus: int | None = None, timeout_s: float = 30.0) -> m.ClusterStatus:
    pid = sc_pid(paths)
    if pid is not None:
        raise ClusterAlreadyRunning(f"cluster {paths.cluster!r} is already running (SC pid {pid})")
    clean_leftovers(paths)
    for d in (paths.sc_dir, paths.log_dir, paths.data_dir):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rillet.broker.sc", "--cluster", paths.cluster, "--home", str(paths.home)]
    if spus is not None:
        cmd += ["--spus", str(spus)]
    # Private from the first byte: logs name topics and consumers (the daemons run under umask 077).
    with open(os.open(paths.sc_log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    try:
        return _wait_ready(paths, proc, timeout_s)
    except BaseException:
        # Not ready, or Ctrl-C: a cluster half started is stopped, never left behind.
        stop_cluster(paths)
        raise


def _wait_ready(paths: ClusterPaths, proc: subprocess.Popen, timeout_s: float) -> m.ClusterStatus:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RilletError(f"the SC exited with code {code} while starting; see {paths.sc_log_file}: {_last_line(paths.sc_log_file)}")
        try:
            status = cluster_status(paths)
            if status.spus_online == status.spus_total and status.partitions_online == status.partitions_total:
                return status
        except RilletError as exc:
            last_error = exc
        time.sleep(0.05)
    raise RilletError(f"cluster {paths.cluster!r} did not become ready within {timeout_s} s ({last_error}); see {paths.log_dir}")


def stop_cluster(paths: ClusterPaths, timeout_s: float = 15.0) -> bool:
    """Stop the cluster; True if it was running. Always leaves nothing behind."""
    pid = sc_pid(paths)
    if pid is not None:
        try:
            with admin_connection(paths, timeout_s=5.0) as conn:
                conn.call(m.ShutdownCluster(conn.next_cid()))
        except RilletError:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            psutil.Process(pid).wait(timeout_s)
        except psutil.TimeoutExpired:
            _kill_group(pid)
        except psutil.NoSuchProcess:
            pass
    clean_leftovers(paths)
    return pid is not None


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        psutil.Process(pid).wait(5)
    except psutil.Error:
        pass


def cluster_processes(paths: ClusterPaths) -> list[psutil.Process]:
    """Every live SC and SPU process of this cluster (by command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if _cmd_matches(cmd, "rillet.broker.sc", paths) or _cmd_matches(cmd, "rillet.broker.spu", paths):
            found.append(proc)
    return found


def clean_leftovers(paths: ClusterPaths) -> None:
    """Remove what a crashed cluster leaves: processes, sockets, shm, pid file."""
    procs = cluster_processes(paths)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    unlink_if_exists(paths.shm_name)
    for name in positions_objects(paths.positions_shm_prefix):    # SPUs killed before they could
        unlink_if_exists(name)
    if paths.runtime_dir.exists():
        for entry in paths.runtime_dir.iterdir():
            if entry.suffix == ".sock":
                entry.unlink(missing_ok=True)
        try:
            paths.runtime_dir.rmdir()
        except OSError:
            pass
    paths.sc_pid_file.unlink(missing_ok=True)


def delete_cluster(paths: ClusterPaths) -> None:
    import shutil
    stop_cluster(paths)
    shutil.rmtree(paths.cluster_dir, ignore_errors=True)


def _last_line(path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
