"""`rillet consume`: print records, one per line.

Every form goes through ``Fluvio.consumer_with_config``: one partition (``-p``, default
0) or all of them (``-A``); with ``-c NAME`` the position is kept under NAME with the
AUTO strategy (flushed every 2 s as Fluvio's CLI does, and on exit, Ctrl-C included),
so running the same command again prints only the records NAME has not seen.
"""

from __future__ import annotations

import base64
import json
import signal
import sys

from rillet.tools.args import EXIT_OK, UsageError, name, non_negative, say, size

from .consumer import consumer_name

CLI_OFFSET_FLUSH_MS = 2000     # Fluvio's CLI flush period for -c


def _format_record(record, args) -> str:
    if args.output == "json":
        def text(b):
            if b is None:
                return None
            try:
                return b.decode()
            except UnicodeDecodeError:
                return "base64:" + base64.b64encode(b).decode()
        return json.dumps(dict(offset=record.offset(), partition=record.partition(), key=text(record.key()),
                               value=text(record.value()), timestamp=record.timestamp()))
    value = record.value().decode(errors="replace")
    if args.key_value:
        key = record.key()
        return f"[{'null' if key is None else key.decode(errors='replace')}] {value}"
    return value


def _start(args):
    from rillet import Offset
    if args.offset is not None:
        return Offset.absolute(args.offset), f"offset {args.offset}"
    if args.tail is not None:
        return Offset.from_end(args.tail), f"{args.tail} records before the end of log"
    if args.beginning:
        return Offset.beginning(), "the beginning of log"
    return Offset.end(), "the end of log"


def start_message(topic: str, consumer: str | None, where: str, tail: int | None, stored: dict[int, int],
                  partitions: int) -> str:
    """The line on stderr saying where reading starts; a named consumer that resumes says
    after which offset (the last it saw), per partition when it reads several."""
    if not stored:
        return f"Consuming records from '{topic}' starting from {where}"
    seen = ", ".join(f"partition {p}: offset {o}" for p, o in sorted(stored.items()))
    if len(stored) == 1 and partitions == 1:
        seen = f"offset {next(iter(stored.values()))}"
    how = f"{tail} records before the record after" if tail else "after"
    rest = f"; other partitions from {where}" if len(stored) < partitions else ""
    return (f"Consuming records from '{topic}' as consumer '{consumer}', resuming {how} "
            f"the last record it saw ({seen}){rest}")


def _config(args, start):
    from rillet import ConsumerConfigExtBuilder, Isolation, OffsetManagementStrategy
    builder = (ConsumerConfigExtBuilder(args.topic).offset_start(start).max_bytes(args.max_bytes)
               .disable_continuous(args.disable_continuous))
    if args.isolation:
        builder.isolation(Isolation.parse(args.isolation))
    if args.skip_damaged:
        builder.skip_damaged(on_skip=lambda lost: say(f"warning: skipped damaged records: {lost}"))
    if not args.all_partitions:
        builder.partition(0 if args.partition is None else args.partition)
    _smartmodule(args, builder)
    if args.consumer:
        builder.offset_consumer(args.consumer).offset_strategy(OffsetManagementStrategy.AUTO)
        builder.offset_flush(CLI_OFFSET_FLUSH_MS)
    return builder.build()


def _smartmodule(args, builder) -> None:
    """--smartmodule NAME | --smartmodule-path FILE, with -e key=value and --aggregate-initial."""
    if args.smartmodule is None and args.smartmodule_path is None:
        if args.params or args.aggregate_initial is not None:
            raise UsageError("rillet consume: -e and --aggregate-initial need --smartmodule or --smartmodule-path")
        return
    params = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"rillet consume: -e takes key=value, got {item!r}")
        params[key] = value
    initial = None if args.aggregate_initial is None else args.aggregate_initial.encode()
    builder.smartmodule(name=args.smartmodule, path=args.smartmodule_path, params=params, aggregate=initial)


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)      # unwinds through `with`, so a named consumer flushes


def cmd_consume(args) -> int:
    from rillet import Fluvio
    start, where = _start(args)
    config = _config(args, start)
    if args.consumer:
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
    with Fluvio.connect(args.cluster) as fluvio:
        stream = fluvio._consumer_with_config(config, end_offset=args.end_offset)
        stored = {}
        if args.consumer and args.offset is None:       # -o ignores the stored position
            stream._open()
            stored = stream.stored_offsets
        say(start_message(args.topic, args.consumer, where, args.tail, stored, len(stream._partitions)))
        out = sys.stdout
        with stream:
            for record in stream:
                out.write(_format_record(record, args) + "\n")
                if not stream._ready:
                    out.flush()
        out.flush()
    return EXIT_OK


def register(sub) -> None:
    consume = sub.add_parser("consume", help="print records, one per line")
    consume.add_argument("topic", type=name)
    which = consume.add_mutually_exclusive_group()
    which.add_argument("-p", "--partition", type=non_negative, default=None, help="read partition N (default 0)")
    which.add_argument("-A", "--all-partitions", action="store_true", help="read every partition of the topic")
    where = consume.add_mutually_exclusive_group()
    where.add_argument("-B", "--beginning", action="store_true", help="start at the beginning of the log")
    where.add_argument("-o", "--offset", type=non_negative, default=None, help="start at this absolute offset")
    where.add_argument("-T", "--tail", type=non_negative, default=None, help="start N records before the end")
    consume.add_argument("-c", "--consumer", type=consumer_name, default=None,
                         help="keep the position under this consumer name (resumes after the last record it saw)")
    consume.add_argument("-d", "--disable-continuous", action="store_true", help="stop at the end of the log")
    consume.add_argument("--end-offset", type=non_negative, default=None, help="stop after this offset")
    consume.add_argument("-k", "--key-value", action="store_true", help="print [key] value")
    consume.add_argument("-b", "--max-bytes", type=size, default=1024 * 1024, help="bytes per fetch (default 1MiB)")
    consume.add_argument("--isolation", choices=["read_uncommitted", "read_committed"], default=None)
    consume.add_argument("--skip-damaged", action="store_true",
                         help="step past records lost to damage (each range said on stderr) instead of failing")
    consume.add_argument("-O", "--output", choices=["text", "json"], default="text",
                         help="text: the value; json: one object per record")
    sm = consume.add_mutually_exclusive_group()
    sm.add_argument("--smartmodule", default=None, metavar="NAME", help="apply this stored SmartModule")
    sm.add_argument("--smartmodule-path", default=None, metavar="FILE", help="apply the SmartModule in this .wasm")
    consume.add_argument("-e", "--params", action="append", default=[], metavar="KEY=VALUE",
                         help="a parameter for the SmartModule (repeatable)")
    consume.add_argument("--aggregate-initial", default=None, metavar="VALUE",
                         help="an aggregate SmartModule's initial accumulator")
    consume.set_defaults(func=cmd_consume)
