"""`rillet produce`: one record per input line.

Exit 0 when every record was acknowledged. A record that cannot be sent (too large,
refused by the SPU, retries used up) does not stop the run: the rest are sent, and
the command ends with one line on stderr, "N of M records failed: <first cause>",
and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from rillet.tools.args import (
    EXIT_FAILED, EXIT_OK, UsageError, codec, duration_ms, name, non_negative, positive, say, size,
)

PROGRESS_EVERY = 1023          # look at the clock every 1,024 lines (a mask): nothing on the hot path
_RETRY_FLAGS = ("retry_max", "retry_initial_delay", "retry_max_delay", "retry_timeout", "retry_strategy")


def build_config(args):
    """The producer config the flags ask for (unset flags keep the library's defaults)."""
    from rillet.ipc.errors import InvalidArgument
    try:
        return _build_config(args)
    except InvalidArgument as exc:
        raise UsageError(f"rillet produce: {exc}") from None


def _build_config(args):
    from rillet import TopicProducerConfigBuilder
    builder = TopicProducerConfigBuilder()
    for flag, setter in (("linger", builder.linger), ("batch_size", builder.batch_size),
                         ("max_request_size", builder.max_request_size), ("batch_queue_size", builder.batch_queue_size),
                         ("timeout", builder.timeout), ("compression", builder.compression),
                         ("delivery_semantic", builder.delivery_semantic), ("isolation", builder.isolation),
                         ("partition", builder.set_specific_partitioner)):
        if getattr(args, flag) is not None:
            setter(getattr(args, flag))
    retry = {flag: getattr(args, flag) for flag in _RETRY_FLAGS if getattr(args, flag) is not None}
    if retry:
        if args.delivery_semantic == "at-most-once":
            raise UsageError("rillet produce: --retry-* flags need --delivery-semantic at-least-once "
                             "(at-most-once never retries)")
        builder.retry_policy(max_retries=retry.get("retry_max"), initial_delay_ms=retry.get("retry_initial_delay"),
                             max_delay_ms=retry.get("retry_max_delay"), timeout_ms=retry.get("retry_timeout"),
                             strategy=retry.get("retry_strategy"))
    return builder.build()


def cmd_produce(args) -> int:
    from rillet import Fluvio
    from rillet.ipc.errors import MessageTooLarge, RilletError
    config = build_config(args)
    sep = args.key_separator.encode() if args.key_separator else None
    fixed_key = args.key.encode() if args.key is not None else None
    bad_lines = refused = 0
    first_refusal: RilletError | None = None
    source = open(args.file, "rb") if args.file else sys.stdin.buffer
    progress = _progress(args, source)
    try:
        with Fluvio.connect(args.cluster) as fluvio:
            producer = fluvio.topic_producer_with_config(args.topic, config)
            try:
                for number, line in enumerate(source, 1):
                    if progress is not None and not number & PROGRESS_EVERY:
                        progress.update(number, source.tell())
                    line = line.rstrip(b"\r\n") if not args.raw else line
                    key = fixed_key
                    if sep is not None:
                        key, found, value = line.partition(sep)
                        if not found:
                            if progress is not None:
                                progress.clear()
                            say(f"warning: line {number}: no key separator {args.key_separator!r}; line skipped")
                            bad_lines += 1
                            continue
                        line = value
                    try:
                        producer.send(key, line)
                    except MessageTooLarge as exc:
                        refused += 1
                        first_refusal = first_refusal or exc
                producer.flush()
            except RilletError:
                pass             # counted from the statistics below
            finally:
                if progress is not None:        # its line ends before any error line
                    progress.finish(producer.statistics().records_sent, source.tell())
                try:
                    producer.close()
                except RilletError:
                    pass
            stats = producer.statistics()
    finally:
        if args.file:
            source.close()
    failed = stats.records_failed + stats.records_pending + refused
    if failed:
        total = stats.records_sent + failed
        reason = stats.first_error or first_refusal
        say(f"error: {failed} of {total} records failed: {reason}")
        return EXIT_FAILED
    return EXIT_FAILED if bad_lines else EXIT_OK


def _progress(args, source):
    """A progress line for ``-f FILE`` on a terminal (stderr); None otherwise, so a pipe
    gets nothing and the loop pays for nothing."""
    from rillet.tools.progress import Progress
    if not args.file:
        return None
    progress = Progress(f"produce {args.topic}", total_bytes=os.fstat(source.fileno()).st_size)
    return progress if progress.enabled else None


def _strategy(text: str) -> str:
    from rillet import RetryStrategy
    from rillet.ipc.errors import InvalidArgument
    try:
        return RetryStrategy.parse(text).value
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub) -> None:
    produce = sub.add_parser("produce", help="send stdin (or a file), one record per line")
    arg = produce.add_argument
    arg("topic", type=name)
    arg("--key-separator", metavar="SEP", help="split each line at the first SEP into key and value")
    arg("--key", metavar="K", help="the same key for every record")
    arg("-f", "--file", metavar="FILE", help="read records from FILE, one per line")
    arg("--raw", action="store_true", help="keep line endings in the values")
    arg("-p", "--partition", type=non_negative, metavar="N", help="send every record to partition N")
    arg = produce.add_argument_group("batching").add_argument
    arg("--compression", type=codec, metavar="CODEC", help="none, gzip, snappy, lz4 or zstd")
    arg("--linger", type=duration_ms, metavar="DUR", help="e.g. 100ms (a bare number is ms; default 100ms)")
    arg("--batch-size", type=size, metavar="BYTES", help="bytes per batch, e.g. 16KiB (the default)")
    arg("--max-request-size", type=size, metavar="BYTES", help="largest batch, so largest record (default 1MiB)")
    arg("--batch-queue-size", type=positive, metavar="N",
        help="unanswered batches per partition before sending waits (default 100; at most 120 with at-least-once)")
    arg = produce.add_argument_group("delivery").add_argument
    arg("--delivery-semantic", choices=["at-most-once", "at-least-once"],
        help="default at-least-once (idempotent: a retried batch is never stored twice)")
    arg("--isolation", choices=["read_uncommitted", "read_committed"],
        help="acknowledge when the leader stored it (default) or when it is committed")
    arg("--timeout", type=duration_ms, metavar="DUR",
        help="how long the SPU may wait for a ReadCommitted ack (default 1500ms); "
             "a request unanswered for this plus 1s fails with a timeout")
    arg("--retry-max", type=non_negative, metavar="N", help="retries per batch (default 4)")
    arg("--retry-initial-delay", type=duration_ms, metavar="DUR", help="first delay (default 20ms)")
    arg("--retry-max-delay", type=duration_ms, metavar="DUR", help="cap of each delay (default 200s)")
    arg("--retry-timeout", type=duration_ms, metavar="DUR",
        help="no retry starts later than this after the first attempt (default 300s)")
    arg("--retry-strategy", type=_strategy, metavar="fixed|fibonacci|exponential", help="default exponential")
    produce.set_defaults(func=cmd_produce)
