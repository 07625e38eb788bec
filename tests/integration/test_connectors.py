"""Connectors (issue 12) on a real cluster, against a real local HTTP server (tests/integration/_web.py).

The user connectors at the top are defined here and run from this very file through
`rillet connector create` (``python.module`` names it), as a user's own would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rillet import ConsumerConfig, DeliverySemantic, Isolation, Offset, TopicProducerConfigBuilder
from rillet.connectors import sink, source
from tests.waiting import wait_for

# Only rillet and pytest at the top: connector processes import this file (python.module), from
# whatever directory the cluster was started in. The local HTTP server is imported where used.


# --- a user's own connectors --------------------------------------------------------------------

@sink("collect-sink", batch=True)
def collect(records, ctx):
    """Appends each batch's values, one per line, to the file its section names."""
    with open(ctx.config["path"], "a") as f:
        f.writelines(r.value_string() + "\n" for r in records)
    if "token" in ctx.config:
        ctx.log.info("token is %s", ctx.config["token"])        # the runtime must redact this


@sink("crash-sink")
def crash(record, ctx):
    raise RuntimeError(f"cannot take offset {record.offset()}")


@source("count-source")
async def count(ctx):
    for i in range(ctx.config.get("count", 5)):
        yield (f"k{i}", f"n{i}")


# --- helpers ------------------------------------------------------------------------------------

SEED_YAML = """\
apiVersion: 0.2.0
meta:
  version: 0.2.7
  name: my-http-sink
  type: http-sink
  topic:
    meta:
      name: http-sink-topic
  consumer:
    id: my-http-sink
    offset:
      strategy: auto
      start: beginning
      flush-period:
        secs: 2
        nanos: 0
http:
  endpoint: "http://127.0.0.1/post"
"""


def sink_yaml(name: str, topic: str, endpoint: str, *, flush: str = "secs: 0\n        nanos: 200000000",
              http_extra: str = "") -> str:
    return f"""\
apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: {name}
  type: http-sink
  topic: {topic}
  consumer:
    id: {name}
    offset:
      strategy: auto
      start: beginning
      flush-period:
        {flush}
http:
  endpoint: "{endpoint}"
{http_extra}"""


def run_cli(cluster, *args: str, timeout: float = 60, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], capture_output=True,
                          env={**cluster.env, **(env or {})}, timeout=timeout)


@pytest.fixture
def web():
    from tests.integration._web import Web
    server = Web()
    yield server
    server.close()


@pytest.fixture
def made(cluster):
    """Names of connectors a test created: deleted after it, whatever happened."""
    names: list[tuple] = []
    yield names
    for c, name in names:
        run_cli(c, "connector", "delete", name)


def create(cluster, tmp_path: Path, text: str, *extra: str, made=None, name=None, env=None):
    path = tmp_path / f"{name or 'connector'}.yaml"
    path.write_text(text)
    result = run_cli(cluster, "connector", "create", "--config", str(path), *extra, env=env)
    if made is not None and result.returncode == 0:
        made.append((cluster, name))
    return result


def ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def listing(cluster) -> dict:
    return {row["name"]: row for row in json.loads(ok(run_cli(cluster, "connector", "list", "-O", "json")))}


def produce(cluster, topic: str, values) -> None:
    config = (TopicProducerConfigBuilder().isolation(Isolation.ReadCommitted)
              .delivery_semantic(DeliverySemantic.AtLeastOnce).build())
    with cluster.fluvio().topic_producer_with_config(topic, config) as producer:
        outs = [producer.send(None, v) for v in values]
        producer.flush()
        for out in outs:
            out.wait()


def topic_values(cluster, topic: str) -> list[str]:
    config = ConsumerConfig()
    config.disable_continuous()
    stream = cluster.fluvio().partition_consumer(topic, 0).stream_with_config(Offset.beginning(), config)
    return [r.value_string() for r in stream]


# --- http-sink ----------------------------------------------------------------------------------

