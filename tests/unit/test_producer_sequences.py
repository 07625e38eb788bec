"""The idempotent producer's sender against an in-process SPU that keeps the real
producer-state table (broker/spu/producer_state.py): refused, unanswered and failed
batches, with many in flight, end with every record stored once and in send order.

The fake SPU of test_producer_paths.py, extended: before storing a batch it asks the
table, as a leader does, and answers a duplicate with the original offset or a gap with
OutOfOrderSequence. It can refuse a request (NotLeader, nothing stored), store one and
never answer it, or fail one for good (a non-retriable error, nothing stored).
"""

from __future__ import annotations

import os
import tempfile

import pytest

import rillet._sender
from rillet.broker.spu.producer_state import ProducerStateTable
from rillet.ipc import messages as m
from rillet.ipc.errors import MessageTooLarge, NotLeader, OutOfOrderSequence, RilletError
from rillet.ipc.record_decoding import decode_batch
from rillet.ipc.framing import encode_message

from .test_producer_paths import FakeSpu, producer


class SequencedSpu(FakeSpu):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.table = ProducerStateTable("t", 0)
        self.drop: set[int] = set()          # request numbers stored but never answered
        self.fail: set[int] = set()          # request numbers failed for good (nothing stored)
        self.out_of_order = 0
        self.duplicates = 0
        self.producer_ids: list[int] = []

    def _answer(self, msg):
        if isinstance(msg, m.Hello):
            return super()._answer(msg)
        with self._lock:
            self.requests += 1
            n = self.requests
            if n in self.refuse:
                return m.ErrorResponse(msg.cid, NotLeader.code, "refused by the test")
            if n in self.fail:
                return m.ErrorResponse(msg.cid, MessageTooLarge.code, "failed for good by the test")
            header, records = decode_batch(bytes(msg.batches))
            if header.producer_id not in self.producer_ids:
                self.producer_ids.append(header.producer_id)
            try:
                duplicate = self.table.check(header.producer_id, header.first_sequence, header.record_count)
            except OutOfOrderSequence as exc:
                self.out_of_order += 1
                return m.ErrorResponse(msg.cid, exc.code, str(exc))
            log = self.batches[msg.partition]
            if duplicate is not None:
                self.duplicates += 1
                base = duplicate.base_offset
            else:
                base = sum(len(b) for b in log)
                log.append([(r.key, r.value) for r in records])
                self.table.apply(header.producer_id, header.first_sequence, header.record_count, base)
            leo = sum(len(b) for b in log)
            if n in self.drop:
                return _DROPPED              # stored; the answer is lost
            return m.ProduceResponse(msg.cid, base, leo, leo)

    def _reply(self, conn, replies) -> None:
        # As the base class, which stops at None (end of connection), but skipping dropped answers.
        encoder = m.new_encoder()
        while (reply := replies.get()) is not None:
            if reply is _DROPPED:
                continue
            self.answering.wait()
            try:
                conn.sendall(encode_message(encoder, reply))
            except OSError:
                return


_DROPPED = object()


@pytest.fixture
def spu():
    directory = tempfile.mkdtemp(prefix="rillet-unit-")
    fake = SequencedSpu(os.path.join(directory, "spu.sock"))
    yield fake
    fake.close()
    os.unlink(fake.path)
    os.rmdir(directory)


def send(prod, n: int):
    outputs = [prod.send(None, str(i)) for i in range(n)]
    try:
        prod.flush(timeout=20)
    except RilletError:
        pass
    results = []
    for out in outputs:
        try:
            results.append(out.wait(timeout=0).offset())
        except RilletError as exc:
            results.append(exc)
    return results


def stored(spu) -> list[int]:
    return [int(v) for _k, v in spu.records(0)]


def test_batches_behind_a_refused_one_are_sent_again_after_it_in_order(spu):
    spu.refuse = {5}                         # NotLeader: retried after a pause; the batches behind it hit a gap
    spu.answering.clear()                    # hold the answers so that many batches are in flight
    with producer(spu, linger=0, timeout=5_000) as prod:
        outputs = [prod.send(None, str(i)) for i in range(60)]
        spu.answering.set()
        prod.flush(timeout=20)
        assert [o.wait().offset() for o in outputs] == list(range(60))
    assert stored(spu) == list(range(60))    # once each, in send order
    assert spu.out_of_order >= 1 and len(spu.producer_ids) == 1


def test_a_batch_stored_whose_answer_was_lost_is_not_stored_again(spu, monkeypatch):
    monkeypatch.setattr(rillet._sender, "_DEADLINE_MARGIN_S", 0.2)   # the link gives up 0.3 s after a send
    spu.drop = {3}                           # stored, unanswered: the link times out, every pending batch is retried
    with producer(spu, linger=0, timeout=100) as prod:
        results = send(prod, 40)
        assert prod.statistics().retries >= 1
    assert results == list(range(40))
    assert stored(spu) == list(range(40)) and spu.duplicates >= 1


def test_a_batch_that_failed_for_good_restarts_the_sequence_and_nothing_else_is_lost(spu):
    spu.fail = {4}                           # the 4th batch: refused for good, not stored
    spu.answering.clear()
    with producer(spu, linger=0, timeout=5_000) as prod:
        outputs = [prod.send(None, str(i)) for i in range(40)]
        spu.answering.set()
        with pytest.raises(MessageTooLarge, match="1 record failed since the last flush"):
            prod.flush(timeout=20)
        failed = [i for i, o in enumerate(outputs) if _error(o)]
    assert failed == [3]
    assert sorted(stored(spu)) == [i for i in range(40) if i != 3]          # each once
    assert len(spu.producer_ids) == 2                                       # the sequence restarted under a new id


def _error(out) -> bool:
    try:
        out.wait(timeout=0)
    except RilletError:
        return True
    return False


def test_a_hole_the_leader_made_by_losing_acknowledged_batches_restarts_the_sequence(spu):
    """ReadUncommitted acks can be lost in a failover (the new leader never had them): the next
    batch then finds a hole no retry will fill, and goes in a new sequence instead of failing."""
    with producer(spu, linger=0) as prod:
        assert [prod.send(None, str(i)).wait(timeout=5).offset() for i in range(5)] == list(range(5))
        with spu._lock:                                  # the leader lost its last two batches
            del spu.batches[0][3:]
            spu.table.truncate_from(3)
        assert [prod.send(None, str(i)).wait(timeout=5).offset() for i in range(5, 8)] == [3, 4, 5]
    assert stored(spu) == [0, 1, 2, 5, 6, 7] and len(spu.producer_ids) == 2
