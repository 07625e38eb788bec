"""SpuLink's lazy reading against the fake SPU of test_producer_paths (real socket, real
link thread): answers are left to the caller's ``reap`` while it reaps, read by the link
thread once urged or once the caller stopped reaping for ``lazy_read_s``."""

from __future__ import annotations

import threading
import time

from rillet._spu_link import SpuLink
from rillet.ipc import messages as m
from rillet.ipc.records import encode_batch

from .test_producer_paths import spu  # noqa: F401 (fixture)


class Answers:
    def __init__(self) -> None:
        self.threads: dict[object, str] = {}
        self.done = threading.Condition()

    def on_answer(self, token, reply) -> None:
        assert isinstance(reply, m.ProduceResponse)
        with self.done:
            self.threads[token] = threading.current_thread().name
            self.done.notify_all()

    def on_error(self, token, exc) -> None:
        raise AssertionError(f"request {token} failed: {exc}")

    def wait_for(self, token, timeout_s: float = 5.0) -> str | None:
        with self.done:
            self.done.wait_for(lambda: token in self.threads, timeout_s)
        return self.threads.get(token)


def produce(cid: int) -> m.ProduceRequest:
    return m.ProduceRequest(cid, "t", 0, 0, 1000, encode_batch([(None, b"v", 0)]))


def open_link(spu, answers: Answers, lazy_read_s: float) -> SpuLink:
    return SpuLink(7, spu.path, request_timeout_s=30.0, timeout_note="test", on_answer=answers.on_answer,
                   on_error=answers.on_error, lazy_read_s=lazy_read_s)


def test_the_caller_reaps_answers_the_link_thread_leaves_to_it(spu):
    answers = Answers()
    link = open_link(spu, answers, lazy_read_s=30.0)
    try:
        for token in ("a", "b", "c"):
            assert link.submit(token, produce)
            deadline = time.monotonic() + 5
            while token not in answers.threads and time.monotonic() < deadline:
                link.reap()              # what the producer's send does after writing
                time.sleep(0.001)
        assert answers.threads == {t: threading.current_thread().name for t in ("a", "b", "c")}
    finally:
        link.close()


def test_a_waiter_urges_the_link_thread_to_read_at_once(spu):
    answers = Answers()
    link = open_link(spu, answers, lazy_read_s=30.0)
    try:
        assert link.submit("a", produce)
        link.urge()                      # ProduceOutput.wait and flush do this
        started = time.monotonic()
        assert answers.wait_for("a") == "rillet-producer-spu-7"
        assert time.monotonic() - started < 5
    finally:
        link.close()


def test_unreaped_answers_are_read_by_the_link_thread_after_the_grace(spu):
    answers = Answers()
    link = open_link(spu, answers, lazy_read_s=0.05)
    try:
        assert link.submit("a", produce)
        started = time.monotonic()
        assert answers.wait_for("a") == "rillet-producer-spu-7"
        assert time.monotonic() - started >= 0.04     # it waited for a reap that never came
    finally:
        link.close()


# --- a waiter reads its answer itself (wait_answer) ----------------------------------------------

def connected(link: SpuLink) -> SpuLink:
    """Once the link thread connected (before, a waiter waits as before: urge)."""
    deadline = time.monotonic() + 5
    while link._wait_sock is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return link


def test_a_waiter_reads_its_answer_in_its_own_thread(spu):
    answers = Answers()
    link = connected(open_link(spu, answers, lazy_read_s=30.0))
    try:
        assert link.submit("a", produce)
        assert link.wait_answer(lambda: "a" in answers.threads, 5.0) is True
        assert answers.threads["a"] == threading.current_thread().name     # not the link thread
    finally:
        link.close()


def test_a_produce_output_wait_reads_the_answer_in_the_callers_thread(spu):
    from rillet._produce_output import _BatchResult
    result, answers = _BatchResult(0, "t/0"), Answers()

    def on_answer(token, reply):
        answers.on_answer(token, reply)
        token.resolve(reply.base_offset)

    link = SpuLink(7, spu.path, request_timeout_s=30.0, timeout_note="test", on_answer=on_answer,
                   on_error=answers.on_error, lazy_read_s=30.0)
    connected(link)
    try:
        result.urge, result.read_wait = link.urge, link.wait_answer    # as the producer sets them
        assert link.submit(result, produce)
        assert result.wait_done(5.0) and result.base_offset >= 0
        assert answers.threads[result] == threading.current_thread().name
    finally:
        link.close()


