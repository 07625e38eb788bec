"""The producer's sender side: the sender thread (batches whose linger expired,
batches the fast path could not send, retries) and the answers the SPU links hand
back (resolve, retry, rebuild under a new producer id).

``_Sender`` is a part of ``_ProducerCore`` (client/_producer.py); the module
docstring there describes delivery, retries and idempotence.
"""

from __future__ import annotations

import logging
import math
import os
import time
from functools import partial

from rillet.ipc import messages as m
from rillet.ipc.errors import (
    BrokenConnection, Closed, CompressionError, InternalError, OutOfOrderSequence, ProtocolError, RilletError,
    error_from_code,
)
from rillet.ipc.record_runs import build_keyless_batch, wire_records
from rillet.ipc.records import IDEMPOTENT_WINDOW, SEQUENCE_MODULUS, build_batch

from ._accumulator import _Batch, _urge_on
from ._enums import Compression
from ._spu_link import SpuLink

log = logging.getLogger("rillet.producer")

_DEADLINE_MARGIN_S = 1.0        # request deadline = timeout_ms + this (queueing and scheduling slack)
# Idempotence: unanswered batches per partition at most (a flush may seal one more), fewer than
# the IDEMPOTENT_WINDOW batches an SPU remembers per producer, so a retry is always recognised.
IDEMPOTENT_MAX_QUEUE = IDEMPOTENT_WINDOW - 8
_OUT_OF_ORDER_PAUSE_S = 0.01    # a batch refused for a hole waits this long for the batch before it


def _new_producer_id() -> int:
    """63 random bits (the header field is a signed int64; >= 0 means idempotent). Random, not
    assigned by the SC: no round trip, and unique across processes and cluster restarts (a
    million producers share an id with probability ~5e-8)."""
    return int.from_bytes(os.urandom(8), "little") >> 1



def request_timeout_s(timeout_ms: int) -> float:
    """A produce request's deadline on its link: the SPU's own wait plus a margin."""
    return timeout_ms / 1000 + _DEADLINE_MARGIN_S