def test_the_seeds_yaml_runs_unchanged_and_delivers_every_record(cluster, web, made, tmp_path):
    cluster.create_topic("http-sink-topic")
    first = [f"r{i}" for i in range(50)]
    produce(cluster, "http-sink-topic", first)
    text = SEED_YAML.replace("http://127.0.0.1/post", f"{web.url}/post")
    assert text.count(web.url) == 1
    out = ok(create(cluster, tmp_path, text, made=made, name="my-http-sink"))
    assert "connector 'my-http-sink' created (http-sink on topic 'http-sink-topic', pid " in out
    wait_for(lambda: len(web.bodies()) >= 50, what="the first 50 records")
    later = [f"s{i}" for i in range(50)]
    produce(cluster, "http-sink-topic", later)
    wait_for(lambda: len(web.bodies()) >= 100, what="all 100 records")
    assert [b.decode() for b in web.bodies()] == first + later       # in order, each once
    path, headers, _ = web.received[0]
    assert path == "/post" and headers["Content-Type"] == "text/html"    # Fluvio's default header
    # offsets flushed every 2 s: the stored last-seen offset reaches 99, lag 0
    row = wait_for(lambda: (r := listing(cluster)["my-http-sink"])["offset"] == 99 and r, timeout=10, what="offset 99")
    assert (row["type"], row["status"], row["restarts"], row["lag"]) == ("http-sink", "running", 0, 0)
    assert row["config"]["meta"]["consumer"]["id"] == "my-http-sink"
    table = ok(run_cli(cluster, "connector", "list"))
    assert table.split("\n")[0].split() == ["NAME", "TYPE", "STATUS", "PID", "RESTARTS", "OFFSET", "LAG"]
    assert "starting sink http-sink" in ok(run_cli(cluster, "connector", "logs", "my-http-sink"))

    # cluster stop stops it (its offsets flushed on the way out), cluster start runs it again
    old_pid = row["pid"]
    cluster.restart()
    row = wait_for(lambda: (r := listing(cluster)["my-http-sink"])["status"] == "running" and r["pid"] and r,
                   what="the connector back after cluster start")
    assert row["pid"] != old_pid
    produce(cluster, "http-sink-topic", ["after-restart"])
    wait_for(lambda: len(web.bodies()) >= 101, what="the record produced after the restart")
    time.sleep(0.3)
    assert [b.decode() for b in web.bodies()] == first + later + ["after-restart"]   # nothing resent


def test_sigkill_mid_stream_restarts_and_resumes_from_the_stored_offset(cluster, web, made, tmp_path):
    cluster.create_topic("kill-sink")
    values = [f"v{i}" for i in range(300)]
    produce(cluster, "kill-sink", values)
    web.delay_s = 0.005                        # ~1.5 s of delivery: time to kill it in the middle
    ok(create(cluster, tmp_path, sink_yaml("kill-sink", "kill-sink", f"{web.url}/in"), made=made, name="kill-sink"))
    wait_for(lambda: len(web.bodies()) >= 120, what="120 records delivered")
    pid = listing(cluster)["kill-sink"]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    row = wait_for(lambda: (r := listing(cluster)["kill-sink"])["pid"] not in (0, pid) and r, what="a new process")
    restart_s = time.monotonic() - killed
    assert row["restarts"] == 1
    wait_for(lambda: set(values) <= {b.decode() for b in web.bodies()}, what="every record", timeout=30)
    got = [b.decode() for b in web.bodies()]
    assert set(got) == set(values)                     # nothing missing
    resent = len(got) - len(values)
    # it resumed from its stored offset (flushed every 200 ms), not from the beginning
    assert 0 <= resent < 100, f"{resent} records sent twice"
    print(f"\nconnector SIGKILL -> new process listed: {restart_s * 1000:.0f} ms; {resent} records resent")


