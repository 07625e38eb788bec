"""Start, stop and inspect a local cluster: what `rillet cluster ...` and
`rillet.testing` call.

``start_cluster`` launches the supervisor (broker/supervisor.py) as a background
daemon in its own session (process group), writing to ``logs/sc.log``; it runs the
SC, which spawns the SPUs into that group, and starts the SC again if it dies. It
returns once every SPU is online and every partition Online. SPUs still running
from a cluster whose SC and supervisor died are adopted, not killed: the new SC
takes them over with their pids. ``stop_cluster`` asks the SC to stop everything,
waits, and then removes whatever a crash may have left (processes of this cluster,
socket files, the shared-memory object, pid files), so a stop always ends with
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

# psutil (and ipc.shm) are imported inside the functions that use them: every admin command
# (`rillet topic list`) imports this module, and they cost ~25 ms of start-up.
from rillet.ipc import messages as m
from rillet.ipc.admin_link import (  # noqa: F401 (admin_connection and the pid helpers are the launcher's API too)
    ADMIN_WAIT_S, CONNECTOR, SC, SPU, SUPERVISOR, _cmd_matches, admin_connection, cluster_processes, cluster_status, sc_pid,
    supervisor_pid,
)
from rillet.ipc.connection import Connection
from rillet.ipc.errors import ClusterAlreadyRunning, ClusterNotRunning, RilletError
from rillet.ipc.names import ClusterPaths


METRICS_OFF = -1     # `--metrics-port off`: the cluster serves no metrics from now on
KILL_ROUNDS = 20     # each round kills what started meanwhile; a spawn chain is 3 deep (supervisor, SC, SPU)


def start_cluster(paths: ClusterPaths, spus: int | None = None, timeout_s: float = 30.0,
                  metrics_port: int | None = None) -> m.ClusterStatus:
    """``metrics_port``: None keeps the cluster's metrics config as it is, METRICS_OFF turns
    metrics off, 0 serves them on any free port, N on 127.0.0.1:N (broker/sc/metrics_http.py)."""
    pid = sc_pid(paths) or supervisor_pid(paths)
    if pid is not None:
        raise ClusterAlreadyRunning(f"cluster {paths.cluster!r} is already running (pid {pid})")
    _configure_metrics(paths, metrics_port)
    clean_leftovers(paths, keep_spus=True)      # live SPUs of a cluster whose SC died are adopted
    for d in (paths.sc_dir, paths.log_dir, paths.data_dir):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", SUPERVISOR, "--cluster", paths.cluster, "--home", str(paths.home)]
    if spus is not None:
        cmd += ["--spus", str(spus)]
    try:
        # A Ctrl-C inside Popen (it waits for the child's exec) would leave a supervisor running
        # that nothing stops: it is deferred to the end of the block, where the except sees it.
        with sigint_deferred():
            # Private from the first byte: logs name topics and consumers (the daemons run under umask 077).
            with open(os.open(paths.sc_log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True)
        return _wait_ready(paths, proc, timeout_s)
    except BaseException:
        # Not ready, or Ctrl-C: a cluster half started is stopped, never left behind (a second
        # Ctrl-C waits until it is).
        with sigint_deferred():
            stop_cluster(paths)
        raise


@contextlib.contextmanager
def sigint_deferred():
    """Run the block with SIGINT noted instead of raised; on leaving it, the previous handler
    gets it (KeyboardInterrupt by default). Only the main thread can set handlers: elsewhere
    the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda _signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, caught[0])
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _configure_metrics(paths: ClusterPaths, metrics_port: int | None) -> None:
    """Check the port before anything starts (a port in use fails `cluster start` at once,
    naming it), then keep it as the cluster's config for every SC that follows."""
    from rillet.broker.sc import metrics_http
    if metrics_port == METRICS_OFF:
        metrics_http.save_config(paths.sc_dir, None)
        return
    if metrics_port is None:
        kept = metrics_http.load_config(paths.sc_dir) if paths.sc_dir.exists() else None
        if kept is not None and kept.port:
            try:
                metrics_http.probe_port(kept.port)
            except RilletError as exc:
                raise RilletError(f"{exc} (the port this cluster was started with; choose another with "
                                  f"--metrics-port N, or --metrics-port off)") from None
        return
    metrics_http.check_port(metrics_port)
    metrics_http.probe_port(metrics_port)
    paths.sc_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    metrics_http.save_config(paths.sc_dir, metrics_http.MetricsConfig(port=metrics_port))


