"""Start one SPU of a running cluster and wait until the SC lists it Online under a new
pid: what `rillet cluster spu start`, `tools/spu-kill --restart-after`, `rillet-chaos` and
`rillet.testing.LocalCluster.start_spu` all call (one home for the wait).

The SC answers ``StartSpu`` once it counts the SPU online, and right after a kill it may
still count the dead process so (its control link has not closed yet): an answer is no
proof. So the caller names the process it expects gone (``old_pid``; by default the pid
the SC lists, when that process is dead), waits for it to be gone, sends ``StartSpu`` and
polls the SC's SPU list until the row is Online with another pid.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rillet.ipc.errors import SpuNotFound, Timeout

if TYPE_CHECKING:
    from rillet.ipc import messages as m
    from rillet.ipc.names import ClusterPaths

# psutil, the message schema and the admin link are imported where used: every CLI command
# imports this module (through tools/commands/spu.py), and `rillet topic list` must not pay for them.
ONLINE = "Online"          # SpuStatus.ONLINE.label; a test pins the two together
_POLL_S = 0.05             # an SPU comes online in 0.1-1 s; 20 polls a second cost the SC nothing


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
    """True when ``pid`` has exited (a zombie counts: its parent reaps it, not us)."""
    import psutil
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def start_spu(paths: ClusterPaths, spu_id: int, timeout_s: float = 30.0, *,
              old_pid: int | None = None) -> tuple[m.SpuInfo, bool]:
    """Start SPU ``spu_id`` of the running cluster; its row once Online, and whether it
    already was (nothing done).

    An SPU listed Online whose process is alive is left alone. One listed Online whose
    process is dead (killed a moment ago) is started like one listed offline. With
    ``old_pid`` (a process just signalled, perhaps still alive), wait for that process to
    end, then start the SPU whatever its listed status. Either way the wait ends when the
    SC lists the SPU Online under a pid other than the old one. Raises ClusterNotRunning,
    SpuNotFound, or Timeout naming the SPU's log.
    """
    from rillet.ipc import messages as m
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
        conn.call(m.StartSpu(conn.next_cid(), spu_id), timeout_s=max(1.0, deadline - time.monotonic()))
        while True:
            info = spu_row(conn, spu_id)
            if info.status == ONLINE and info.pid != old_pid:
                return info, False
            _check_deadline(deadline, f"SPU {spu_id} did not come online within {timeout_s:g} s", paths, spu_id)
            time.sleep(_POLL_S)


def wait_online(paths: ClusterPaths, spu_id: int, timeout_s: float = 30.0) -> m.SpuInfo:
    """Wait until the SC lists SPU ``spu_id`` Online (a resumed SIGSTOP, for one)."""
    from rillet.ipc.admin_link import admin_connection
    deadline = time.monotonic() + timeout_s
    with admin_connection(paths) as conn:
        while True:
            info = spu_row(conn, spu_id)
            if info.status == ONLINE:
                return info
            _check_deadline(deadline, f"SPU {spu_id} was not online again within {timeout_s:g} s", paths, spu_id)
            time.sleep(_POLL_S)


def _check_deadline(deadline: float, what: str, paths: ClusterPaths, spu_id: int) -> None:
    if time.monotonic() >= deadline:
        raise Timeout(f"{what}; see {paths.spu_log_file(spu_id)}")
