"""Start one SPU of a running cluster and wait until the SC lists it Online under a new
pid: what `rillet cluster spu start`, `tools/spu-kill --restart-after`, `rillet-chaos` and
`rillet.testing.LocalCluster.start_spu` all call (one home for the wait).

The SC answers ``StartSpu`` once it counts the SPU online, and right after a kill it may
still count the dead process so (its control link has not closed yet): an answer is no
proof. So the caller names the process it expects gone (``old_pid``; by default the pid
the SC lists, when that process is dead), waits for it to be gone, sends ``StartSpu`` and
polls the SC's SPU list until the row is Online with another pid.

A wait that cannot end says so, and why, instead of running out its timeout silently (a CHAOS
run once ended with a bare `SPU 5001 did not come online within 60 s`): a started process that
exits before it is online fails the start at once with its log's last line, a timeout names
what the SC lists and the SPU's processes with their state, and an SC lost meanwhile (killed,
replaced by its standby) is not an error: the next one is asked.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rillet.ipc.errors import RilletError, SpuNotFound, Timeout

if TYPE_CHECKING:
    from rillet.ipc import messages as m
    from rillet.ipc.names import ClusterPaths

# psutil, the message schema and the admin link are imported where used: every CLI command
# imports this module (through tools/commands/spu.py), and `rillet topic list` must not pay for them.
ONLINE = "Online"          # SpuStatus.ONLINE.label; a test pins the two together
_POLL_S = 0.05             # an SPU comes online in 0.1-1 s; 20 polls a second cost the SC nothing
_LOOK_S = 0.5              # how often the waiting start looks for the SPU's process on this host


def spu_row(conn, spu_id: int) -> m.SpuInfo:
    """The SC's row for ``spu_id``; SpuNotFound naming the cluster's SPUs."""
    from rillet.ipc import messages as m
    spus = conn.call(m.ListSpus(conn.next_cid())).spus
    for info in spus:
        if info.id == spu_id:
            return info
    known = ", ".join(str(s.id) for s in spus) or "none"
    raise SpuNotFound(f"no SPU {spu_id} in this cluster (its SPUs: {known})")


def process_gone(pid: int) -> bool:
    """True when process ``pid`` has exited, every thread of it (a zombie counts: its parent
    reaps it, not us).

    A zombie main thread is not enough: after a SIGKILL the main thread may be done (``ps``
    shows Z) while another thread still exits (the last one tears down the mappings and
    closes the sockets). The process then still holds its control link and its listening
    socket, and its parent cannot reap it yet, so the SC still counts it running and Online:
    a StartSpu sent then started nothing and was answered Ok at once, and the start waited
    out its timeout (the CHAOS run that ended with `SPU 5001 did not come online within 60 s`).
    A pidfd is readable only once the whole process has exited; without pidfds, a zombie
    whose /proc lists no other thread.
    """
    import os
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):        # no pidfds (Linux < 5.3, not Linux)
        return _gone_by_status(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    finally:
        os.close(fd)


def _gone_by_status(pid: int) -> bool:
    import os
    import psutil
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:                          # reaped meanwhile, or no /proc
        return True


def start_spu(paths: ClusterPaths, spu_id: int, timeout_s: float = 30.0, *,
              old_pid: int | None = None) -> tuple[m.SpuInfo, bool]:
    """Start SPU ``spu_id`` of the running cluster; its row once Online, and whether it
    already was (nothing done).

    An SPU listed Online whose process is alive is left alone. One listed Online whose
    process is dead (killed a moment ago) is started like one listed offline. With
    ``old_pid`` (a process just signalled, perhaps still alive), wait for that process to
    end, then start the SPU whatever its listed status. Either way the wait ends when the
    SC lists the SPU Online under a pid other than the old one. An SC restarted meanwhile
    (killed, replaced by its standby) is asked again: ``StartSpu`` is idempotent, and the
    new SC adopts a process the old one spawned. Raises ClusterNotRunning, SpuNotFound,
    RilletError when the started process exited before coming online (the SC's reason, or
    the SPU log's last line), or Timeout naming what the SC lists and the SPU's processes.
    """
    from rillet.ipc.admin_link import admin_connection
    deadline = time.monotonic() + timeout_s
    with admin_connection(paths) as conn:
        info = spu_row(conn, spu_id)
    if old_pid is None and info.status == ONLINE:
        if not info.pid or not process_gone(info.pid):
            return info, True
        old_pid = info.pid           # the SC has not seen it die yet
    while old_pid is not None and not process_gone(old_pid):
        _check_deadline(deadline, f"SPU {spu_id} (pid {old_pid}) did not exit within {timeout_s:g} s", paths, spu_id)
        time.sleep(_POLL_S)
    return _start_and_wait(paths, spu_id, old_pid, deadline, timeout_s), False


def _start_and_wait(paths: ClusterPaths, spu_id: int, old_pid: int | None, deadline: float,
                    timeout_s: float) -> m.SpuInfo:
    """Send StartSpu and poll the SC's row; on a lost SC (killed, paused past the call's
    timeout) connect to the next one and send StartSpu again."""
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    from rillet.ipc.errors import BrokenConnection, ScUnavailable
    conn = None
    info = None
    gone_since = None                # when no process of this SPU was seen running, after StartSpu
    next_look = 0.0
    try:
        while True:
            try:
                if conn is None:
                    conn = admin_connection(paths, timeout_s=max(1.0, min(10.0, deadline - time.monotonic())))
                    conn.call(m.StartSpu(conn.next_cid(), spu_id), timeout_s=max(1.0, deadline - time.monotonic()))
                info = spu_row(conn, spu_id)
            except (BrokenConnection, ScUnavailable, Timeout) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if time.monotonic() >= deadline:
                    # (StartSpu's answer can take the SC's own 10 s wait: no answer by the deadline
                    # need not mean a lost SC; the Timeout says what the SC lists now.)
                    raise _timed_out(paths, spu_id, timeout_s, old_pid, info, f"; the last call: {exc}") from exc
                time.sleep(_POLL_S)
                continue
            if info.status == ONLINE and info.pid != old_pid:
                return info
            now = time.monotonic()
            if now >= next_look:         # a process scan costs ~1 ms: not on every poll
                next_look = now + _LOOK_S
                if _spu_pids(paths, spu_id, old_pid):
                    gone_since = None
                elif gone_since is None:
                    gone_since = now
                elif now - gone_since >= _LOOK_S:
                    # Two looks apart and nothing runs: the process the SC started has exited
                    # (it had come online, or the SC would have said so) and nothing will start it.
                    raise RilletError(f"SPU {spu_id} exited after it was started and is not running (the SC lists "
                                      f"it {_listed(info)}); see {paths.spu_log_file(spu_id)}: "
                                      f"{last_log_line(paths.spu_log_file(spu_id))}")
            if now >= deadline:
                raise _timed_out(paths, spu_id, timeout_s, old_pid, info)
            time.sleep(_POLL_S)
    finally:
        if conn is not None:
            conn.close()


def _timed_out(paths: ClusterPaths, spu_id: int, timeout_s: float, old_pid: int | None, info, also: str = "") -> Timeout:
    """The Timeout of a start, saying why the wait did not end: what the SC lists (asked
    afresh when the last call got no answer), the SPU's processes here and its log's last line."""
    if info is None:
        from rillet.ipc.admin_link import admin_connection
        try:
            with admin_connection(paths, timeout_s=1.0, wait_s=1.0) as conn:
                info = spu_row(conn, spu_id)
        except RilletError:
            pass
    listed = "the SC did not answer" if info is None else f"the SC lists it {_listed(info)}"
    log = paths.spu_log_file(spu_id)
    return Timeout(f"SPU {spu_id} did not come online within {timeout_s:g} s ({listed}; "
                   f"{_processes(paths, spu_id, old_pid)}{also}); see {log}: {last_log_line(log)}")


def _listed(info: m.SpuInfo) -> str:
    return f"{info.status}, pid {info.pid}" if info.pid else info.status


def _spu_pids(paths: ClusterPaths, spu_id: int, old_pid: int | None) -> list[int]:
    """Live processes of SPU ``spu_id`` on this host (by command line), the old one left out."""
    from rillet.broker.launcher import spu_id_of
    from rillet.ipc.admin_link import SPU, cluster_processes
    return sorted(proc.pid for proc in cluster_processes(paths, modules=(SPU,))
                  if proc.pid != old_pid and spu_id_of(proc) == spu_id)


def _processes(paths: ClusterPaths, spu_id: int, old_pid: int | None) -> str:
    import psutil
    described = []
    for pid in _spu_pids(paths, spu_id, old_pid):
        try:
            described.append(f"pid {pid} {psutil.Process(pid).status()}")
        except psutil.Error:
            continue
    return "its process: " + ", ".join(described) if described else "no process of it runs"


def last_log_line(path) -> str:
    """The last non-empty line of a log (read from its end: an SPU's log grows across restarts)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def wait_online(paths: ClusterPaths, spu_id: int, timeout_s: float = 30.0) -> m.SpuInfo:
    """Wait until the SC lists SPU ``spu_id`` Online (a resumed SIGSTOP, for one)."""
    from rillet.ipc.admin_link import admin_connection
    from rillet.ipc.errors import BrokenConnection, ScUnavailable
    deadline = time.monotonic() + timeout_s
    conn = admin_connection(paths)               # ClusterNotRunning at once
    try:
        while True:
            try:
                if conn is None:                 # the SC was lost: ask the one restarted in its place
                    conn = admin_connection(paths, timeout_s=max(1.0, min(10.0, deadline - time.monotonic())))
                info = spu_row(conn, spu_id)
            except (BrokenConnection, ScUnavailable, Timeout):
                if conn is not None:
                    conn.close()
                    conn = None
                info = None
            if info is not None and info.status == ONLINE:
                return info
            _check_deadline(deadline, f"SPU {spu_id} was not online again within {timeout_s:g} s", paths, spu_id)
            time.sleep(_POLL_S)
    finally:
        if conn is not None:
            conn.close()


def _check_deadline(deadline: float, what: str, paths: ClusterPaths, spu_id: int) -> None:
    if time.monotonic() >= deadline:
        raise Timeout(f"{what}; see {paths.spu_log_file(spu_id)}")
