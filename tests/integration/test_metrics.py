"""The metrics endpoint of a real cluster: scraped over HTTP, parsed by Prometheus' own parser."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from rillet import ConsumerConfigExtBuilder, OffsetManagementStrategy, TopicProducerConfigBuilder  # noqa: E402
from rillet.broker.sc.metrics import METRICS  # noqa: E402
from rillet.testing import LocalCluster  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def mcluster(tmp_path_factory):
    with LocalCluster(spus=2, home=tmp_path_factory.mktemp("rillet"), metrics_port=0) as c:
        c.create_topic("m", partitions=1, replication=2)
        yield c
    assert not c.leftovers()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def family_names(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def produce(fluvio, topic, count):
    with fluvio.topic_producer_with_config(topic, TopicProducerConfigBuilder().linger(0).build()) as producer:
        for i in range(count):
            producer.send(None, f"v{i}")
        producer.flush()


def test_endpoint_is_local_and_every_documented_family_is_there(mcluster):
    url = mcluster.metrics_url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
    assert family_names(url) >= {metric.name for metric in METRICS}
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    listening = [c for c in __import__("psutil").net_connections("tcp") if c.laddr and c.laddr.port == port
                 and c.status == "LISTEN"]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


def test_values_move_under_load(mcluster):
    url = mcluster.metrics_url
    fluvio = mcluster.fluvio()
    before = scrape(url)
    leo0 = value(before, "rillet_partition_log_end_offset", topic="m", partition=0)
    leader = int(value(before, "rillet_partition_leader", topic="m", partition=0))
    bytes0 = value(before, "rillet_partition_bytes_in_total", topic="m", partition=0, spu=leader)
    produce(fluvio, "m", 30)
    after = scrape(url)
    assert value(after, "rillet_partition_log_end_offset", topic="m", partition=0) == leo0 + 30
    # RF 2: the HW follows once the follower has fetched
    assert wait_for(lambda: value(scrape(url), "rillet_partition_high_watermark", topic="m", partition=0) == leo0 + 30)
    # counters come with the leader's next status report (within 50 ms of the change)
    assert wait_for(lambda: value(scrape(url), "rillet_partition_records_in_total", topic="m", partition=0,
                                  spu=leader) >= 30)
    assert value(scrape(url), "rillet_partition_bytes_in_total", topic="m", partition=0, spu=leader) > bytes0
    assert value(scrape(url), "rillet_spu_requests_total", spu=leader, kind="ProduceRequest") >= 1
    assert value(after, "rillet_partition_in_sync_replicas", topic="m", partition=0) == 2

    # a named consumer: 10 seen of leo0 + 30, then all of them; its lag falls to 0
    config = (ConsumerConfigExtBuilder("m").partition(0).offset_consumer("mc")
              .offset_strategy(OffsetManagementStrategy.MANUAL).disable_continuous().build())
    stream = fluvio.consumer_with_config(config)
    for _ in range(10):
        next(stream)
    stream.offset_commit()
    stream.offset_flush()
    lag = value(scrape(url), "rillet_consumer_lag", consumer="mc", topic="m", partition=0)
    assert lag == leo0 + 30 - 10
    assert value(scrape(url), "rillet_consumer_offset", consumer="mc", topic="m", partition=0) == 9
    for _ in stream:
        pass
    stream.offset_commit()
    stream.offset_flush()
    stream.close()
    assert value(scrape(url), "rillet_consumer_lag", consumer="mc", topic="m", partition=0) == 0


def test_records_out_counts_socket_fetches(mcluster):
    """Direct readers never reach the SPU; a consumer over the socket is counted."""
    url = mcluster.metrics_url
    produce(mcluster.fluvio(), "m", 5)
    samples = scrape(url)
    leader = int(value(samples, "rillet_partition_leader", topic="m", partition=0))
    leo = value(samples, "rillet_partition_log_end_offset", topic="m", partition=0)
    out0 = value(samples, "rillet_partition_records_out_total", topic="m", partition=0, spu=leader)
    env = {**mcluster.env, "RILLET_DIRECT_READS": "0"}
    done = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "consume", "m", "-B", "-d"], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == leo
    assert wait_for(lambda: value(scrape(url), "rillet_partition_records_out_total", topic="m", partition=0,
                                  spu=leader) == out0 + leo)
    assert value(scrape(url), "rillet_partition_bytes_out_total", topic="m", partition=0, spu=leader) > 0


def test_bad_requests_get_http_errors_and_the_sc_serves_on(mcluster):
    url = mcluster.metrics_url
    base = url[:-len("/metrics")]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/nothing", timeout=5)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
    assert post.value.code == 405
    host, port = base[len("http://"):].split(":")
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics\r\n\r\n", b"x" * 10_000, b"GET /metr"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(6)
            reply = sock.recv(100)
            assert reply == b"" or reply.startswith(b"HTTP/1.0 400"), reply
    assert scrape(url)


def test_a_killed_leader_counts_an_election_and_a_death(mcluster):
    url = mcluster.metrics_url
    samples = scrape(url)
    leader = int(value(samples, "rillet_partition_leader", topic="m", partition=0))
    elections = value(samples, "rillet_sc_elections_total")
    deaths = value(samples, "rillet_sc_spu_deaths_total")
    timed = value(samples, "rillet_sc_time_to_new_leader_seconds_count")
    mcluster.kill_spu(leader)
    try:
        assert wait_for(lambda: value(scrape(url), "rillet_sc_elections_total") >= elections + 1)
        after = scrape(url)
        assert value(after, "rillet_sc_spu_deaths_total") == deaths + 1
        assert value(after, "rillet_sc_time_to_new_leader_seconds_count") == timed + 1
        assert value(after, "rillet_spu_up", spu=leader) == 0
        new = int(value(after, "rillet_partition_leader", topic="m", partition=0))
        assert new != leader and value(after, "rillet_spu_leaderships_gained_total", spu=new) >= 1
    finally:
        mcluster.start_spu(leader)
    assert wait_for(lambda: value(scrape(url), "rillet_spu_up", spu=leader) == 1)


def settled(url) -> dict:
    """A scrape once both SPUs are up and partition m/0 is online with both copies in sync."""
    def ok():
        s = scrape(url)
        return (value(s, "rillet_spu_up", spu=5001) == value(s, "rillet_spu_up", spu=5002) == 1
                and value(s, "rillet_partition_online", topic="m", partition=0) == 1
                and value(s, "rillet_partition_in_sync_replicas", topic="m", partition=0) == 2)
    assert wait_for(ok)
    return scrape(url)


def test_a_status_report_that_changes_nothing_decided_runs_no_reconcile(mcluster):
    """Heartbeats repeat the last report, and produces move only offsets: the SC stores them
    and leaves deciding to its 0.1 s periodic pass (rillet_sc_reconciles_total by trigger)."""
    url = mcluster.metrics_url
    before = settled(url)
    produce(mcluster.fluvio(), "m", 20)
    time.sleep(1.0)
    after = scrape(url)
    assert value(after, "rillet_partition_in_sync_replicas", topic="m", partition=0) == 2

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert grew("rillet_sc_status_reports_total") >= 6          # 2 SPUs, a heartbeat every 0.25 s each
    assert grew("rillet_sc_reconciles_total", trigger="status-report") == 0
    assert grew("rillet_sc_reconciles_total", trigger="periodic") >= 5


def test_a_status_report_that_changes_the_in_sync_set_is_reconciled_at_once(mcluster):
    """A killed follower leaves the leader's in-sync set the moment its fetch link closes; the
    leader's next report runs a reconcile itself, not only the next periodic pass."""
    url = mcluster.metrics_url
    before = settled(url)
    leader = int(value(before, "rillet_partition_leader", topic="m", partition=0))
    follower = ({5001, 5002} - {leader}).pop()
    mcluster.kill_spu(follower)
    try:
        assert wait_for(lambda: value(scrape(url), "rillet_partition_in_sync_replicas", topic="m", partition=0) == 1)
        after = scrape(url)
        assert (value(after, "rillet_sc_reconciles_total", trigger="status-report")
                > value(before, "rillet_sc_reconciles_total", trigger="status-report"))
        assert int(value(after, "rillet_partition_leader", topic="m", partition=0)) == leader
    finally:
        mcluster.start_spu(follower)
    settled(url)


