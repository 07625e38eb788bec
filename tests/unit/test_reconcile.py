"""The SC's one decision function, reconcile.reconcile(state, observation) -> actions, as tables.

Each case is a persisted partition (leader, epoch, in-sync set), what the SPUs are seen
doing (online or not, silent for how long, what they report), and the decision expected.
"""

from __future__ import annotations

import pytest

from rillet.broker.sc import reconcile
from rillet.broker.sc.reconcile import Actions, Observation, PartitionUpdate, SpuObserved
from rillet.broker.sc.state import ClusterState, PartitionAssignment, TopicState
from rillet.ipc import messages as m

NOW = 100.0
TIMEOUT = 1.5


def state(leader=1, epoch=4, in_sync=(1, 2, 3), replicas=(1, 2, 3), spus=(1, 2, 3)):
    p = PartitionAssignment(partition=0, replicas=list(replicas), leader=leader, leader_epoch=epoch,
                            in_sync=list(in_sync))
    return ClusterState(spus=list(spus), topics={"t": TopicState(name="t", config=m.TopicConfig(),
                                                                 partitions=[p], created_ms=0)})


def report(epoch=4, leader=False, leo=10, in_sync=()):
    return m.ReplicaStatus("t", 0, epoch, leader, leo, leo, 0, 0, list(in_sync))


def spus(online=(1, 2, 3), silent=(), reports=None):
    """SPU observations: ``silent`` ones last spoke 2 s ago; ``reports``: spu -> ReplicaStatus."""
    out = {}
    for s in (1, 2, 3):
        o = SpuObserved(s, online=s in online, last_seen=NOW - 2.0 if s in silent else NOW - 0.1)
        if reports and s in reports:
            o.replicas[("t", 0)] = reports[s]
        out[s] = o
    return out


def observe(spus_, **kw):
    return Observation(spus=spus_, now=NOW, spu_timeout_s=TIMEOUT, **kw)


def upd(leader, epoch, in_sync, reason):
    return PartitionUpdate("t", 0, leader, epoch, tuple(in_sync), reason)


@pytest.mark.parametrize("case, st, seen, expected", [
    ("all well: nothing to do",
     state(), spus(reports={1: report(leader=True, in_sync=[1, 2, 3])}), Actions()),
    ("the leader shrank its in-sync set: recorded, nobody is told (the leader decided it)",
     state(), spus(reports={1: report(leader=True, in_sync=[1, 3])}),
     Actions(updates=(upd(1, 4, [1, 3], "in-sync"),))),
    ("an in-sync set reported under an older epoch is ignored",
     state(), spus(reports={1: report(epoch=3, leader=True, in_sync=[1])}), Actions()),
    ("a follower's in-sync set means nothing",
     state(), spus(reports={2: report(in_sync=[2])}), Actions()),
    ("the leader is gone: the in-sync replica with most data leads at epoch + 1",
     state(), spus(online=(2, 3), reports={2: report(leo=10), 3: report(leo=12)}),
     Actions(updates=(upd(3, 5, [2, 3], "elected"),), push=(2, 3))),
    ("a leader silent past the timeout is dead",
     state(), spus(silent=(1,), reports={2: report(leo=12), 3: report(leo=12)}),
     Actions(silent=(1,), updates=(upd(2, 5, [2, 3], "elected"),), push=(2, 3))),
    ("no in-sync replica online: no election (LeaderOffline)",
     state(in_sync=(1,)), spus(online=(2, 3)), Actions()),
    ("epoch floor: a live leader reports a newer epoch than metadata.json",
     state(leader=1, epoch=2), spus(reports={2: report(epoch=3, leader=True, in_sync=[2, 3]), 3: report(epoch=3)}),
     Actions(updates=(upd(2, 3, [2, 3], "epoch-floor+in-sync"),), push=(1, 2, 3))),
    ("epoch floor with no leader at it: elected above the floor",
     state(leader=1, epoch=2), spus(reports={2: report(epoch=3, leo=5), 3: report(epoch=3, leo=7)}),
     Actions(updates=(upd(3, 4, [1, 2, 3], "epoch-floor+elected"),), push=(1, 2, 3))),
])
def test_reconcile(case, st, seen, expected):
    assert reconcile.reconcile(st, observe(seen)) == expected, case


