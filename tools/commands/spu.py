"""`rillet cluster spu start ID` (also `rillet spu start ID`): bring one dead SPU back.

The SC spawns the SPU again (the admin ``StartSpu`` message, as
``LocalCluster.start_spu`` sends); it rejoins its partitions as a follower and
catches up, or leads again the partitions that had no other replica. The command
returns once the SC lists the SPU Online, or fails with one line after
``--timeout``. An SPU that is already Online is left alone (exit 0), so the
command can be run to make sure. ``tools/spu-kill --restart-after`` uses
:func:`start_spu` too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rillet.ipc.errors import SpuNotFound, Timeout

if TYPE_CHECKING:
    from rillet.ipc import messages as m
    from rillet.ipc.names import ClusterPaths
from rillet.tools.args import EXIT_OK, duration_s, non_negative

# Every command imports this module (the parser registers it): psutil, the message schema and
# the table layout are imported where used, so `rillet topic list` does not pay for them.
ONLINE = "Online"          # SpuStatus.ONLINE.label; a test pins the two together
_POLL_S = 0.05


def _spu(conn, spu_id: int) -> m.SpuInfo:
    from rillet.ipc import messages as m
    spus = conn.call(m.ListSpus(conn.next_cid())).spus
    for info in spus:
        if info.id == spu_id:
            return info
    known = ", ".join(str(s.id) for s in spus) or "none"
    raise SpuNotFound(f"no SPU {spu_id} in this cluster (its SPUs: {known})")


def _gone(pid: int) -> bool:
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

    With ``old_pid`` (a process just signalled, which the SC may not have noticed
    yet), wait for that process to end, then start the SPU whatever its listed
    status, and wait for it Online under a new pid. Raises ClusterNotRunning,
    SpuNotFound, or Timeout naming the SPU's log.
    """
    from rillet.ipc import messages as m
    from rillet.ipc.admin_link import admin_connection
    deadline = time.monotonic() + timeout_s
    with admin_connection(paths) as conn:
        info = _spu(conn, spu_id)
        if old_pid is None and info.status == ONLINE:
            return info, True
        while old_pid is not None and not _gone(old_pid):
            _check_deadline(deadline, f"SPU {spu_id} (pid {old_pid}) did not exit within {timeout_s:g} s", paths, spu_id)
            time.sleep(_POLL_S)
        conn.call(m.StartSpu(conn.next_cid(), spu_id), timeout_s=max(1.0, deadline - time.monotonic()))
        while True:
            info = _spu(conn, spu_id)
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
            info = _spu(conn, spu_id)
            if info.status == ONLINE:
                return info
            _check_deadline(deadline, f"SPU {spu_id} was not online again within {timeout_s:g} s", paths, spu_id)
            time.sleep(_POLL_S)


def _check_deadline(deadline: float, what: str, paths: ClusterPaths, spu_id: int) -> None:
    if time.monotonic() >= deadline:
        raise Timeout(f"{what}; see {paths.spu_log_file(spu_id)}")


def cmd_spu_start(args) -> int:
    from rillet.ipc.names import ClusterPaths
    paths = ClusterPaths.for_cluster(args.cluster)
    info, already = start_spu(paths, args.id, args.timeout)
    if already:
        print(f"SPU {info.id} is already online (pid {info.pid})")
    else:
        print(f"started SPU {info.id}: online as pid {info.pid}")
    return EXIT_OK


def cmd_spu_add(args) -> int:
    from rillet.ipc.admin_link import admin_connection
    from rillet.ipc import messages as m
    from rillet.ipc.names import ClusterPaths
    timeout_ms = int(args.timeout * 1000)
    with admin_connection(ClusterPaths.for_cluster(args.cluster)) as conn:
        info = conn.call(m.AddSpu(conn.next_cid(), timeout_ms), timeout_s=args.timeout + 5).spus[0]
    print(f"added SPU {info.id}: online as pid {info.pid}")
    return EXIT_OK


def cmd_spu_remove(args) -> int:
    from rillet.ipc.admin_link import admin_connection
    from rillet.ipc import messages as m
    from rillet.ipc.names import ClusterPaths
    timeout_ms = int(args.timeout * 1000)
    with admin_connection(ClusterPaths.for_cluster(args.cluster)) as conn:
        conn.call(m.RemoveSpu(conn.next_cid(), args.id, timeout_ms), timeout_s=args.timeout + 10)
    print(f"removed SPU {args.id}: its replicas moved to other SPUs")
    return EXIT_OK


def register(spu_sub) -> None:
    """Add ``start`` under ``cluster spu`` (and its alias ``spu``)."""
    start = spu_sub.add_parser("start", help="start one SPU that is not running (it rejoins and catches up)")
    start.add_argument("id", type=non_negative, help="the SPU's id, as `spu list` shows it (e.g. 5001)")
    start.add_argument("--timeout", type=duration_s, default=30.0, help="how long to wait for it online (default 30s)")
    start.set_defaults(func=cmd_spu_start)
    add = spu_sub.add_parser("add", help="start one more SPU (the next id); new topics use it")
    add.add_argument("--timeout", type=duration_s, default=30.0, help="how long to wait for it online (default 30s)")
    add.set_defaults(func=cmd_spu_add)
    remove = spu_sub.add_parser("remove", help="move an SPU's replicas to the others, then stop and delete it")
    remove.add_argument("id", type=non_negative, help="the SPU's id, as `spu list` shows it")
    remove.add_argument("--timeout", type=duration_s, default=60.0,
                        help="how long the copies may take to catch up (default 60s)")
    remove.set_defaults(func=cmd_spu_remove)
