"""`rillet consumer list | delete`: the offsets named consumers have stored.

``list`` shows, per consumer, topic and partition, the last offset the consumer has
seen, its lag (records below the high watermark it has not seen: ipc/lag.py) and how
long ago it was stored; ``delete NAME [--topic T] [--partition P]``
removes them, printing one line per deleted offset as Fluvio does.
"""

from __future__ import annotations

import argparse
import time

from rillet.ipc.errors import InvalidArgument
from rillet.ipc.names import validate_name
from rillet.tools.args import EXIT_OK, Parser, UsageError, name, non_negative, say
from rillet.tools.output import FORMATS, render

COLUMNS = [("CONSUMER", "consumer"), ("TOPIC", "topic"), ("PARTITION", "partition"), ("OFFSET", "offset"),
           ("LAG", "lag_text"), ("LAST SEEN", "last_seen_text")]


def consumer_name(text: str) -> str:
    try:
        return validate_name(text, "consumer")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def human_age(seconds: int) -> str:
    """``4m 14s``, ``2h 0m 5s``, ``3d 1h 0m 0s``, ``0s`` (Fluvio's LAST SEEN style, to the second)."""
    seconds = max(0, int(seconds))
    parts, started = [], False
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        value, seconds = divmod(seconds, length)
        if value or started:
            parts.append(f"{value}{unit}")
            started = True
    parts.append(f"{seconds}s")
    return " ".join(parts)


def cmd_consumer_list(args) -> int:
    from rillet import Fluvio
    with Fluvio.connect(args.cluster) as fluvio:
        offsets = fluvio.consumer_offsets()
    now_ms = int(time.time() * 1000)
    rows = [dict(consumer=o.consumer_id, topic=o.topic, partition=o.partition, offset=o.offset, lag=o.lag,
                 last_seen=max(0, now_ms - o.modified_ms) // 1000, modified_ms=o.modified_ms) for o in offsets]
    if args.output != "table":
        print(render(rows, [], args.output))
        return EXIT_OK
    if not rows:
        say("no consumer offsets stored")
        return EXIT_OK
    for row in rows:
        row["last_seen_text"] = human_age(row["last_seen"])
        row["lag_text"] = "-" if row["lag"] is None else row["lag"]
    print(render(rows, COLUMNS, "table"))
    return EXIT_OK


def cmd_consumer_delete(args) -> int:
    from rillet import Fluvio
    if args.partition is not None and args.topic is None:
        raise UsageError("rillet consumer delete: --partition needs --topic")
    with Fluvio.connect(args.cluster) as fluvio:
        deleted = fluvio.delete_consumer_offset(args.name, args.topic, args.partition, missing_topic_ok=False)
    for o in deleted:
        print(f'consumer "{o.consumer_id}" on topic "{o.topic}" and partition "{o.partition}" deleted')
    return EXIT_OK


def register(sub) -> None:
    consumer = sub.add_parser("consumer", help="stored offsets of named consumers")
    csub = consumer.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    csub.required = True
    lst = csub.add_parser("list", help="list stored consumer offsets")
    lst.add_argument("-O", "--output", choices=FORMATS, default="table")
    lst.set_defaults(func=cmd_consumer_list)
    delete = csub.add_parser("delete", help="delete a consumer's stored offsets")
    delete.add_argument("name", type=consumer_name)
    delete.add_argument("-t", "--topic", type=name, default=None, help="only this topic")
    delete.add_argument("-p", "--partition", type=non_negative, default=None, help="only this partition (needs --topic)")
    delete.set_defaults(func=cmd_consumer_delete)
