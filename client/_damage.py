"""Which offsets a damaged batch took with it: the consumer's typed error (RecordsLost).

A batch whose bytes fail their checks (a flipped bit in a sealed segment that no whole copy
can replace) costs a reader the records it held and nothing else: the stream delivers every
record before it, then raises RecordsLost naming topic, partition and the offsets, and only
a reader that asked to (``skip_damaged``) goes on after them.

A reader that meets a bad batch before the leader's scrub did first asks the leader
(``ReportDamage``, see :func:`leader_verdict`): the leader checks the batch at once, and where
another in-sync copy is whole it hands leadership over and the reader reads the records there
(a retriable NotLeader while that happens); RecordsLost only where no whole copy exists.
"""

from __future__ import annotations

import logging

from rillet.ipc import messages as m
from rillet.ipc.errors import CompressionError, CorruptBatch, RecordsLost
from rillet.ipc.record_decoding import decode_batch
from rillet.ipc.records import iter_batches

_log = logging.getLogger("rillet")


def lost_range(data, start: int, topic: str, partition: int, cause: Exception) -> RecordsLost:
    """RecordsLost for the first batch of ``data`` (fetched from offset ``start``) that does not
    decode. Its offsets come from its header when they continue the batches before it (the
    base offset and length are outside the CRC, and the walk to it checked them); otherwise
    only the one offset where reading stopped is named."""
    expected = None
    for pos, header in iter_batches(data):
        try:
            decode_batch(data, pos)
        except (CorruptBatch, CompressionError) as exc:
            first, last = header.base_offset, header.base_offset + header.last_offset_delta
            plausible = (first == expected) if expected is not None else (first <= start <= last)
            if not plausible or last < first:
                first = last = expected if expected is not None else start
            return RecordsLost.of(topic, partition, first, last, str(exc))
        expected = header.next_offset
    return RecordsLost.of(topic, partition, start, start, str(cause))


def log_skip(lost: RecordsLost) -> None:
    """What a stream with ``skip_damaged`` and no ``on_skip`` does: say it, never silently."""
    _log.warning("skipped damaged records: %s", lost)


def leader_verdict(with_failover, topic: str, partition: int, suspect: RecordsLost,
                   block: bool) -> RecordsLost | bool | None:
    """Ask the partition's leader about the batch at ``suspect.first_offset``, through the
    stream's ``with_failover`` (so NotLeader, while leadership moves to a whole copy, is retried
    on the stream's schedule). RecordsLost when no whole copy has it (the leader's range); True
    when the leader now holding the partition has it whole (read again); None when the next try
    is not due (a non-blocking step)."""
    def ask(conn):
        return conn.call(m.ReportDamage(conn.next_cid(), topic, partition, suspect.first_offset))
    try:
        answer = with_failover(ask, block)
    except RecordsLost as lost:
        return lost
    return None if answer is None else True
