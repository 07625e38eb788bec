"""The per-topic flush policy: when the SPU fsyncs a partition's log."""

from __future__ import annotations

import json
import time

from rillet import TopicProducerConfigBuilder

from tests.conftest import run_cli

from .test_failover import partition, wait_for


def produce(cluster, topic, n):
    with cluster.fluvio().topic_producer_with_config(topic, TopicProducerConfigBuilder().linger(0).build()) as p:
        for i in range(n):
            p.send(None, f"r{i}").wait(timeout=10)


def test_every_batch_syncs_before_each_ack_and_none_never(cluster):
    cluster.create_topic("synced", flush="every-batch")
    cluster.create_topic("cached")
    produce(cluster, "synced", 5)
    produce(cluster, "cached", 5)
    wait_for(lambda: partition(cluster, "synced").flushes >= 5 and partition(cluster, "cached").leo == 5,
             what="reports of both partitions")
    assert partition(cluster, "cached").flushes == 0


def test_interval_syncs_on_a_timer_only_when_there_is_something_new(cluster):
    with cluster.admin() as admin:
        from rillet import TopicSpec
        admin.create_topic("timer", TopicSpec.create().with_flush("interval", "200ms"))
    produce(cluster, "timer", 20)
    wait_for(lambda: partition(cluster, "timer").flushes >= 1, what="an interval flush")
    time.sleep(0.6)
    settled = partition(cluster, "timer").flushes
    time.sleep(0.6)
    assert partition(cluster, "timer").flushes == settled       # nothing new written: no fsync


def test_flush_policy_on_the_command_line(cluster):
    r = run_cli(cluster, "topic", "create", "cli-flush", "--flush", "every-batch")
    assert r.returncode == 0, r.stderr.decode()
    topics = {t["name"]: t for t in json.loads(run_cli(cluster, "topic", "list", "-O", "json").stdout)}
    assert topics["cli-flush"]["flush"] == "every-batch"
    bad = run_cli(cluster, "topic", "create", "cli-flush2", "--flush", "sometimes")
    assert bad.returncode == 2 and len(bad.stderr.decode().strip().splitlines()) == 1
