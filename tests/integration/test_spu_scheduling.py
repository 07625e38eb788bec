"""The SPU's scheduling policy (broker/spu/scheduling.py): under SCHED_BATCH while producers
stream through produce rings (``auto``, the default), SCHED_OTHER otherwise; RILLET_SPU_SCHED
fixes one. Real SPU processes, their real policy read from the kernel."""

from __future__ import annotations

import os
import threading
import time

import pytest

from rillet import TopicProducerConfigBuilder
from rillet.broker.spu.scheduling import SCHED_ENV
from rillet.testing import LocalCluster


def policy_of(pid: int) -> int:
    return os.sched_getscheduler(pid)        # the process's main thread: the SPU's event loop


def wait_for_policy(pid: int, policy: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if policy_of(pid) == policy:
            return True
        time.sleep(0.01)
    return policy_of(pid) == policy


def stream_through_the_ring(fluvio, topic: str, stop_after_s: float) -> None:
    config = TopicProducerConfigBuilder().batch_size(16384).linger(5).build()
    value = b"v" * 1000                       # batches of 16 KiB: they go through the ring
    with fluvio.topic_producer_with_config(topic, config) as producer:
        until = time.monotonic() + stop_after_s
        while time.monotonic() < until:
            for _ in range(200):
                producer.send(None, value)
            producer.flush()


@pytest.mark.parametrize("setting", [None, "bogus"])
def test_an_spu_yields_to_producers_streaming_through_rings_and_preempts_again_after(monkeypatch, tmp_path,
                                                                                    setting):
    if setting is None:
        monkeypatch.delenv(SCHED_ENV, raising=False)
    else:
        monkeypatch.setenv(SCHED_ENV, setting)   # not taken: logged, and auto used
    monkeypatch.delenv("RILLET_PRODUCE_RING", raising=False)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("sched")
        pid = cluster.spu_pid(5001)
        assert policy_of(pid) == os.SCHED_OTHER
        fluvio = cluster.fluvio()
        streamer = threading.Thread(target=stream_through_the_ring, args=(fluvio, "sched", 1.5))
        streamer.start()
        try:
            assert wait_for_policy(pid, os.SCHED_BATCH), "the SPU stayed under SCHED_OTHER while rings streamed"
        finally:
            streamer.join()
        # Small linger-0 requests take the socket: once the rings are still, the SPU preempts again.
        assert wait_for_policy(pid, os.SCHED_OTHER, timeout_s=3.0)
        with fluvio.topic_producer_with_config("sched", TopicProducerConfigBuilder().linger(0).build()) as producer:
            for i in range(50):
                producer.send(None, b"x").wait()
        assert policy_of(pid) == os.SCHED_OTHER
        log = cluster.paths.spu_log_file(5001).read_text()
        assert "scheduling: auto" in log
        if setting == "bogus":
            assert "RILLET_SPU_SCHED='bogus' is not one of auto, batch, normal; using auto" in log


@pytest.mark.parametrize("setting, policy", [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")])
def test_rillet_spu_sched_fixes_one_policy(monkeypatch, tmp_path, setting, policy):
    monkeypatch.setenv(SCHED_ENV, setting)
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        cluster.create_topic("fixed")
        pid = cluster.spu_pid(5001)
        stream_through_the_ring(cluster.fluvio(), "fixed", 0.5)
        assert policy_of(pid) == getattr(os, policy)
        time.sleep(0.3)                           # past a safety look with the rings still
        assert policy_of(pid) == getattr(os, policy)
        assert f"scheduling: {setting}" in cluster.paths.spu_log_file(5001).read_text()