def test_elections_wait_for_adopted_spus_to_report():
    st = state()
    seen = spus(online=(2,), reports={2: report(leo=10)})             # 3 was found running, not registered yet
    assert reconcile.reconcile(st, observe(seen, awaiting=frozenset({3}))) == Actions()
    seen = spus(online=(2, 3), reports={2: report(leo=10), 3: report(leo=20)})
    assert reconcile.reconcile(st, observe(seen)).updates == (upd(3, 5, [2, 3], "elected"),)


def test_an_unclaimed_epoch_floor_waits_for_adopted_spus():
    seen = spus(reports={3: report(epoch=3)})                         # 2 may lead at epoch 3: not known yet
    assert reconcile.reconcile(state(epoch=2), observe(seen, awaiting=frozenset({2}))) == Actions()


def test_missing_spus_are_started_after_the_elections():
    st = state()
    seen = spus(online=(2, 3), reports={2: report(leo=10), 3: report(leo=10)})
    actions = reconcile.reconcile(st, observe(seen, running=frozenset({2, 3}), spawn_missing=True))
    assert actions.updates == (upd(2, 5, [2, 3], "elected"),) and actions.spawn == (1,)
    # an SC restart (spawn_missing False) or an adoption still under way starts nothing
    assert reconcile.reconcile(st, observe(seen, running=frozenset({2, 3}))).spawn == ()
    assert reconcile.reconcile(st, observe(seen, running=frozenset({2, 3}), spawn_missing=True,
                                           awaiting=frozenset({2}))).spawn == ()


def test_nothing_is_decided_while_the_cluster_stops():
    seen = spus(online=(), reports=None)
    assert reconcile.reconcile(state(), observe(seen, stopping=True, spawn_missing=True)) == Actions()


def test_apply_updates_writes_the_decision():
    st = state()
    reconcile.apply_updates(st, (upd(3, 5, [2, 3], "elected"),))
    p = st.topics["t"].partitions[0]
    assert (p.leader, p.leader_epoch, p.in_sync) == (3, 5, [2, 3])


def _problem(kind="cannot-create", cause="cannot preallocate 64 bytes for x: No space left on device (ENOSPC)"):
    return m.ReplicaProblem("t", 0, kind, cause)


@pytest.mark.parametrize("case, seen, expected", [
    ("nothing reported yet: not settled", spus(), (False, None)),
    ("the leader reports its replica: settled once the followers did too",
     spus(reports={1: report(leader=True), 2: report()}), (False, None)),
    ("every replica reported, the leader online: settled, no failure",
     spus(reports={1: report(leader=True), 2: report(), 3: report()}), (True, None)),
    ("an offline follower is not waited for",
     spus(online=(1, 2), reports={1: report(leader=True), 2: report()}), (True, None)),
])
def test_creation_outcome(case, seen, expected):
    assert reconcile.creation_outcome(state().topics["t"], seen) == expected, case


def test_creation_fails_with_the_first_replica_that_cannot_be_created():
    seen = spus(reports={1: report(leader=True)})
    seen[2].problems[("t", 0)] = _problem()
    settled, failure = reconcile.creation_outcome(state().topics["t"], seen)
    assert settled and failure == ("SPU 2 cannot create replica t/0: cannot preallocate 64 bytes for x: "
                                   "No space left on device (ENOSPC)")
    issues = reconcile.partition_problems("t", state().topics["t"].partitions[0], seen)
    assert issues == [m.ReplicaIssue(2, "cannot-create", _problem().cause)]


def _damaged(seen, spu, kind="missing"):
    seen[spu].problems[("t", 0)] = _problem(kind, "replica directory /x is gone: No such file or directory (ENOENT)")
    return seen


