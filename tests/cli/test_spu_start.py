"""One SPU at a time: `rillet cluster spu start ID` and `tools/spu-kill --restart-after`
on a one-SPU cluster, whose partitions (replication factor 1) cannot fail over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rillet import ConsumerConfig, Offset, TopicProducerConfigBuilder
from rillet.testing import LocalCluster
from tests.conftest import run_cli as run_cli_bytes
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    with LocalCluster(spus=1, home=tmp_path_factory.mktemp("rillet")) as c:
        c.create_topic("solo", partitions=2)
        yield c
    assert not c.leftovers()


def run_cli(cluster, *args):
    result = run_cli_bytes(cluster, *args)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def spus(cluster) -> dict[int, dict]:
    result = run_cli(cluster, "spu", "list", "-O", "json")
    assert result.returncode == 0, result.stderr
    return {s["id"]: s for s in json.loads(result.stdout)}


def statuses(cluster) -> list[str]:
    result = run_cli(cluster, "partition", "list", "solo", "-O", "json")
    return [p["status"] for p in json.loads(result.stdout)]


def spu_kill(cluster, *args):
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "tools" / "spu-kill"), *args], capture_output=True,
                            env=cluster.env, timeout=60, text=True)
    return result, time.monotonic() - started


def one_line(result) -> str:
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_spu_start_brings_a_killed_spu_back(solo):
    fluvio = solo.fluvio()
    with fluvio.topic_producer_with_config("solo", TopicProducerConfigBuilder().linger(0).build()) as producer:
        producer.send_to_partition(0, None, "before")
    old = solo.kill_spu(5001)
    wait_for(lambda: spus(solo)[5001]["status"] == "Offline", what="SPU 5001 offline")
    assert set(statuses(solo)) == {"LeaderOffline"}

    result = run_cli(solo, "cluster", "spu", "start", "5001")
    assert result.returncode == 0, result.stderr
    info = spus(solo)[5001]
    assert info["status"] == "Online" and info["pid"] not in (0, old)
    assert result.stdout.strip() == f"started SPU 5001: online as pid {info['pid']}"
    wait_for(lambda: set(statuses(solo)) == {"Online"}, what="partitions Online")
    stream = fluvio.partition_consumer("solo", 0).stream_with_config(Offset.beginning(),
                                                                     ConsumerConfig().disable_continuous())
    assert [r.value_string() for r in stream][-1] == "before"

    again = run_cli(solo, "spu", "start", "5001")              # the alias; nothing to do
    assert again.returncode == 0 and again.stdout.strip() == f"SPU 5001 is already online (pid {info['pid']})"


def test_spu_start_refuses_an_unknown_spu_with_one_line(solo):
    result = run_cli(solo, "cluster", "spu", "start", "9999")
    assert result.returncode == 1
    assert "no SPU 9999 in this cluster (its SPUs: 5001)" in one_line(result)
    result = run_cli(solo, "cluster", "spu", "start", "abc")
    assert result.returncode == 2
    one_line(result)


def test_restart_after_on_a_cluster_with_rf1_partitions_returns_on_time(solo):
    old = spus(solo)[5001]["pid"]
    result, elapsed = spu_kill(solo, "--spu", "5001", "--wait", "--restart-after", "500ms")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("cannot fail over (replication factor 1: no other replica)") == 2, out
    assert "restarted SPU 5001: online" in out, out
    # the restart waits for the new process to be online (a Python start-up), never the 30 s timeout
    assert elapsed < 6.0, (elapsed, out)
    restarted_ms = float(out.split("restarted SPU 5001: online ")[1].split(" ms")[0])
    assert 500 <= restarted_ms < 5000, out
    assert spus(solo)[5001]["pid"] != old
    wait_for(lambda: set(statuses(solo)) == {"Online"}, what="partitions Online")


def test_restart_after_with_sigstop_resumes_on_time(solo):
    result, elapsed = spu_kill(solo, "--spu", "5001", "--signal", "STOP", "--wait", "--restart-after", "2s", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [p.get("cannot_fail_over") for p in report["partitions"]] == ["replication factor 1: no other replica"] * 2
    assert 2000 <= report["restarted_after_ms"] < 6000, report
    assert 2.0 <= elapsed < 7.0, elapsed
    assert "resumed (SIGCONT) SPU 5001: online" in subprocess.run(
        [sys.executable, str(REPO / "tools" / "spu-kill"), "--spu", "5001", "--signal", "STOP", "--restart-after", "100ms"],
        capture_output=True, env=solo.env, timeout=60, text=True).stdout
    assert spus(solo)[5001]["status"] == "Online"
    wait_for(lambda: set(statuses(solo)) == {"Online"}, what="partitions Online")


def test_local_cluster_start_spu_returns_once_online_under_a_new_pid(solo):
    """`LocalCluster.start_spu` right after `kill_spu`, with no wait between: it returns the
    new pid only once the SC lists the SPU Online under it (the SC's StartSpu answer may
    come while it still counts the dead process online), and leaves a live SPU alone."""
    old = solo.kill_spu(5001)
    new = solo.start_spu(5001, timeout_s=30)
    row = spus(solo)[5001]
    assert new != old and row["pid"] == new and row["status"] == "Online", (old, new, row)
    assert solo.start_spu(5001) == new                       # alive and Online: nothing started