class _Sender:
    """The sender-thread and answer methods of _ProducerCore."""

    def send_loop(self) -> None:
        while True:
            with self.lock:
                batches = self._collect()
            if batches is None:
                return
            for batch in batches:
                if self.paused_until[batch.partition] > time.monotonic():
                    self._hold(batch)        # an earlier batch of its partition failed meanwhile
                else:
                    self._dispatch(batch)
            with self.lock:              # handed on (or back in a queue, counted again)
                for batch in batches:
                    self.unsent[batch.partition] -= 1

    def _collect(self) -> list[_Batch] | None:
        """Wait (lock held) for batches to send; None once the producer is closed."""
        while not self.closed:
            now = time.monotonic()
            wake_at = None
            for batch in list(self.open.values()):
                if batch.deadline > now:
                    wake_at = batch.deadline if wake_at is None else min(wake_at, batch.deadline)
                elif self.queued[batch.partition] < self.queue_limit:
                    self._seal(batch)
                # else: linger expired but the queue is full; an answer will notify us
            out: list[_Batch] = []
            for p in list(self.ready_parts):
                if self.paused_until[p] > now:
                    wake_at = self.paused_until[p] if wake_at is None else min(wake_at, self.paused_until[p])
                    continue
                out.extend(self.ready[p])
                self.ready[p].clear()
                self.ready_parts.discard(p)
            if out:
                return out
            self.sender_wake_at = math.inf if wake_at is None else wake_at
            self.work.wait(None if wake_at is None else wake_at - now)
            self.sender_wake_at = 0.0        # awake: it looks at every open batch before sleeping again
        return None

    def _dispatch(self, batch: _Batch) -> None:
        try:
            if batch.payload is None:
                if self.idempotent:
                    with self.lock:
                        self._build(batch, sequence_only=True)
                self._build(batch)
                batch.first_sent = batch.first_sent or time.monotonic()
            row = self.meta.leader(self.topic, batch.partition, refresh=batch.attempt > 0)
            make = partial(self._request, batch)
            link = self.links.get(row.leader)
            if link is not None:
                _urge_on(batch, link)
            if link is None or not link.submit(batch, make):
                link = self._new_link(row.leader)
                _urge_on(batch, link)
                if not link.submit(batch, make):
                    raise BrokenConnection(f"cannot reach SPU {row.leader}: its connection failed at once")
        except RilletError as exc:
            self._failed(batch, exc)
        except Exception as exc:      # a bug must fail the batch, not kill the sender thread
            log.exception("sending a batch to %s failed", batch.result.where)
            self._finish(batch, error=InternalError(f"produce to {batch.result.where} failed: {exc!r}"))

    def _build(self, batch: _Batch, sequence_only: bool = False) -> None:
        """Fix the batch's producer id and sequence (lock held, unless done already) and
        build its bytes; a retry sends the same bytes."""
        if self.idempotent and batch.sequence < 0:
            p = batch.partition
            batch.producer_id, batch.sequence = self.producer_ids[p], self.next_sequence[p]
            self.next_sequence[p] = (batch.sequence + len(batch.records)) % SEQUENCE_MODULUS
            batch.built = next(self._built_no)
            self.built[p].add(batch)
        if not sequence_only:
            epoch = 0 if self.idempotent else -1
            payload = None
            if batch.plain:              # keyless values only: joined, no tuple per record
                payload = build_keyless_batch(batch.records, batch.marks, batch.first_ts, batch.last_ts, self.codec,
                                              producer_id=batch.producer_id, producer_epoch=epoch,
                                              first_sequence=batch.sequence, length=batch.lengths)
            if payload is None:
                records = wire_records(batch.records, batch.marks) if batch.loose else batch.records
                payload = build_batch(records, batch.first_ts, batch.size, self.codec,
                                      producer_id=batch.producer_id, producer_epoch=epoch,
                                      first_sequence=batch.sequence, max_timestamp=batch.last_ts)
            batch.payload = payload

    def _request(self, batch: _Batch, cid: int) -> m.ProduceRequest:
        return m.ProduceRequest(cid, self.topic, batch.partition, self.isolation, self.timeout_ms,
                                memoryview(batch.payload))

    def _new_link(self, spu_id: int) -> SpuLink:
        link = SpuLink(spu_id, self.meta.spu_socket(spu_id), request_timeout_s=request_timeout_s(self.config.timeout_ms),
                       timeout_note=f"timeout_ms={self.config.timeout_ms} plus a {_DEADLINE_MARGIN_S:g} s margin",
                       on_answer=self._on_answer, on_error=self._failed,
                       ring_capacity=self.ring_capacity, ring_min_bytes=self.ring_min_bytes)
        with self.lock:
            if self.closed:
                link.close()
                raise Closed(f"producer for topic {self.topic!r} is closed")
            old = self.links.get(spu_id)
            self.links[spu_id] = link
        if old is not None:
            old.close()
        return link

    # --- answers (link threads) -------------------------------------------------------------
    def _on_answer(self, batch: _Batch, reply: m.Message) -> None:
        if isinstance(reply, m.ProduceResponse):
            self._finish(batch, base_offset=reply.base_offset)
        elif isinstance(reply, m.ErrorResponse):
            self._failed(batch, error_from_code(reply.code, reply.message))
        else:
            self._failed(batch, ProtocolError(f"unexpected {type(reply).__name__} answering a produce request"))

    def _failed(self, batch: _Batch, exc: RilletError) -> None:
        """Retry a retriable failure under the policy (at-least-once), else end the batch."""
        self.routes[batch.partition] = None      # the fast path reads the table again
        if isinstance(exc, OutOfOrderSequence) and self.idempotent:
            with self.lock:
                if not self.closed:
                    self._out_of_order(batch)
                    return
        if self.at_least_once and exc.retriable and not self.closed:
            elapsed_ms = (time.monotonic() - batch.first_sent) * 1000
            delay_ms = self.policy.next_delay_ms(batch.attempt, elapsed_ms)
            if delay_ms is not None:
                with self.lock:
                    if not self.closed:
                        self._requeue(batch, time.monotonic() + delay_ms / 1000)
                        return
        self._finish(batch, error=self._describe(batch, exc))

    def _requeue(self, batch: _Batch, due: float) -> None:
        """Put a failed batch back in seal order in front of later ones; pause the partition (lock held)."""
        batch.attempt += 1
        self.stats["retries"] += 1
        self.paused_until[batch.partition] = max(self.paused_until[batch.partition], due)
        self._enqueue(batch)

    def _out_of_order(self, batch: _Batch) -> None:
        """The leader refused ``batch`` for a hole before it, so it is not stored (lock held).
        While a batch before it in its sequence is unanswered, send it again after that one.
        Otherwise the hole is for good: rebuild it in a new sequence (a new producer id for
        the partition, from 0, unless an earlier refused batch started one already)."""
        p = batch.partition
        if not any(b.producer_id == batch.producer_id and b.built < batch.built for b in self.built[p]):
            if batch.producer_id == self.producer_ids[p]:
                self.producer_ids[p], self.next_sequence[p] = _new_producer_id(), 0
                # Expected after a leader failover at ReadUncommitted (the new leader never got
                # the batches the old one acknowledged alone), so say what it means, not just what.
                log.warning("%s: the leader holds no batch before sequence %d of producer %d (an earlier "
                            "batch failed for good, or was acknowledged by a leader that then failed before "
                            "replicating it: ReadUncommitted acknowledgements do not survive a failover, "
                            "ReadCommitted ones do); resending from it as producer %d", batch.result.where,
                            batch.sequence, batch.producer_id, self.producer_ids[p])
            self.built[p].discard(batch)
            batch.payload, batch.sequence = None, -1
        self.stats["retries"] += 1
        self.paused_until[p] = max(self.paused_until[p], time.monotonic() + _OUT_OF_ORDER_PAUSE_S)
        self._enqueue(batch)

    def _hold(self, batch: _Batch) -> None:
        """Send ``batch`` after the retry its partition waits for (not an attempt of its own)."""
        with self.lock:
            if not self.closed:
                self._enqueue(batch)
                return
        self._finish(batch, error=Closed(f"producer for {batch.result.where} closed before the batch was sent"))

    def _enqueue(self, batch: _Batch) -> None:
        p = batch.partition
        queue = self.ready[p]
        at = next((i for i, b in enumerate(queue) if b.result.seq > batch.result.seq), len(queue))
        queue.insert(at, batch)
        self.unsent[p] += 1
        self.ready_parts.add(p)
        self.work.notify()

    def _describe(self, batch: _Batch, exc: RilletError) -> RilletError:
        msg = f"produce to {batch.result.where} failed"
        if batch.attempt:
            msg += f" after {batch.attempt} retries"
        msg += f": {exc}"
        if isinstance(exc, CompressionError):
            msg += f" (this producer compresses with {Compression(self.codec).name.rstrip('_').lower()})"
        error = type(exc)(msg)
        error.__cause__ = exc
        return error

    def _finish(self, batch: _Batch, base_offset: int = -1, error: RilletError | None = None) -> None:
        """End a batch exactly once: free its queue slot and resolve its outputs."""
        result = batch.result
        with self.lock:
            if batch.finished:
                return
            batch.finished = True
            p = batch.partition
            was_full = self.queued[p] >= self.queue_limit
            self.queued[p] -= 1
            self.built[p].discard(batch)
            self.unresolved.discard(result)
            if error is None:
                self.stats["records_sent"] += result.records
                self.stats["batches_sent"] += 1
            else:
                self.stats["records_failed"] += result.records
                self.first_error = self.first_error or error
                result.error = error             # set before flush may read it
                self.unreported.append(result)
            if was_full:
                self.room.notify_all()
                self.work.notify()
        batch.records = batch.payload = None
        result.resolve(base_offset, error)