def test_leader_kill_under_a_running_sink_loses_nothing(web, tmp_path):
    from rillet.testing import LocalCluster
    with LocalCluster(spus=2, home=tmp_path / "rf2") as c2:
        c2.create_topic("rf2", replication=2, min_in_sync_replicas=1)
        produce(c2, "rf2", [f"a{i}" for i in range(150)])
        web.delay_s = 0.003
        ok(create(c2, tmp_path, sink_yaml("rf2-sink", "rf2", f"{web.url}/in")))
        wait_for(lambda: len(web.bodies()) >= 40, what="40 records delivered")
        with c2.admin() as admin:
            leader = admin.list_partitions(["rf2"])[0].leader
        c2.kill_spu(leader)
        produce(c2, "rf2", [f"b{i}" for i in range(150)])      # acknowledged by the new leader
        expected = {f"a{i}" for i in range(150)} | {f"b{i}" for i in range(150)}
        wait_for(lambda: expected <= {b.decode() for b in web.bodies()}, timeout=40, what="every acknowledged record")
    assert not c2.leftovers()


def test_client_errors_skip_or_stop_and_secrets_stay_secret(cluster, web, made, tmp_path):
    cluster.create_topic("err-sink")
    web.status = lambda body: 400 if body == b"bad" else 200
    produce(cluster, "err-sink", ["one", "bad", "two"])
    secrets = tmp_path / "secrets.env"
    secrets.write_text("HTTP_TOKEN=tok-5ecret-991\n")
    extra = '  headers:\n    - "Authorization: token ${{ secrets.HTTP_TOKEN }}"\n'
    ok(create(cluster, tmp_path, sink_yaml("skipper", "err-sink", f"{web.url}/in", http_extra=extra),
              "--secrets", str(secrets), made=made, name="skipper"))
    wait_for(lambda: len(web.bodies()) >= 2, what="the good records")
    assert web.bodies() == [b"one", b"two"]
    assert web.received[0][1]["Authorization"] == "token tok-5ecret-991"
    logs = ok(run_cli(cluster, "connector", "logs", "skipper"))
    assert "refused (HTTP 400); skipped (on-client-error: skip)" in logs
    listed = ok(run_cli(cluster, "connector", "list", "-O", "json"))
    assert "${{ secrets.HTTP_TOKEN }}" in listed
    as_yaml = ok(run_cli(cluster, "connector", "list", "-O", "yaml"))
    assert "- name: " in as_yaml and "HTTP_TOKEN" in as_yaml
    everything = logs + listed + as_yaml + cluster.paths.sc_log_file.read_text()
    assert "tok-5ecret-991" not in everything
    kept = cluster.paths.sc_dir / "connectors" / "skipper.json"       # the one place the value is kept
    assert "tok-5ecret-991" in kept.read_text() and kept.stat().st_mode & 0o777 == 0o600

    # stop: the connector stops for good at the 4xx, not restarted, the record not committed
    ok(create(cluster, tmp_path, sink_yaml("stopper", "err-sink", f"{web.url}/in", http_extra="  on-client-error: stop\n"),
              "--secrets", str(secrets), made=made, name="stopper"))
    row = wait_for(lambda: (r := listing(cluster)["stopper"])["status"] == "failed" and r, what="failed")
    assert (row["pid"], row["restarts"], row["last_exit"]) == (0, 0, "exit code 3")
    assert "stopping (on-client-error: stop)" in ok(run_cli(cluster, "connector", "logs", "stopper"))