@pytest.mark.parametrize("case, seen, expected", [
    ("a damaged leader copy hands over to the whole in-sync copy with most data",
     _damaged(spus(reports={1: report(leader=True, in_sync=[1, 2, 3]), 2: report(leo=8), 3: report(leo=9)}), 1),
     (upd(3, 5, [2, 3], "elected (leader copy damaged)"),)),
    ("a damaged leader with no whole copy to hand over to keeps leading",
     _damaged(_damaged(spus(online=(1, 2), reports={1: report(leader=True, in_sync=[1, 2, 3]), 2: report()}), 1), 2),
     ()),
    ("the leader died: a whole copy is elected before a damaged one with more data",
     _damaged(spus(online=(2, 3), reports={2: report(leo=20), 3: report(leo=9)}), 2),
     (upd(3, 5, [3], "elected"),)),
    ("the leader died and only damaged copies are left: the best of them, rather than none",
     _damaged(spus(online=(2,), reports={2: report(leo=20)}), 2),
     (upd(2, 5, [2], "elected"),)),
])
def test_damaged_copies_do_not_lead_while_a_whole_one_exists(case, seen, expected):
    assert reconcile.reconcile(state(), observe(seen)).updates == expected, case


def test_a_copy_that_could_not_be_opened_is_never_elected():
    seen = _damaged(spus(online=(2,), reports={}), 2, kind="cannot-create")
    assert reconcile.reconcile(state(), observe(seen)).updates == ()


def test_a_copy_being_rebuilt_is_never_elected():
    seen = _damaged(spus(online=(2,), reports={2: report(leo=0)}), 2, kind="rebuilding")
    assert reconcile.reconcile(state(), observe(seen)).updates == ()


# --- which status reports need a reconcile (reconcile.decides_alike) ---

def reported(replicas=None, problems=None, first=False):
    """An SPU as stored after its last report (``first``: it has not reported since registering)."""
    o = SpuObserved(1, online=True, replicas_reported=not first)
    o.replicas = {("t", 0): report(leader=True, in_sync=[1, 2])} if replicas is None else replicas
    o.problems = problems or {}
    return o


def problem(kind="damaged", cause="batch CRC mismatch"):
    return {("t", 0): m.ReplicaProblem("t", 0, kind, cause)}


def status(**kw):
    base = dict(topic="t", partition=0, leader_epoch=4, is_leader=True, leo=10, hw=10, log_start=0,
                size_bytes=0, in_sync=[1, 2])
    return m.ReplicaStatus(**{**base, **kw})


@pytest.mark.parametrize("case, replicas, problems, alike", [
    ("the heartbeat repeats the last report", {("t", 0): status()}, {}, True),
    ("only offsets, sizes and counters moved",
     {("t", 0): status(leo=99, hw=90, log_start=5, size_bytes=4096, flushes=3, records_in=7)}, {}, True),
    ("the leader dropped a follower from its in-sync set", {("t", 0): status(in_sync=[1])}, {}, False),
    ("it is no longer leader", {("t", 0): status(is_leader=False)}, {}, False),
    ("it runs a newer epoch", {("t", 0): status(leader_epoch=5)}, {}, False),
    ("it holds one more replica", {("t", 0): status(), ("t", 1): status(partition=1)}, {}, False),
    ("it no longer holds the replica", {}, {}, False),
    ("it found its copy damaged", {("t", 0): status()}, problem(), False),
])
def test_a_report_needs_a_reconcile_only_when_a_decision_reads_what_changed(case, replicas, problems, alike):
    before = reported(replicas={("t", 0): status()})
    assert reconcile.decides_alike(before, replicas, problems) is alike, case


def test_a_problem_that_changes_or_goes_away_needs_a_reconcile():
    before = reported(replicas={("t", 0): status()}, problems=problem("rebuilding", "fetching"))
    assert reconcile.decides_alike(before, {("t", 0): status()}, problem("rebuilding", "fetching"))
    assert not reconcile.decides_alike(before, {("t", 0): status()}, problem("damaged", "gone"))
    assert not reconcile.decides_alike(before, {("t", 0): status()}, {})


def test_the_first_report_after_registering_is_never_alike():
    """Even an empty one: adopted SPUs leave the election wait on it (update_awaiting)."""
    assert not reconcile.decides_alike(reported(replicas={}, first=True), {}, {})
