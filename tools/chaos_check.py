"""The CHAOS checker: what a run's history says about the cluster's guarantees (pure, no I/O).

In the style of Jepsen's checkers: the chaos driver (tools/chaos.py) records what clients were
told and what the replicas hold; this module only reads those records and counts violations.
Every value a chaos producer sends is unique and names its producer and a per-producer sequence
(``encode_value``), so a value found in a log can be traced back to the send that made it.

The history, per partition:

    acked      [(value, offset)]           every acknowledgement a producer received
    log        [(offset, value)]           the final committed log, read after the cluster healed
    replicas   {spu: [(offset, value)]}    each replica's records, read from its segment files
    consumed   [[(offset, value)], ...]    what each COMMITTED consumer handed out, in order

Counts (every one must be 0 for a clean run):

    lost          an acknowledged value is not at its acknowledged offset in the final log
    duplicates    a value stored at more than one offset
    reordered     a producer's values stored out of its send order (per partition)
    divergent     an offset below the final log's end holding different values on two replicas
    offset_gaps   the final log's offsets are not contiguous
    skips         a consumer jumped over an offset
    repeats       a consumer handed out an offset again (or went backwards)
    phantoms      a consumer handed out a value that the final log does not hold at that offset
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Value layout: magic, producer index, sequence; padded to the record size the driver uses.
VALUE = struct.Struct(">4sIQ")
VALUE_MAGIC = b"CHAO"
EXAMPLES = 5            # violations quoted per kind, so a report stays readable


def encode_value(producer: int, seq: int, size: int = VALUE.size) -> bytes:
    head = VALUE.pack(VALUE_MAGIC, producer, seq)
    return head + b"." * max(0, size - len(head))


def decode_value(value: bytes) -> tuple[int, int] | None:
    """(producer, seq) of a chaos value; None for a value no chaos producer wrote."""
    if len(value) < VALUE.size:
        return None
    magic, producer, seq = VALUE.unpack_from(value)
    return (producer, seq) if magic == VALUE_MAGIC else None


@dataclass
class PartitionHistory:
    acked: list[tuple[bytes, int]] = field(default_factory=list)
    log: list[tuple[int, bytes]] = field(default_factory=list)
    replicas: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    consumed: list[list[tuple[int, bytes]]] = field(default_factory=list)


KINDS = ("lost", "duplicates", "reordered", "divergent", "offset_gaps", "skips", "repeats", "phantoms")


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        quoted = self.examples.setdefault(kind, [])
        if len(quoted) < EXAMPLES:
            quoted.append(example)

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())


def check(history: dict[int, PartitionHistory]) -> Report:
    """Every violation in the history, counted by kind, with a few examples of each."""
    report = Report()
    for partition, h in sorted(history.items()):
        at = dict(h.log)
        _check_log(report, partition, h.log)
        _check_acked(report, partition, h.acked, at)
        _check_replicas(report, partition, h.replicas, len(h.log) and h.log[-1][0] + 1)
        for n, delivered in enumerate(h.consumed):
            _check_consumer(report, f"{partition} consumer {n}", delivered, at)
    return report


def _check_log(report: Report, partition: int, log: list[tuple[int, bytes]]) -> None:
    where: dict[bytes, int] = {}
    last_seq: dict[int, int] = {}
    previous = None
    for offset, value in log:
        if previous is not None and offset != previous + 1:
            report.add("offset_gaps", f"p{partition}: offset {offset} follows {previous}")
        previous = offset
        if value in where:
            report.add("duplicates", f"p{partition}: {_name(value)} at offsets {where[value]} and {offset}")
            continue
        where[value] = offset
        tag = decode_value(value)
        if tag is None:
            continue
        producer, seq = tag
        if seq < last_seq.get(producer, -1):
            report.add("reordered", f"p{partition}: producer {producer} seq {seq} at offset {offset} "
                                    f"after seq {last_seq[producer]}")
        last_seq[producer] = max(seq, last_seq.get(producer, -1))


def _check_acked(report: Report, partition: int, acked: list[tuple[bytes, int]], at: dict[int, bytes]) -> None:
    for value, offset in acked:
        if at.get(offset) != value:
            found = at.get(offset)
            report.add("lost", f"p{partition}: {_name(value)} acknowledged at offset {offset}, "
                               f"log holds {_name(found) if found is not None else 'nothing'} there")


def _check_replicas(report: Report, partition: int, replicas: dict[int, list[tuple[int, bytes]]], end: int) -> None:
    """Offsets below ``end`` (the committed log's end) must hold the same value on every replica."""
    seen: dict[int, tuple[int, bytes]] = {}
    for spu, records in sorted(replicas.items()):
        for offset, value in records:
            if offset >= end:
                continue
            first = seen.setdefault(offset, (spu, value))
            if first[1] != value:
                report.add("divergent", f"p{partition} offset {offset}: SPU {first[0]} holds {_name(first[1])}, "
                                        f"SPU {spu} holds {_name(value)}")


def _check_consumer(report: Report, who: str, delivered: list[tuple[int, bytes]], at: dict[int, bytes]) -> None:
    previous = None
    for offset, value in delivered:
        if previous is not None:
            if offset <= previous:
                report.add("repeats", f"p{who}: offset {offset} handed out after {previous}")
            elif offset != previous + 1:
                report.add("skips", f"p{who}: offsets {previous + 1}..{offset - 1} skipped")
        previous = offset if previous is None else max(previous, offset)
        if at.get(offset) != value:
            report.add("phantoms", f"p{who}: offset {offset} handed out as {_name(value)}, "
                                   f"the log holds {_name(at.get(offset))}")


def _name(value: bytes | None) -> str:
    if value is None:
        return "nothing"
    tag = decode_value(value)
    return f"(producer {tag[0]}, seq {tag[1]})" if tag else repr(value[:16])