def test_an_endpoint_outage_holds_the_stream_and_a_stop_is_still_prompt(cluster, web, made, tmp_path):
    cluster.create_topic("outage")
    produce(cluster, "outage", ["p", "q"])
    web.status = lambda body: 503
    ok(create(cluster, tmp_path, sink_yaml("outage-sink", "outage", f"{web.url}/in",
                                           http_extra="  retry-max-delay: 100ms\n"), made=made, name="outage-sink"))
    wait_for(lambda: "not delivered (HTTP 503); retrying" in ok(run_cli(cluster, "connector", "logs", "outage-sink")),
             what="the retry logged")
    time.sleep(0.5)
    assert listing(cluster)["outage-sink"]["offset"] == -1          # nothing skipped, nothing committed
    web.status = lambda body: 200                                   # the endpoint is back: the stream goes on
    wait_for(lambda: web.bodies() == [b"p", b"q"], what="p and q delivered once the endpoint is back")
    web.status = lambda body: 503
    produce(cluster, "outage", ["r"])
    wait_for(lambda: ok(run_cli(cluster, "connector", "logs", "outage-sink")).count("retrying") >= 2, what="retrying r")
    started = time.monotonic()
    ok(run_cli(cluster, "connector", "delete", "outage-sink"))
    made.clear()
    assert time.monotonic() - started < 3.0          # a clean stop (SIGKILL would come after 5 s)
    logs = cluster.paths.log_dir / "connector-outage-sink.log"
    assert "sink stopped after 2 records" in logs.read_text()


# --- http-source --------------------------------------------------------------------------------

def test_http_source_polls_and_streams_into_a_topic(cluster, web, made, tmp_path):
    ok(create(cluster, tmp_path, f"""\
apiVersion: 0.1.0
meta:
  version: 0.1.0
  name: poller
  type: http-source
  topic: polled
  create-topic: true
  producer:
    linger: 1ms
    compression: lz4
http:
  endpoint: "{web.url}/poll"
  interval: 100ms
""", made=made, name="poller"))
    got = wait_for(lambda: len(v := topic_values(cluster, "polled")) >= 5 and v, what="5 polls")
    assert got[:5] == [f"tick-{i}" for i in range(1, 6)]
    row = listing(cluster)["poller"]
    assert (row["type"], row["offset"], row["lag"]) == ("http-source", -1, -1)

    cluster.create_topic("streamed")
    web.lines = [b"alpha", b"beta", b"gamma"]
    ok(create(cluster, tmp_path, f"""\
apiVersion: 0.1.0
meta:
  version: 0.1.0
  name: streamer
  type: http-source
  topic: streamed
http:
  endpoint: "{web.url}/stream"
  stream: true
  delimiter: "\\n"
  interval: 30s
""", made=made, name="streamer"))
    wait_for(lambda: topic_values(cluster, "streamed") == ["alpha", "beta", "gamma"], what="the streamed lines")


# --- your own connector -------------------------------------------------------------------------

def test_a_user_connector_from_this_file_runs_through_connector_create(cluster, made, tmp_path):
    cluster.create_topic("user-src")
    ok(create(cluster, tmp_path, f"""\
apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: counter
  type: count-source
  topic: user-src
python:
  module: {__file__}
count-source:
  count: 7
""", made=made, name="counter"))
    wait_for(lambda: len(topic_values(cluster, "user-src")) == 7, what="7 records from the user source")
    row = wait_for(lambda: (r := listing(cluster)["counter"])["status"] == "finished" and r, what="finished")
    assert row["pid"] == 0 and row["restarts"] == 0                 # a source that ended is not restarted

    out = tmp_path / "collected.txt"
    ok(create(cluster, tmp_path, f"""\
apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: collector
  type: collect-sink
  topic: user-src
  consumer:
    id: collector
    offset:
      strategy: auto
      start: beginning
      flush-period:
        secs: 0
        nanos: 100000000
python:
  module: ./{Path(__file__).name}
collect-sink:
  path: {out}
  token: "${{{{ secrets.USER_TOKEN }}}}"
""".replace("./test_connectors.py", str(Path(__file__))), made=made, name="collector",
              env={"USER_TOKEN": "env-7oken-553"}))    # no --secrets file: taken from the environment
    wait_for(lambda: out.exists() and out.read_text().split() == [f"n{i}" for i in range(7)], what="collected")
    row = wait_for(lambda: (r := listing(cluster)["collector"])["offset"] == 6 and r, what="offset 6")
    assert row["lag"] == 0
    logs = ok(run_cli(cluster, "connector", "logs", "collector"))
    assert "token is ***" in logs and "env-7oken-553" not in logs

    # an SC restart adopts the running connector: same pid, nothing doubled or leaked
    pid = row["pid"]
    os.kill(int(cluster.paths.sc_pid_file.read_text()), signal.SIGKILL)
    wait_for(lambda: _sc_back(cluster), what="the SC back")
    row = wait_for(lambda: (r := listing(cluster).get("collector")) and r, what="listing")
    assert (row["pid"], row["status"]) == (pid, "running")
    from rillet.broker.launcher import CONNECTOR, cluster_processes
    assert sorted(p.pid for p in cluster_processes(cluster.paths, modules=(CONNECTOR,))) == [pid]