def test_the_endpoint_survives_an_sc_restart(mcluster):
    url = mcluster.metrics_url
    sc_pid = int(mcluster.paths.sc_pid_file.read_text())
    os.kill(sc_pid, signal.SIGKILL)

    def served_by_new_sc():
        try:
            return int(mcluster.paths.sc_pid_file.read_text()) != sc_pid and bool(scrape(url))
        except (OSError, ValueError, urllib.error.URLError):
            return False
    assert wait_for(served_by_new_sc, timeout=15)
    assert mcluster.metrics_url == url


def test_readme_documents_every_metric_and_nothing_else():
    text = README.read_text()
    section = text[text.index("## Metrics"):]
    section = section[:section.index("\n## ", 1)]
    documented = set(re.findall(r"`(rillet_[a-z_]+)`", section))
    assert documented == {metric.name for metric in METRICS}


def cli(cluster, *args):
    return subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], capture_output=True, text=True,
                          env=cluster.env, timeout=60)


def test_the_cli_shows_the_url_and_guards_it(mcluster):
    url = mcluster.metrics_url
    status = cli(mcluster, "cluster", "status")
    assert status.returncode == 0 and status.stdout.splitlines()[-1] == f"metrics: {url}"
    again = cli(mcluster, "cluster", "start", "--metrics-port", "0")          # any port: the running one is fine
    assert again.returncode == 0 and f"metrics: {url}" in again.stdout, again.stderr
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert cli(mcluster, "cluster", "start", "--metrics-port", str(port)).returncode == 0
    for other in ("off", str(port + 1 if port < 65535 else port - 1)):
        refused = cli(mcluster, "cluster", "start", "--metrics-port", other)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert f"serves metrics on port {port}" in refused.stderr


def test_metrics_off_is_kept_until_turned_on(mcluster):
    """Last in this module: restarts the shared cluster. `off` drops the config; None keeps it."""
    from rillet.broker.launcher import METRICS_OFF
    config = mcluster.paths.sc_dir / "metrics.json"
    assert config.exists()
    mcluster.metrics_port = METRICS_OFF
    mcluster.restart()
    assert mcluster.metrics_url == "" and not config.exists()
    mcluster.metrics_port = None
    mcluster.restart()
    assert mcluster.metrics_url == ""
