"""`rillet produce`: one record per input line."""

from __future__ import annotations

import sys

from rillet.tools.args import EXIT_FAILED, EXIT_OK, codec, duration_ms, name, non_negative, say, size


def cmd_produce(args) -> int:
    from rillet import Compression, DeliverySemantic, Fluvio, Isolation, TopicProducerConfigBuilder
    builder = TopicProducerConfigBuilder()
    if args.linger is not None:
        builder.linger(args.linger)
    if args.batch_size is not None:
        builder.batch_size(args.batch_size)
    if args.compression is not None:
        builder.compression(Compression.parse(args.compression))
    if args.delivery_semantic is not None:
        builder.delivery_semantic(DeliverySemantic.parse(args.delivery_semantic))
    if args.isolation is not None:
        builder.isolation(Isolation.parse(args.isolation))
    if args.partition is not None:
        builder.set_specific_partitioner(args.partition)
    source = open(args.file, "rb") if args.file else sys.stdin.buffer
    bad_lines = 0
    sep = args.key_separator.encode() if args.key_separator else None
    fixed_key = args.key.encode() if args.key is not None else None
    with Fluvio.connect(args.cluster) as fluvio:
        producer = fluvio.topic_producer_with_config(args.topic, builder.build())
        try:
            for number, line in enumerate(source, 1):
                line = line.rstrip(b"\r\n") if not args.raw else line
                key = fixed_key
                if sep is not None:
                    key, found, value = line.partition(sep)
                    if not found:
                        say(f"line {number}: no key separator {args.key_separator!r}; line skipped")
                        bad_lines += 1
                        continue
                    line = value
                producer.send(key, line)
            producer.flush()
        finally:
            producer.close()
            if args.file:
                source.close()
    return EXIT_FAILED if bad_lines else EXIT_OK


def register(sub) -> None:
    produce = sub.add_parser("produce", help="send stdin (or a file), one record per line")
    produce.add_argument("topic", type=name)
    produce.add_argument("--key-separator", default=None, help="split each line at the first SEP into key and value")
    produce.add_argument("--key", default=None, help="the same key for every record")
    produce.add_argument("-f", "--file", default=None, help="read records from FILE, one per line")
    produce.add_argument("--raw", action="store_true", help="keep line endings in the values")
    produce.add_argument("--compression", type=codec, default=None, help="none, gzip, snappy, lz4 or zstd")
    produce.add_argument("--linger", type=duration_ms, default=None, help="e.g. 100ms (a bare number is ms)")
    produce.add_argument("--batch-size", type=size, default=None, help="bytes per batch, e.g. 16KiB")
    produce.add_argument("--delivery-semantic", choices=["at-most-once", "at-least-once"], default=None)
    produce.add_argument("--isolation", choices=["read_uncommitted", "read_committed"], default=None)
    produce.add_argument("-p", "--partition", type=non_negative, default=None, help="send every record to partition N")
    produce.set_defaults(func=cmd_produce)
