"""`rillet cluster spu add` / `remove` under a running producer and consumer (issue 11): the
removed SPU's replicas (its leaderships and its only copies included) are copied to other SPUs
and caught up before it goes; a leader is fenced (no more produces) until its copy has its
last record, then hands over: nothing acknowledged is lost, ReadUncommitted acks included. A
dead SPU's leaderships moved by failover, whose guarantees are the README's (ReadCommitted)."""

from __future__ import annotations

import json
import time

import pytest

from rillet import Isolation

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli
from tests.integration._traffic import Traffic


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from rillet.testing import LocalCluster
    with LocalCluster(spus=2, home=tmp_path_factory.mktemp("rillet")) as c:
        yield c
    assert not c.leftovers()


def test_add_then_remove_an_spu_under_traffic(cluster):
    cluster.create_topic("replicated", partitions=2, replication=2)
    cluster.create_topic("single", partitions=2, replication=1)
    fluvio, admin = cluster.fluvio(), cluster.admin()
    assert "leaves 1 SPU(s); topic 'replicated' has replication factor 2" in one_line_error(
        run_cli(cluster, "cluster", "spu", "remove", "5001"), 1)

    assert ok(run_cli(cluster, "cluster", "spu", "add")).startswith("added SPU 5003: online as pid ")
    led = {(p.topic, p.partition) for p in admin.list_partitions([]) if p.leader == 5001}
    assert ("single", 0) in led or ("single", 1) in led                  # it holds the only copy of some
    # ReadUncommitted: acknowledged by the leader alone, and read up to its log end. The leader
    # is fenced before it hands over, so even these survive the move.
    traffic = [Traffic(fluvio, "replicated", 2), Traffic(fluvio, "single", 2)]
    for t in traffic:
        t.wait_sent(200)
    assert ok(run_cli(cluster, "cluster", "spu", "remove", "5001")) == \
        "removed SPU 5001: its replicas moved to other SPUs\n"
    for t in traffic:
        t.wait_sent(len(t.sent) + 200)
        t.finish()                                                     # nothing lost, in order

    spus = json.loads(ok(run_cli(cluster, "spu", "list", "-O", "json")))
    assert [(s["id"], s["status"]) for s in spus] == [(5002, "Online"), (5003, "Online")]
    parts = admin.list_partitions([])
    assert all(5001 not in p.replicas and p.status == "Online" for p in parts)
    assert all(len(p.replicas) == (2 if p.topic == "replicated" else 1) for p in parts)
    assert not cluster.paths.spu_data_dir(5001).exists()
    assert "no SPU 5001 in this cluster" in one_line_error(run_cli(cluster, "cluster", "spu", "remove", "5001"), 1)


def test_remove_a_dead_spu_whose_partitions_failed_over(tmp_path):
    from rillet.testing import LocalCluster
    with LocalCluster(spus=3, home=tmp_path) as c:
        c.create_topic("survivors", partitions=2, replication=2)
        c.create_topic("lonely", partitions=3, replication=1)          # one partition per SPU
        fluvio, admin = c.fluvio(), c.admin()
        traffic = Traffic(fluvio, "survivors", 2, isolation=Isolation.ReadCommitted)
        traffic.wait_sent(200)
        c.kill_spu(5001)
        deadline = time.monotonic() + 10
        while any(s.status == "Online" for s in admin.list_spus() if s.id == 5001):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        lonely = next(p.partition for p in admin.list_partitions(["lonely"]) if p.replicas == [5001])
        err = one_line_error(run_cli(c, "cluster", "spu", "remove", "5001"), 1)
        assert f"SPU 5001 is not online and holds the only in-sync copy of lonely/{lonely}" in err
        admin.delete_topic("lonely")
        ok(run_cli(c, "cluster", "spu", "remove", "5001"))
        traffic.wait_sent(len(traffic.sent) + 200)
        traffic.finish()
        parts = admin.list_partitions(["survivors"])
        assert all(5001 not in p.replicas and len(p.replicas) == 2 and p.status == "Online" for p in parts)
        assert [s.id for s in admin.list_spus()] == [5002, 5003]
    assert not c.leftovers()
