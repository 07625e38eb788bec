"""`rillet top` (also `rillet cluster status --watch`): the cluster, live, on a terminal.

On a terminal it redraws every ``--interval`` (default 1 s) with plain ANSI escapes (the
alternate screen, so the shell's scrollback is left as it was): SPUs and their liveness,
partitions with leader, epoch, in-sync set, HW/LEO, rate and the largest consumer lag,
named consumers with their lag, and the latest events (leader changes, SPUs going offline
and back) as they happen. Ctrl-C ends it (exit 0). When stdout is not a terminal, or with
``--once`` or ``-O json``, it prints one snapshot and exits 0 (1 with one line on
stderr when the SC does not answer): rates need two samples, so they are empty there. tools/view.py computes everything; this module draws.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time

from rillet.tools.args import EXIT_FAILED, EXIT_OK, duration_s, say
from rillet.tools.output import table

REFRESH_S = 1.0
MIN_INTERVAL_S = 0.1        # each refresh asks the SC three things: not in a busy loop
EVENTS_SHOWN = 8
PART_COLUMNS = [("TOPIC", "topic"), ("PARTITION", "partition"), ("LEADER", "leader"), ("EPOCH", "leader_epoch"),
                ("IN-SYNC", "in_sync"), ("STATUS", "status"), ("HW", "hw"), ("LEO", "leo"), ("RATE/S", "rate"),
                ("LAG", "lag")]
SPU_COLUMNS = [("SPU", "id"), ("STATUS", "status"), ("PID", "pid"), ("LEADERS", "leaders"), ("REPLICAS", "replicas")]
CONSUMER_COLUMNS = [("CONSUMER", "consumer"), ("TOPIC", "topic"), ("PARTITION", "partition"), ("OFFSET", "offset"),
                    ("LAG", "lag")]
_COLOURS = {"leader": "\x1b[33m", "isr": "\x1b[33m", "spu": "\x1b[36m", "status": "\x1b[35m", "topic": "\x1b[34m",
            "sc": "\x1b[31m"}
_RESET = "\x1b[0m"
_ESCAPE = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z])")


def clock(wall_ms: int) -> str:
    """``14:02:03.123`` in local time."""
    return time.strftime("%H:%M:%S", time.localtime(wall_ms / 1000)) + f".{wall_ms % 1000:03d}"


def render_text(cluster: str, frame, events=(), *, colour: bool = False) -> str:
    """One frame as text: a header line, the SPU, partition and consumer tables, recent events."""
    online = sum(1 for s in frame.spus if s["online"])
    parts_online = sum(1 for p in frame.partitions if p["status"] == "Online")
    if frame.error is not None:     # the rows below are the last the SC gave
        lines = [f"cluster {cluster!r} at {clock(frame.wall_ms)}: the SC cannot be asked: {frame.error}"]
    else:
        lines = [f"cluster {cluster!r} at {clock(frame.wall_ms)}: {online}/{len(frame.spus)} SPUs online, "
                 f"{parts_online}/{len(frame.partitions)} partitions online"]
    if frame.spus:
        lines += ["", table(frame.spus, SPU_COLUMNS), "",
                  table(frame.partitions, PART_COLUMNS) if frame.partitions else "  no topics"]
    if frame.consumers:
        lines += ["", table(frame.consumers, CONSUMER_COLUMNS)]
    if events:
        lines += ["", "  EVENTS"]
        for e in events:
            text = f"{_COLOURS.get(e.kind, '')}{e.text}{_RESET}" if colour else e.text
            lines.append(f"  {clock(e.wall_ms)}  {text}")
    return "\n".join(lines)


def fit(text: str, columns: int, rows: int) -> str:
    """Cut ``text`` to the terminal: ``rows - 1`` lines of ``columns`` visible characters
    (escape sequences take no room and are all kept, so a colour is always reset)."""
    return "\n".join(_cut(line, columns) for line in text.split("\n")[:max(1, rows - 1)])


def _cut(line: str, columns: int) -> str:
    out, used = [], 0
    for part in _ESCAPE.split(line):
        if part.startswith("\x1b"):
            out.append(part)
        else:
            out.append(part[:max(0, columns - used)])
            used += len(out[-1])
    return "".join(out)


def cmd_top(args) -> int:
    from rillet.ipc.names import ClusterPaths
    from rillet.tools.view import ClusterView
    from rillet.tools.view_sampler import Sampler
    paths = ClusterPaths.for_cluster(args.cluster)
    output = getattr(args, "output", "table")
    live = output == "table" and not args.once and sys.stdout.isatty()
    with Sampler(paths) as sampler:
        view = ClusterView()
        if not live:
            frame = view.update(sampler.snapshot())
            if frame.error is not None:
                say(f"error: the SC of cluster {paths.cluster!r} could not be asked: {frame.error}")
                return EXIT_FAILED
            if output == "table":
                print(render_text(paths.cluster, frame))
            else:
                print(json.dumps({"cluster": paths.cluster} | frame.to_json(), indent=2))
            return EXIT_OK
        _watch(paths.cluster, sampler, view, args.interval)
    return EXIT_OK


def _watch(cluster: str, sampler, view, interval_s: float) -> None:
    out = sys.stdout
    out.write("\x1b[?1049h\x1b[?25l")          # the alternate screen, no cursor
    try:
        next_at = time.monotonic()
        while True:
            frame = view.update(sampler.snapshot())
            size = shutil.get_terminal_size()
            text = render_text(cluster, frame, list(view.events)[-EVENTS_SHOWN:], colour=True)
            body = fit(text + "\n\n  (Ctrl-C to quit)", size.columns, size.lines)
            out.write("\x1b[H" + body.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
            out.flush()
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic())     # a slow sample does not cause a burst
    except KeyboardInterrupt:
        pass
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


def interval(text: str) -> float:
    value = duration_s(text)
    if value < MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S * 1000:.0f}ms, got {text}")
    return value


def add_arguments(parser, *, output: bool = True) -> None:
    parser.add_argument("--interval", type=interval, default=REFRESH_S, metavar="DUR",
                        help="time between refreshes on a terminal (default 1s)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit, even on a terminal")
    if output:
        parser.add_argument("-O", "--output", choices=("table", "json"), default="table",
                            help="json: one snapshot for scripts")


def register(sub) -> None:
    top = sub.add_parser("top", help="live view of SPUs, partitions, rates, lag and leader changes")
    add_arguments(top)
    top.set_defaults(func=cmd_top)