def _wait_ready(paths: ClusterPaths, proc: subprocess.Popen, timeout_s: float) -> m.ClusterStatus:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RilletError(f"the SC exited with code {code} while starting; see {paths.sc_log_file}: {_last_line(paths.sc_log_file)}")
        try:
            if not paths.sc_socket.exists():
                raise ClusterNotRunning(f"no SC socket at {paths.sc_socket} yet")
            with Connection(paths.sc_socket, client_id="rillet-admin") as conn:
                status = conn.call(m.ClusterStatusRequest(conn.next_cid()))
            if status.spus_online == status.spus_total and status.partitions_online == status.partitions_total:
                return status
        except RilletError as exc:
            last_error = exc
        time.sleep(0.05)
    raise RilletError(f"cluster {paths.cluster!r} did not become ready within {timeout_s} s ({last_error}); see {paths.log_dir}")


def stop_cluster(paths: ClusterPaths, timeout_s: float = 15.0) -> bool:
    """Stop the cluster; True if it was running. Always leaves nothing behind.

    The SC is asked to stop (it stops its SPUs and exits 0, and then so does the
    supervisor); without a live SC the supervisor is sent SIGTERM (it stops the SPUs).
    """
    sc, sup = sc_pid(paths), supervisor_pid(paths)
    running = sc is not None or sup is not None or bool(cluster_processes(paths, modules=(SPU,)))
    for pid in (sc, sup):
        if pid is not None:
            _signal(pid, signal.SIGCONT)         # a paused SC or supervisor could not act on the stop
    if sc is not None:
        try:
            with admin_connection(paths, timeout_s=5.0, wait_s=0.0) as conn:
                conn.call(m.ShutdownCluster(conn.next_cid()))
        except RilletError:
            _signal(sc, signal.SIGTERM)
    elif sup is not None:
        _signal(sup, signal.SIGTERM)
    for pid in (sc, sup):
        if pid is not None and not _wait_gone(pid, timeout_s):
            _kill_group(sup if sup is not None else pid)
    clean_leftovers(paths)
    return running


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited; a zombie counts as gone (its parent, perhaps the
    process that ran `cluster start`, reaps it, not us)."""
    import psutil
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                proc.wait(0)          # reaps it if it is our child; harmless otherwise
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.TimeoutExpired:
            return True
        time.sleep(0.02)
    return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    """SIGKILL the process group of ``pid`` (the cluster's session), never our own."""
    import psutil
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        psutil.Process(pid).wait(5)
    except psutil.Error:
        pass



def clean_leftovers(paths: ClusterPaths, keep_spus: bool = False) -> None:
    """Remove what a crashed cluster leaves: processes, sockets, shm, pid files.

    ``keep_spus``: live SPU processes and their sockets stay (a starting SC adopts them).
    """
    import psutil
    from rillet.ipc.positions_shm import positions_objects
    from rillet.ipc.shm import unlink_if_exists
    spus = cluster_processes(paths, modules=(SPU,)) if keep_spus else []
    kept = {str(paths.spu_socket(spu_id_of(p))) for p in spus} | {str(paths.spu_ring_socket(spu_id_of(p))) for p in spus}
    # Killed one by one, a supervisor or SC may have started a child between the listing and
    # its death (an SC orphaned so starts a new supervisor, which starts SPUs: a whole cluster
    # back), so list again until nothing of the cluster is left.
    for _round in range(KILL_ROUNDS):
        procs = [p for p in cluster_processes(paths) if p.pid not in {s.pid for s in spus}]
        if not procs:
            break
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
    if not spus:       # kept SPUs fence against the table until the adopting SC replaces it
        unlink_if_exists(paths.shm_name)
    kept_positions = {paths.positions_shm_name(spu_id_of(p)) for p in spus}
    for name in positions_objects(paths.positions_shm_prefix):    # SPUs killed before they could
        if name not in kept_positions:
            unlink_if_exists(name)
    if paths.runtime_dir.exists():
        for entry in paths.runtime_dir.iterdir():
            if entry.suffix == ".sock" and str(entry) not in kept:
                entry.unlink(missing_ok=True)
        try:
            paths.runtime_dir.rmdir()
        except OSError:
            pass
    paths.sc_pid_file.unlink(missing_ok=True)
    paths.supervisor_pid_file.unlink(missing_ok=True)


def spu_id_of(proc: psutil.Process) -> int:
    """The SPU id on an SPU process's command line; -1 when it has none (or exited)."""
    import psutil
    try:
        cmd = proc.cmdline()
        return int(cmd[cmd.index("--spu-id") + 1])
    except (psutil.Error, ValueError, IndexError):
        return -1


def live_spus(paths: ClusterPaths) -> dict[int, psutil.Process]:
    """SPU id -> its running process, for every live SPU process of this cluster."""
    return {spu_id: p for p in cluster_processes(paths, modules=(SPU,)) if (spu_id := spu_id_of(p)) >= 0}


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