def test_a_crashing_connector_is_restarted_with_backoff(cluster, made, tmp_path):
    cluster.create_topic("crash-topic")
    produce(cluster, "crash-topic", ["x"])
    ok(create(cluster, tmp_path, f"""\
apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: crasher
  type: crash-sink
  topic: crash-topic
  consumer: {{id: crasher, offset: {{strategy: auto, start: beginning}}}}
python:
  module: {__file__}
""", made=made, name="crasher"))
    started = time.monotonic()
    row = wait_for(lambda: (r := listing(cluster)["crasher"])["restarts"] >= 3 and r, what="3 restarts")
    # delays 0, 0.2, 0.4 s between the deaths (each after a start-up): never a tight loop
    assert time.monotonic() - started >= 0.6
    assert row["last_exit"] == "exit code 1" and row["offset"] == -1        # never committed
    logs = ok(run_cli(cluster, "connector", "logs", "crasher"))
    assert "RuntimeError: cannot take offset 0" in logs
    assert ok(run_cli(cluster, "cluster", "status"))                         # the SC is fine


def _sc_back(cluster) -> bool:
    return run_cli(cluster, "connector", "list").returncode == 0


# --- refused configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("edit, field", [
    (("type: http-sink", "type: gopher-sink"), "meta.type: unknown connector type 'gopher-sink'"),
    (('  endpoint: "http://127.0.0.1/post"\n', "  method: POST\n"), "http.endpoint: missing"),
    (("secs: 2", "secs: two"), "meta.consumer.offset.flush-period.secs: "),
    (("name: http-sink-topic", "name: no-such-topic"), "meta.topic: topic 'no-such-topic' does not exist"),
    (("apiVersion: 0.2.0", "apiVersion: [oops"), "not valid YAML"),
])
def test_a_bad_config_is_refused_with_the_field_named(cluster, tmp_path, edit, field):
    text = SEED_YAML.replace(*edit)
    assert text != SEED_YAML
    result = create(cluster, tmp_path, text)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr.decode()
    assert lines[0].startswith("error: ") and field in lines[0], lines[0]
    assert "my-http-sink" not in listing(cluster)          # nothing kept


def test_missing_secret_and_unknown_connector(cluster, tmp_path):
    text = SEED_YAML.replace('  endpoint: "http://127.0.0.1/post"\n',
                             '  endpoint: "http://127.0.0.1/post"\n  headers:\n    - "X-Key: ${{ secrets.NOT_SET_ANYWHERE }}"\n')
    result = create(cluster, tmp_path, text)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: secrets.NOT_SET_ANYWHERE: no value")
    user = SEED_YAML.replace("type: http-sink", "type: nowhere-sink") + "python:\n  module: ./missing.py\n"
    result = create(cluster, tmp_path, user)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: python.module: no such file ")
    user = SEED_YAML.replace("type: http-sink", "type: nowhere-sink") + f"python:\n  module: {__file__}\n"
    result = create(cluster, tmp_path, user)
    assert result.returncode == 1
    assert "does not register 'nowhere-sink'" in result.stderr.decode()
    for action in ("delete", "logs"):
        result = run_cli(cluster, "connector", action, "nobody")
        assert result.returncode == 1 and result.stderr.decode() == "error: connector 'nobody' not found\n"
