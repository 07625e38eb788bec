"""The client's way into a running cluster's SC: the admin connection, and telling a
dead cluster from an SC being restarted (pid files and command lines).

It lives in ipc/, not in rillet.broker, so that the client library never imports
the broker (tests/unit/test_packaging.py pins that); broker/launcher.py, which
starts and stops clusters, uses it too.
"""

from __future__ import annotations

import time

# psutil (and ipc.shm) are imported inside the functions that use them: every admin command
# (`rillet topic list`) imports this module, and they cost ~25 ms of start-up.
from . import messages as m
from .connection import Connection
from .errors import ClusterNotRunning, RilletError, ScUnavailable
from .names import ClusterPaths

# The command lines' module names (``python -m ...``) of a cluster's processes.
SC = "rillet.broker.sc"
SPU = "rillet.broker.spu"
SUPERVISOR = "rillet.broker.supervisor"
CONNECTOR = "rillet.connectors"          # a connector process (client/connectors/__main__.py)
# An admin call made while the SC is being restarted waits this long for it (it is
# back within 2 s of a SIGKILL), then fails with the retriable ScUnavailable.
ADMIN_WAIT_S = 3.0


def sc_pid(paths: ClusterPaths) -> int | None:
    """Pid of this cluster's live SC, or None."""
    return _pid_from(paths.sc_pid_file, SC, paths)


def supervisor_pid(paths: ClusterPaths) -> int | None:
    """Pid of this cluster's live supervisor, or None."""
    return _pid_from(paths.supervisor_pid_file, SUPERVISOR, paths)


def _pid_from(pid_file, module: str, paths: ClusterPaths) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_ours(pid, module, paths) else None


def _is_ours(pid: int, module: str, paths: ClusterPaths) -> bool:
    import psutil
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


def admin_connection(paths: ClusterPaths, timeout_s: float = 10.0, wait_s: float = ADMIN_WAIT_S) -> Connection:
    """A handshaken connection to the SC's admin socket.

    No SC and no supervisor: ClusterNotRunning at once. An SC being restarted (its
    supervisor lives): wait up to ``wait_s`` for it, then the retriable ScUnavailable.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if not paths.sc_socket.exists():
                raise ClusterNotRunning(f"no SC socket at {paths.sc_socket}")
            # A paused SC accepts the connection but never answers the handshake: give up on
            # it when the wait is over (at least 1 s), not after the calls' own timeout.
            handshake_s = min(timeout_s, max(deadline - time.monotonic(), 1.0))
            conn = Connection(paths.sc_socket, client_id="rillet-admin", timeout_s=handshake_s)
            conn.timeout_s = timeout_s
            return conn
        except RilletError as exc:
            reason = exc
        if supervisor_pid(paths) is None and sc_pid(paths) is None:
            hint = ""
            if cluster_processes(paths, modules=(SPU,)):
                hint = "; its SPUs still run: `rillet cluster start` adopts them"
            raise ClusterNotRunning(f"cluster {paths.cluster!r} is not running ({reason}){hint}") from reason
        if time.monotonic() >= deadline:
            raise ScUnavailable(
                f"the SC of cluster {paths.cluster!r} did not answer within {wait_s:g} s ({reason}); it is being "
                f"restarted and data keeps flowing: retry") from reason
        time.sleep(0.05)



def cluster_status(paths: ClusterPaths) -> m.ClusterStatus:
    with admin_connection(paths) as conn:
        return conn.call(m.ClusterStatusRequest(conn.next_cid()))

def cluster_processes(paths: ClusterPaths, modules: tuple[str, ...] = (SUPERVISOR, SC, SPU, CONNECTOR)) -> list[psutil.Process]:
    """Every live supervisor, SC, SPU and connector process of this cluster (by command
    line), or only those running ``modules``."""
    import psutil
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if any(_cmd_matches(cmd, module, paths) for module in modules):
            found.append(proc)
    return found
