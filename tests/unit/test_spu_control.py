"""The SPU's one decision function, control.decide(state, events, now) -> Decision, as tables;
the event queue the replicas write into; and a leader replica holding its HW until its ISR
change has been reported (a real log in a temp directory).

Times are plain numbers: the clock is passed in.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from rillet.broker.spu.control import (
    NEVER, OFFSETS_MOVED, PROBLEMS_CHANGED, Actions, ControlState, IsrChanged, ScConnected, ScLost, Timings, decide,
    retention_check_s,
)
from rillet.broker.spu.loop import EventQueue
from rillet.broker.spu.replica import Replica
from rillet.broker.storage.log import PartitionLog
from rillet.ipc import messages as m
from rillet.ipc.records import BatchBuilder

T = Timings(report_interval_s=0.05, heartbeat_s=0.25, expire_interval_s=0.1, retention_check_s=10.0,
            sc_lost_timeout_s=60.0)
NOW = 1000.0
K1, K2 = ("t", 0), ("t", 1)


def st(connected=True, lost=0.0, reported=NOW - 0.1, expire=NOW + 0.05, retention=NOW + 5.0):
    """A running SPU: connected, last report 100 ms ago, no timer due unless told."""
    return ControlState(connected=connected, sc_lost_since=lost, last_report_at=reported,
                        next_expire_at=expire, next_retention_at=retention)


ISR = IsrChanged


@pytest.mark.parametrize("case, state, events, now, actions, wake_at", [
    ("quiet, nothing due: sleep until the next timer (expiry)",
     st(), [], NOW, Actions(), NOW + 0.05),
    ("offsets moved, last report 100 ms ago: report now",
     st(), [OFFSETS_MOVED], NOW, Actions(checkpoint_hw=True, report=True), NOW + 0.05),
    ("offsets moved 10 ms after a report: coalesced, wake when the interval is over",
     st(reported=NOW - 0.01, expire=NOW + 1), [OFFSETS_MOVED], NOW, Actions(), NOW + 0.04),
    ("no change for a heartbeat: report anyway (the SC counts silence as death)",
     st(reported=NOW - 0.25, expire=NOW + 1), [], NOW, Actions(checkpoint_hw=True, report=True), NOW + 0.25),
    ("an ISR change 1 ms after a report: reported at once, then its HW released",
     st(reported=NOW - 0.001), [ISR(K1)], NOW, Actions(checkpoint_hw=True, report=True, release_hw=(K1,)),
     NOW + 0.05),
    ("two changes of one partition and one of another: each released once, in order",
     st(), [ISR(K2), OFFSETS_MOVED, ISR(K2), ISR(K1)], NOW,
     Actions(checkpoint_hw=True, report=True, release_hw=(K2, K1)), NOW + 0.05),
    ("no SC: the ISR change is not sent, but the HW still moves (nobody to tell, as before the SC left)",
     st(connected=False, lost=NOW - 1), [ISR(K1)], NOW,
     Actions(checkpoint_hw=True, release_hw=(K1,)), NOW + 0.05),
    ("no SC, offsets moved: HWs are checkpointed on the report's schedule",
     st(connected=False, lost=NOW - 1), [OFFSETS_MOVED], NOW, Actions(checkpoint_hw=True), NOW + 0.05),
    ("a replica problem 1 ms after a report: reported at once (the SC moves a damaged leader's leadership)",
     st(reported=NOW - 0.001, expire=NOW + 1), [PROBLEMS_CHANGED], NOW, Actions(checkpoint_hw=True, report=True),
     NOW + 0.25),
    ("the expiry timer is due: expire ISRs, flush what is due, check the replicas' files",
     st(expire=NOW), [], NOW, Actions(expire_isr=True, flush_due=True, check_replicas=True), NOW + 0.1),
    ("the retention timer is due",
     st(retention=NOW - 0.001, expire=NOW + 1), [], NOW, Actions(retention=True), NOW + 0.15),
    ("the first decision after start: every timer is due",
     ControlState.start(NOW), [], NOW,
     Actions(checkpoint_hw=True, expire_isr=True, flush_due=True, retention=True, check_replicas=True), NOW + 0.1),
    ("the SC just came: nothing extra (the link answers its assignment with a status itself)",
     st(connected=False, lost=NOW - 70, expire=NOW + 1), [ScConnected()], NOW, Actions(), NOW + 0.15),
    ("connected again, the heartbeat due: now it is sent, not only checkpointed",
     st(connected=False, lost=NOW - 70, reported=NOW - 0.3, expire=NOW + 1), [ScConnected()], NOW,
     Actions(checkpoint_hw=True, report=True), NOW + 0.25),
    ("no SC for longer than the timeout: stop unless supervised",
     st(connected=False, lost=NOW - 60.5, expire=NOW + 1), [], NOW,
     Actions(stop_unless_supervised=True), NOW + 0.15),
    ("the link dropped and came back before the timeout: no stop",
     st(connected=True, lost=NOW - 61, expire=NOW + 1), [ScLost(), ScConnected()], NOW, Actions(), NOW + 0.15),
    ("the link dropped: the timeout counts from now",
     st(expire=NOW + 1), [ScLost()], NOW, Actions(), NOW + 0.15),
])
def test_decide(case, state, events, now, actions, wake_at):
    decision = decide(state, events, now, T)
    assert decision.actions == actions, case
    assert decision.wake_at == pytest.approx(wake_at), case


def test_state_carries_the_timers_forward():
    d = decide(ControlState.start(NOW), [], NOW, T)
    assert d.state == ControlState(connected=False, sc_lost_since=NOW, last_report_at=NOW,
                                   next_expire_at=NOW + 0.1, next_retention_at=NOW + 10.0)
    # Nothing due 40 ms later: the state stays as it was.
    assert decide(d.state, [], NOW + 0.04, T).state == d.state


def test_lost_sc_timeout_restarts_after_a_stop_check():
    """A supervisor lives (the loop does not stop): ask again only after another full timeout."""
    lost = decide(st(expire=NOW + 100, retention=NOW + 100), [ScLost()], NOW, T).state
    assert lost.sc_lost_since == NOW and not lost.connected
    assert not decide(lost, [], NOW + 60, T).actions.stop_unless_supervised
    gave_up = decide(lost, [], NOW + 60.01, T)
    assert gave_up.actions.stop_unless_supervised and gave_up.state.sc_lost_since == NOW + 60.01
    assert not decide(gave_up.state, [], NOW + 100, T).actions.stop_unless_supervised
    assert decide(gave_up.state, [], NOW + 120.02, T).actions.stop_unless_supervised


def test_a_paced_stream_of_changes_reports_once_per_interval():
    """Offsets moving every millisecond for a second, with the queue's rule (the first change
    after a report wakes the loop, later ones only raise the flag): about 20 reports and as
    many extra wake-ups, as the interval says, not one per change."""
    state = st(reported=NEVER, expire=NOW + 100, retention=NOW + 100)
    flag, wake, reports, decisions = False, float("inf"), 0, 0
    for i in range(1000):
        now = NOW + i / 1000
        woken = now + 1e-9 >= wake
        if not flag:
            flag = woken = True
        if not woken:
            continue
        d = decide(state, [OFFSETS_MOVED] if flag else [], now, T)
        state, wake, decisions = d.state, d.wake_at, decisions + 1
        if d.actions.checkpoint_hw:
            flag = False            # the loop lowers it when it reports
        reports += d.actions.report
    assert 19 <= reports <= 21
    assert decisions <= 2 * reports + 1



def idle_wake_ups(quiet: bool, seconds: float = 10.0) -> tuple[int, int]:
    """Run ``decide`` as the loop does with no event for ``seconds``: (wake-ups, expiry passes)."""
    state, now, wakes, passes = st(reported=NOW, expire=NOW), NOW, 0, 0
    while now < NOW + seconds:
        d = decide(state, [], now, T, quiet=quiet)
        state, wakes, passes = d.state, wakes + 1, passes + d.actions.expire_isr
        now = d.wake_at
    return wakes, passes


def test_a_quiet_spu_makes_its_expiry_pass_with_the_heartbeat():
    """Nothing needs the 0.1 s pass (no followers to expire, no interval flush, no scrub under
    way): it comes with each heartbeat, so an idle SPU wakes 4 times a second, not 14."""
    wakes, passes = idle_wake_ups(quiet=False)
    assert wakes >= 120 and passes >= 100
    wakes, passes = idle_wake_ups(quiet=True)
    assert 39 <= wakes <= 41 and passes >= 39


def test_a_quiet_pass_is_due_at_the_next_heartbeat():
    d = decide(st(reported=NOW - 0.1, expire=NOW), [], NOW, T, quiet=True)
    assert d.actions == Actions(expire_isr=True, flush_due=True, check_replicas=True)
    assert d.state.next_expire_at == pytest.approx(NOW + 0.15) and d.wake_at == pytest.approx(NOW + 0.15)
    # Work appears (a quiet pass was planned): the fine interval is back from the next pass on.
    d = decide(d.state, [], NOW + 0.15, T, quiet=False)
    assert d.actions.expire_isr and d.actions.report and d.wake_at == pytest.approx(NOW + 0.25)

@pytest.mark.parametrize("bad", [
    dict(report_interval_s=0), dict(heartbeat_s=-1), dict(expire_interval_s=float("nan")),
])
def test_timings_refuse_non_positive_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Timings(**bad)


def test_an_unknown_event_is_a_type_error():
    with pytest.raises(TypeError, match="not an SPU control event"):
        decide(st(), ["moved"], NOW, T)


@pytest.mark.parametrize("raw, expected", [(None, 10.0), ("0.1", 0.1), ("0", 10.0), ("soon", 10.0)])
def test_retention_check_setting(raw, expected):
    env = {} if raw is None else {"RILLET_RETENTION_CHECK_S": raw}
    assert retention_check_s(env) == expected


# --- the queue ---

def test_the_moved_flag_is_coalesced_and_stays_up_until_reported():
    q = EventQueue()
    for _ in range(3):
        q.offsets_moved()
    q.isr_changed(K1)
    assert q.drain() == [OFFSETS_MOVED, IsrChanged(K1)]
    assert q.drain() == [OFFSETS_MOVED]          # not reported yet: still owed to the SC
    q.reported()
    assert q.drain() == [] and not q.pending


def test_the_queue_wakes_its_waiter_on_the_first_change_only():
    async def scenario():
        q = EventQueue()
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(q.wait(5))
        await asyncio.sleep(0)
        started = loop.time()
        q.offsets_moved()
        await waiting
        assert loop.time() - started < 1
        # The flag is up: more changes do not wake a new waiter (the produce path stays one test).
        waiting = asyncio.ensure_future(q.wait(0.05))
        await asyncio.sleep(0)
        q.offsets_moved()
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await waiting                             # its own timeout
        q.push(ScLost())                          # a pushed event wakes it
        waiting = asyncio.ensure_future(q.wait(5))
        await asyncio.sleep(0)
        assert waiting.done()
    asyncio.run(scenario())


# --- a leader's HW waits for its ISR change to be reported ---

LOGGER = logging.getLogger("rillet.test.spu_control")


def batch(value: bytes) -> memoryview:
    builder = BatchBuilder()
    builder.append(None, value, 1)
    return memoryview(builder.build())


def leader(tmp_path, events):
    spec = m.ReplicaSpec(topic="t", partition=0, replicas=[1, 2], leader=1, leader_epoch=1, segment_size=1 << 20,
                         compression_type="any", min_in_sync_replicas=1, in_sync=[1, 2])
    return Replica(1, spec, PartitionLog.open(tmp_path / "t-0", segment_size=1 << 20, logger=LOGGER), LOGGER,
                   events=events)


def test_a_shrunk_isr_moves_the_hw_only_once_released(tmp_path):
    q = EventQueue()
    r = leader(tmp_path, q)
    try:
        r.append(batch(b"v"))
        assert (r.leo, r.hw) == (1, 0)           # follower 2 is in sync and has not fetched
        r.follower_gone(2)
        assert r.leader_state.in_sync() == [1]
        assert q.drain() == [IsrChanged(("t", 0))]
        assert r.hw == 0                          # the SC has not been told yet
        r.append(batch(b"w"))
        assert r.hw == 0                          # a produce meanwhile does not move it either
        r.release_hw()
        assert r.hw == 2
        r.append(batch(b"x"))
        assert r.hw == 3                          # released: every append moves it again
    finally:
        r.close()


def test_a_replica_without_a_queue_moves_its_hw_at_once(tmp_path):
    r = leader(tmp_path, None)
    try:
        r.append(batch(b"v"))
        r.follower_gone(2)
        assert r.hw == 1
    finally:
        r.close()
