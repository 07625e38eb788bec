"""`rillet cluster spu start ID` (also `rillet spu start ID`): bring one dead SPU back.

The SC spawns the SPU again (the admin ``StartSpu`` message; broker/spu_start.py, which
``LocalCluster.start_spu`` uses too); it rejoins its partitions as a follower and
catches up, or leads again the partitions that had no other replica. The command
returns once the SC lists the SPU Online, or fails with one line after
``--timeout``. An SPU that is already Online is left alone (exit 0), so the
command can be run to make sure. ``tools/spu-kill --restart-after`` uses
:func:`start_spu` too.
"""

from __future__ import annotations

# The start-and-wait lives with the broker (rillet.testing uses it too, and may not import tools/).
from rillet.broker.spu_start import ONLINE, start_spu, wait_online  # noqa: F401 (spu-kill uses them from here)
from rillet.tools.args import EXIT_OK, duration_s, non_negative


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
