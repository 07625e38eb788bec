"""`rillet consume`: print records, one per line."""

from __future__ import annotations

import base64
import json
import sys

from rillet.tools.args import EXIT_OK, name, non_negative, say, size


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


def cmd_consume(args) -> int:
    from rillet import Fluvio, Isolation, Offset
    from rillet._consumer import PartitionStream
    if args.offset is not None:
        start, where = Offset.absolute(args.offset), f"offset {args.offset}"
    elif args.tail is not None:
        start, where = Offset.from_end(args.tail), f"{args.tail} records before the end of log"
    elif args.beginning:
        start, where = Offset.beginning(), "the beginning of log"
    else:
        start, where = Offset.end(), "the end of log"
    isolation = Isolation.parse(args.isolation) if args.isolation else Isolation.ReadUncommitted
    with Fluvio.connect(args.cluster) as fluvio:
        fluvio.partition_consumer(args.topic, args.partition)   # checks topic and partition
        say(f"Consuming records from '{args.topic}' starting from {where}")
        stream = PartitionStream(fluvio._meta, args.topic, args.partition, start, max_bytes=args.max_bytes,
                                 isolation=isolation, continuous=not args.disable_continuous,
                                 end_offset=args.end_offset)
        out = sys.stdout
        with stream:
            for record in stream:
                out.write(_format_record(record, args) + "\n")
                if not stream._buffer:
                    out.flush()
        out.flush()
    return EXIT_OK


def register(sub) -> None:
    consume = sub.add_parser("consume", help="print records, one per line")
    consume.add_argument("topic", type=name)
    consume.add_argument("-p", "--partition", type=non_negative, default=0)
    where = consume.add_mutually_exclusive_group()
    where.add_argument("-B", "--beginning", action="store_true", help="start at the beginning of the log")
    where.add_argument("-o", "--offset", type=non_negative, default=None, help="start at this absolute offset")
    where.add_argument("-T", "--tail", type=non_negative, default=None, help="start N records before the end")
    consume.add_argument("-d", "--disable-continuous", action="store_true", help="stop at the end of the log")
    consume.add_argument("--end-offset", type=non_negative, default=None, help="stop after this offset")
    consume.add_argument("-k", "--key-value", action="store_true", help="print [key] value")
    consume.add_argument("-b", "--max-bytes", type=size, default=1024 * 1024, help="bytes per fetch (default 1MiB)")
    consume.add_argument("--isolation", choices=["read_uncommitted", "read_committed"], default=None)
    consume.add_argument("-O", "--output", choices=["text", "json"], default="text",
                         help="text: the value; json: one object per record")
    consume.set_defaults(func=cmd_consume)
