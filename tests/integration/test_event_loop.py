"""The SPU's event loop: uvloop when installed, asyncio's own when not or when told so."""

from __future__ import annotations

import pytest

from rillet import ConsumerConfig, Offset
from rillet.broker.spu.process import EVENT_LOOP_ENV, event_loop_factory
from rillet.testing import LocalCluster


def test_the_factory_prefers_uvloop_and_obeys_the_environment(monkeypatch):
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert event_loop_factory() is None
    monkeypatch.delenv(EVENT_LOOP_ENV)
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_spu_serves_on_either_loop(monkeypatch, tmp_path, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
        monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")     # the SC passes its environment to the SPUs
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("loop")
        fluvio = cluster.fluvio()
        with fluvio.topic_producer("loop") as producer:
            for i in range(20):
                producer.send(None, f"r{i}")
        config = ConsumerConfig()
        config.disable_continuous()
        got = [r.value_string() for r in fluvio.partition_consumer("loop", 0).stream_with_config(
            Offset.beginning(), config)]
        assert got == [f"r{i}" for i in range(20)]
        assert f"event loop: {loop}" in cluster.paths.spu_log_file(5001).read_text()


@pytest.mark.parametrize("setting, policy", [(None, "SCHED_BATCH"), ("normal", "SCHED_OTHER"),
                                             ("bogus", "SCHED_BATCH")])
def test_an_spu_runs_under_the_scheduling_policy_the_environment_names(monkeypatch, tmp_path, setting, policy):
    # SCHED_BATCH by default (an SPU woken by a request does not preempt the producer that sent
    # it), SCHED_OTHER when told ``normal``; a value it does not take is logged, never fatal.
    import os
    from rillet.broker.spu.process import SCHED_ENV
    if setting is None:
        monkeypatch.delenv(SCHED_ENV, raising=False)
    else:
        monkeypatch.setenv(SCHED_ENV, setting)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        pid = cluster.spu_pid(5001)
        assert os.sched_getscheduler(pid) == getattr(os, policy)
        threads = os.listdir(f"/proc/{pid}/task")
        assert all(os.sched_getscheduler(int(t)) == getattr(os, policy) for t in threads)
        log = cluster.paths.spu_log_file(5001).read_text()
        assert f"scheduling: {'normal' if setting == 'normal' else 'batch'}" in log
        if setting == "bogus":
            assert "RILLET_SPU_SCHED='bogus' is not one of batch, normal; using batch" in log