def test_a_waiter_times_out_and_a_closed_link_wakes_its_waiter(spu):
    failed = []
    link = SpuLink(7, spu.path, request_timeout_s=30.0, timeout_note="test", on_answer=lambda t, r: None,
                   on_error=lambda token, exc: failed.append(token), lazy_read_s=30.0)
    connected(link)
    spu.answering.clear()                # the SPU holds its answers
    try:
        assert link.submit("a", produce)
        started = time.monotonic()
        assert link.wait_answer(lambda: False, 0.05) is False
        assert 0.04 <= time.monotonic() - started < 2
        got = []
        waiter = threading.Thread(target=lambda: got.append(link.wait_answer(lambda: bool(failed), 10.0)))
        waiter.start()
        time.sleep(0.05)
        started = time.monotonic()
        link.close()                     # its shutdown wakes the poll: the request failed, so done
        waiter.join(5)
        assert not waiter.is_alive() and time.monotonic() - started < 1
        assert got in ([True], [None]) and failed == ["a"]
        assert link._wait_sock is None   # the waiters' descriptor is closed once they left
    finally:
        spu.answering.set()
        link.close()


def test_a_waiter_on_a_stalled_spu_sleeps_in_growing_slices(spu):
    link = connected(SpuLink(7, spu.path, request_timeout_s=30.0, timeout_note="test", on_answer=lambda t, r: None,
                             on_error=lambda token, exc: None, lazy_read_s=0.002))
    spu.answering.clear()                # the SPU holds its answers
    try:
        assert link.submit("a", produce)
        cpu = time.thread_time()
        assert link.wait_answer(lambda: False, 1.0) is False
        # ~60 wake-ups in the second (slices up to MAX_WAIT_SLICE_S), not one per half grace (500):
        # about 3 ms of this thread's CPU against 18 ms with fixed slices.
        assert time.thread_time() - cpu < 0.010
    finally:
        spu.answering.set()
        link.close()


def test_the_link_thread_sleeps_longer_while_the_caller_keeps_reaping(spu):
    # One request every ~200 us for ~0.4 s, reaped after each (the producer's linger-0 send).
    # A fixed 2 ms grace woke the link thread for nothing ~every 2 ms, and once more for each
    # send that found it idle (~300 turns of its loop here); the grace growing to
    # MAX_LAZY_READ_S, and the timer kept for one grace with nothing pending, leave a few.
    # (Each turn costs more than its own wake-up: the thread then waits for the GIL while the
    # caller keeps taking it back, ~100 futex wake-ups per turn with a busy caller.)
    answers = Answers()
    link = connected(open_link(spu, answers, lazy_read_s=0.002))
    try:
        assert link.submit("warm", produce) and answers.wait_for("warm")
        before = link.wakeups
        for i in range(2000):
            assert link.submit(i, produce)
            link.reap()
            time.sleep(0.0002)           # the GIL is free meanwhile, as in a paced producer
        turns = link.wakeups - before
        assert answers.wait_for(1999) is not None
        assert turns < 40, f"the link thread turned {turns} times in 2000 reaped requests"
    finally:
        link.close()


def test_answers_nobody_reaps_are_read_soon_after_a_long_reaping_run(spu):
    # The grace grew while the caller reaped; once it stops, the answers are still read by the
    # link thread within about two of the longest graces, not left for the request timeout.
    from rillet._spu_link import MAX_LAZY_READ_S
    answers = Answers()
    link = connected(open_link(spu, answers, lazy_read_s=0.002))
    try:
        for i in range(300):
            assert link.submit(i, produce)
            link.reap()
            time.sleep(0.0005)
        assert link.submit("last", produce)     # and no reap after it
        started = time.monotonic()
        assert answers.wait_for("last") == "rillet-producer-spu-7"
        assert time.monotonic() - started < 2 * MAX_LAZY_READ_S + 0.05
    finally:
        link.close()
