"""`rillet`: the command line, in Fluvio's shape.

Each command is a small function taking the parsed arguments and returning an
exit code. Usage errors are one line on stderr and exit 2; failed operations one
line and exit 1; never a traceback (set RILLET_DEBUG=1 to see one). Records go to
stdout one per line; progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from rillet.ipc.errors import ClusterAlreadyRunning, ClusterNotRunning, RilletError, TopicNotFound
from rillet.ipc.names import ClusterPaths

from .args import (
    EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, UsageError, duration_ms, duration_s, name, positive, say, size,
    topic_codec,
)
from .output import FORMATS, render


def _paths(args) -> ClusterPaths:
    return ClusterPaths.for_cluster(args.cluster)


def _human_duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


# --- cluster -------------------------------------------------------------------------------------

def cmd_cluster_start(args) -> int:
    from rillet.broker import launcher
    paths = _paths(args)
    try:
        status = launcher.start_cluster(paths, args.spus, timeout_s=args.timeout, metrics_port=args.metrics_port)
    except ClusterAlreadyRunning:
        # Starting what already runs is done, not an error (the quick start and scripts can
        # run it twice), unless it asks for a different SPU count: say how to get that.
        status = launcher.cluster_status(paths)
        if args.spus is not None and args.spus != status.spus_total:
            fix = (f"stop it (rillet cluster stop), then run rillet cluster start --spus {args.spus}"
                   if args.spus > status.spus_total else "remove SPUs with rillet cluster spu remove ID")
            raise ClusterAlreadyRunning(f"cluster {paths.cluster!r} is already running with {status.spus_total} "
                                        f"SPU(s), not {args.spus}: {fix}") from None
        _check_running_metrics(paths, status, args.metrics_port)
        print(f"cluster {paths.cluster!r} is already running: {status.spus_online}/{status.spus_total} SPU(s) online, "
              f"{status.partitions_online}/{status.partitions_total} partitions online (SC pid {status.sc_pid})")
        _say_metrics(status)
        _make_current(paths)
        return EXIT_OK
    _make_current(paths)
    print(f"started cluster {paths.cluster!r}: {status.spus_online} SPU(s) online, "
          f"{status.partitions_online}/{status.partitions_total} partitions online (SC pid {status.sc_pid})")
    _say_metrics(status)
    return EXIT_OK


def metrics_port(text: str) -> int:
    """`--metrics-port`: 0 to 65535 (0: any free port), or `off`."""
    from rillet.broker.launcher import METRICS_OFF
    if text.strip().lower() == "off":
        return METRICS_OFF
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port (0 to 65535, 0: any free one) or 'off', got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535 (0: any free one), got {port}")
    return port


def _say_metrics(status) -> None:
    if status.metrics_url:
        print(f"metrics: {status.metrics_url}")
    elif status.metrics_error:
        say(f"warning: metrics not served: {status.metrics_error}")


def _check_running_metrics(paths: ClusterPaths, status, wanted: int | None) -> None:
    """A running cluster asked for other metrics than it serves: say how to get them (exit 1)."""
    from rillet.broker.launcher import METRICS_OFF
    if wanted is None:
        return
    serving = int(status.metrics_url.rsplit(":", 1)[1].split("/", 1)[0]) if status.metrics_url else None
    if wanted == METRICS_OFF:
        same = serving is None
    else:
        same = serving is not None and wanted in (0, serving)
    if same:
        return
    now = f"serves metrics on port {serving}" if serving is not None else "serves no metrics"
    raise ClusterAlreadyRunning(f"cluster {paths.cluster!r} is already running and {now}: stop it (rillet cluster "
                                f"stop), then start it with the --metrics-port you want")


def _make_current(paths: ClusterPaths) -> None:
    """The cluster just started becomes the current profile (Fluvio's `cluster start` does
    the same), so later commands without --cluster go there."""
    from rillet.ipc import profiles
    known = profiles.load(paths.home)
    if known.current != paths.cluster or known.clusters.get(paths.cluster) != paths.cluster:
        profiles.save(paths.home, known.with_cluster_started(paths.cluster))


def cmd_cluster_status(args) -> int:
    from rillet.broker import launcher
    if args.watch:                  # `cluster status --watch` is `rillet top`
        from .commands.top import cmd_top
        return cmd_top(args)
    paths = _paths(args)
    try:
        status = launcher.cluster_status(paths)
    except ClusterNotRunning:
        # An answer, not a failure of the command: stdout, no "error:", exit 1 for scripts.
        print(f"cluster {paths.cluster!r} is not running (start it with: rillet cluster start)")
        return EXIT_FAILED
    print(f"cluster {status.cluster!r} is running (SC pid {status.sc_pid}): "
          f"{status.spus_online}/{status.spus_total} SPUs online, {status.topics} topic{'' if status.topics == 1 else 's'}, "
          f"{status.partitions_online}/{status.partitions_total} partitions online")
    _say_metrics(status)
    return EXIT_OK


def cmd_cluster_stop(args) -> int:
    from rillet.broker import launcher
    paths = _paths(args)
    was_running = launcher.stop_cluster(paths)
    print(f"stopped cluster {paths.cluster!r}" if was_running else f"cluster {paths.cluster!r} was not running")
    return EXIT_OK


def cmd_cluster_delete(args) -> int:
    from rillet.broker import launcher
    paths = _paths(args)
    launcher.delete_cluster(paths)
    from rillet.ipc import profiles
    known = profiles.load(paths.home)
    if paths.cluster in known.clusters.values():          # Fluvio's `cluster delete` drops its profile too
        profiles.save(paths.home, known.without_cluster(paths.cluster))
    print(f"deleted cluster {paths.cluster!r} and its data ({paths.cluster_dir})")
    return EXIT_OK


def cmd_spu_list(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        rows = [dict(id=s.id, name=s.name, status=s.status, pid=s.pid, socket=s.socket,
                     leaders=s.leaders, replicas=s.replicas) for s in admin.list_spus()]
    print(render(rows, [("ID", "id"), ("NAME", "name"), ("STATUS", "status"), ("PID", "pid"),
                        ("LEADERS", "leaders"), ("REPLICAS", "replicas"), ("SOCKET", "socket")], args.output))
    return EXIT_OK


# --- topics and partitions --------------------------------------------------------------------

def cmd_topic_create(args) -> int:
    from rillet import FluvioAdmin, TopicSpec
    spec = TopicSpec.create().with_partitions(args.partitions).with_replications(args.replication)
    if args.retention_time is not None:
        spec = spec.with_retention_time(int(args.retention_time))
    if args.segment_size is not None:
        spec = spec.with_segment_size(args.segment_size)
    if args.max_partition_size is not None:
        spec = spec.with_max_partition_size(args.max_partition_size)
    if args.compression_type is not None:
        spec = spec.with_compression(args.compression_type)
    if args.min_in_sync_replicas is not None:
        spec = spec.with_min_in_sync_replicas(args.min_in_sync_replicas)
    if args.flush is not None or args.flush_interval is not None:
        spec = spec.with_flush(args.flush or "interval", args.flush_interval)
    with FluvioAdmin.connect(args.cluster) as admin:
        admin.create_topic(args.name, spec)
    print(f'topic "{args.name}" created')
    return EXIT_OK


def _topic_row(t) -> dict:
    c = t.spec
    return dict(name=t.name(), partitions=c.partitions, replication=c.replication,
                retention_time_s=c.retention_time_s, segment_size=c.segment_size,
                max_partition_size=c.max_partition_size, compression_type=c.compression_type,
                min_in_sync_replicas=c.min_in_sync_replicas, flush=c.flush, flush_interval_ms=c.flush_interval_ms,
                status=t.status)


def cmd_topic_list(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        rows = [_topic_row(t) for t in admin.all_topics()]
    for r in rows:
        r["type"] = "computed"
        r["retention"] = _human_duration(r["retention_time_s"]) if r["retention_time_s"] else "-"
    print(render(rows if args.output != "table" else rows,
                 [("NAME", "name"), ("TYPE", "type"), ("PARTITIONS", "partitions"), ("REPLICAS", "replication"),
                  ("RETENTION TIME", "retention"), ("COMPRESSION", "compression_type"), ("STATUS", "status")],
                 args.output))
    return EXIT_OK


def cmd_topic_describe(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        found = admin.list_topics([args.name])
    if not found:
        raise TopicNotFound(f"Topic not found: {args.name}")
    topic = found[0]
    row = _topic_row(topic)
    if args.output != "table":
        print(render([row], [], args.output))
        return EXIT_OK
    labels = [("Name", "name"), ("Type", None), ("Partition Count", "partitions"),
              ("Replication Factor", "replication"), ("Min In-Sync Replicas", "min_in_sync_replicas"),
              ("Retention Time", "retention_time_s"), ("Segment Size", "segment_size"),
              ("Max Partition Size", "max_partition_size"), ("Compression", "compression_type"), ("Status", "status")]
    width = max(len(label) for label, _ in labels)
    for label, key in labels:
        value = "computed" if key is None else row[key]
        if key == "retention_time_s":
            value = _human_duration(value) if value else "-"
        print(f" {label.ljust(width)}  : {'-' if value is None else value}")
    return EXIT_OK


def cmd_topic_update(args) -> int:
    from rillet import FluvioAdmin
    changes = {k: getattr(args, k) for k in ("retention_time", "max_partition_size", "segment_size",
                                             "compression_type", "flush", "flush_interval", "min_in_sync_replicas")
               if getattr(args, k) is not None}
    if not changes:
        raise UsageError("nothing to update: give at least one of --retention-time, --max-partition-size, "
                         "--segment-size, --compression-type, --flush, --flush-interval, --min-in-sync-replicas")
    if "retention_time" in changes:
        changes["retention_time"] = int(changes["retention_time"])
    if "flush_interval" in changes:
        changes["flush_interval"] = f"{changes['flush_interval']}ms"
    with FluvioAdmin.connect(args.cluster) as admin:
        admin.update_topic(args.name, **changes)
    print(f'topic "{args.name}" updated')
    return EXIT_OK


def cmd_topic_add_partition(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        admin.add_partitions(args.name, args.count, timeout_ms=int(args.timeout * 1000))
        count = admin.list_topics([args.name])[0].spec.partitions
    print(f'added {args.count} partition(s) to topic "{args.name}": it has {count}')
    return EXIT_OK


def cmd_topic_delete(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        admin.delete_topic(args.name)
    print(f'topic "{args.name}" deleted')
    return EXIT_OK


def cmd_partition_list(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        parts = admin.list_partitions(args.topics or [])
    rows = [dict(topic=p.topic, partition=p.partition, leader=p.leader, leader_epoch=p.leader_epoch,
                 replicas=list(p.replicas), in_sync=list(p.in_sync), status=p.status, hw=p.hw, leo=p.leo,
                 log_start=p.log_start, size=p.size_bytes, flushes=p.flushes,
                 problems=[dict(spu=i.spu, kind=i.kind, cause=i.cause) for i in p.problems]) for p in parts]
    columns = [("TOPIC", "topic"), ("PARTITION", "partition"), ("LEADER", "leader"), ("EPOCH", "leader_epoch"),
               ("REPLICAS", "replicas"), ("IN-SYNC", "in_sync"), ("STATUS", "status"),
               ("SIZE", "size"), ("LOG START", "log_start"), ("HW", "hw"), ("LEO", "leo")]
    if args.output == "table" and any(r["problems"] for r in rows):
        # Shown only when a replica is not whole, so the usual table stays as narrow as it was.
        for r in rows:
            r["problem_text"] = "; ".join(f"{i['spu']} {i['kind']}: {i['cause']}" for i in r["problems"]) or "-"
        columns.append(("PROBLEMS", "problem_text"))
    print(render(rows, columns, args.output))
    return EXIT_OK


# --- the parser --------------------------------------------------------------------------------------------

def build_parser() -> Parser:
    p = Parser(prog="rillet", description="rillet: a streaming broker for one host (Fluvio's model)")
    p.add_argument("--cluster", default=None, help="cluster name (default: $RILLET_CLUSTER or 'local')")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    cluster = sub.add_parser("cluster", help="start, stop and inspect the local cluster")
    csub = cluster.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    csub.required = True
    start = csub.add_parser("start", help="start the SC and SPUs in the background; returns when all is Online")
    start.add_argument("--spus", type=positive, default=None, help="number of SPUs (default 1; kept across restarts)")
    start.add_argument("--timeout", type=duration_s, default=30.0, help="how long to wait for readiness (default 30s)")
    start.add_argument("--metrics-port", type=metrics_port, default=None, metavar="N|off",
                       help="serve Prometheus metrics on 127.0.0.1:N/metrics (0: any free port; kept across "
                            "restarts; off: stop serving them)")
    start.set_defaults(func=cmd_cluster_start)
    status = csub.add_parser("status", help="is the cluster running? (--watch: live, as rillet top)")
    status.add_argument("--watch", action="store_true", help="the live view of rillet top")
    from .commands import top
    top.add_arguments(status, output=False)
    status.set_defaults(func=cmd_cluster_status)
    csub.add_parser("stop", help="stop every process; data is kept").set_defaults(func=cmd_cluster_stop)
    csub.add_parser("delete", help="stop and delete all data").set_defaults(func=cmd_cluster_delete)
    spu = csub.add_parser("spu", help="SPUs of the cluster")
    spu_sub = spu.add_subparsers(dest="spu_action", metavar="ACTION", parser_class=Parser)
    spu_sub.required = True
    _add_spu_commands(spu_sub)

    top_spu = sub.add_parser("spu", help="alias of 'cluster spu'")
    top_spu_sub = top_spu.add_subparsers(dest="spu_action", metavar="ACTION", parser_class=Parser)
    top_spu_sub.required = True
    _add_spu_commands(top_spu_sub)

    topic = sub.add_parser("topic", help="create, list, describe and delete topics")
    tsub = topic.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    tsub.required = True
    create = tsub.add_parser("create", help="create a topic")
    create.add_argument("name", type=name)
    create.add_argument("-p", "--partitions", type=positive, default=1)
    create.add_argument("-r", "--replication", type=positive, default=1)
    _add_topic_settings(create)
    create.set_defaults(func=cmd_topic_create)
    update = tsub.add_parser("update", help="change a live topic's retention, sizes, compression, flush or min ISR")
    update.add_argument("name", type=name)
    _add_topic_settings(update)
    update.set_defaults(func=cmd_topic_update)
    add = tsub.add_parser("add-partition", help="add partitions to a topic (keys then hash over the new count)")
    add.add_argument("name", type=name)
    add.add_argument("-c", "--count", type=positive, default=1, help="how many to add (default 1)")
    add.add_argument("--timeout", type=duration_s, default=30.0, help="how long to wait for them Online (default 30s)")
    add.set_defaults(func=cmd_topic_add_partition)
    tlist = tsub.add_parser("list", help="list topics")
    _add_output(tlist)
    tlist.set_defaults(func=cmd_topic_list)
    describe = tsub.add_parser("describe", help="show one topic")
    describe.add_argument("name", type=name)
    _add_output(describe)
    describe.set_defaults(func=cmd_topic_describe)
    delete = tsub.add_parser("delete", help="delete a topic and its data")
    delete.add_argument("name", type=name)
    delete.set_defaults(func=cmd_topic_delete)

    partition = sub.add_parser("partition", help="partitions and their leaders")
    psub = partition.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    psub.required = True
    plist = psub.add_parser("list", help="list partitions")
    plist.add_argument("topics", nargs="*", type=name, help="only these topics")
    _add_output(plist)
    plist.set_defaults(func=cmd_partition_list)

    from .commands import consume, produce
    from .commands import connector, consumer, dashboard, profile, smartmodule
    produce.register(sub)
    top.register(sub)
    dashboard.register(sub)
    profile.register(sub)
    consume.register(sub)
    consumer.register(sub)
    connector.register(sub)
    smartmodule.register(sub)
    _accept_cluster_everywhere(p)
    return p


def _accept_cluster_everywhere(parser: Parser, top: bool = True) -> None:
    """Let `--cluster NAME` stand after the subcommand too (`rillet topic list --cluster c`),
    as the README promises for every command. Below the top level its default is SUPPRESS,
    so a subcommand that does not get it keeps the value given before the subcommand."""
    if not top and "--cluster" not in parser._option_string_actions:
        parser.add_argument("--cluster", default=argparse.SUPPRESS,
                            help="cluster name (default: $RILLET_CLUSTER or 'local')")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_cluster_everywhere(child, top=False)


def _add_topic_settings(parser) -> None:
    """The settings `topic create` takes and `topic update` can change."""
    parser.add_argument("--retention-time", type=duration_s, default=None, help="e.g. 7d, 12h (at least 10s)")
    parser.add_argument("--segment-size", type=size, default=None, help="e.g. 64MiB (default 64MiB)")
    parser.add_argument("--max-partition-size", type=size, default=None, help="e.g. 10GiB")
    parser.add_argument("--compression-type", type=topic_codec, default=None,
                        help="any (default), none, gzip, snappy, lz4 or zstd")
    parser.add_argument("--min-in-sync-replicas", type=positive, default=None,
                        help="ReadCommitted produces need this many in-sync replicas (default 1 for -r 1, else 2)")
    parser.add_argument("--flush", choices=["none", "interval", "every-batch"], default=None,
                        help="fsync policy: none (default; survives process crashes, not power loss), "
                             "every-batch (before each ack), interval")
    parser.add_argument("--flush-interval", type=duration_ms, default=None, metavar="DUR",
                        help="with --flush interval: how often (default 1s)")


def _add_output(parser) -> None:
    parser.add_argument("-O", "--output", choices=FORMATS, default="table")


def _add_spu_commands(sub) -> None:
    from .commands import spu
    lst = sub.add_parser("list", help="list SPUs")
    _add_output(lst)
    lst.set_defaults(func=cmd_spu_list)
    spu.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        say(f"error: {exc}")            # every error line starts with "error:"; usage errors exit 2
        return EXIT_USAGE
    except RilletError as exc:
        say(f"error: {exc}")
        if os.environ.get("RILLET_DEBUG"):
            raise
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `rillet consume ... | head`); not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as exc:
        say(f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
