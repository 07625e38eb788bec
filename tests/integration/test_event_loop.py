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

