"""The `rillet` command line against a real cluster: output contracts and bad input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def one_line_error(result, code=None):
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code
    err = result.stderr.decode().strip()
    assert err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def test_produce_and_consume_lines(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-hello"))
    ok(run_cli(cluster, "produce", "cli-hello", input=b"One\nTwo\n"))
    ok(run_cli(cluster, "produce", "cli-hello", input=b"Three\n"))
    out = ok(run_cli(cluster, "consume", "cli-hello", "-B", "-d"))
    assert out.splitlines() == ["One", "Two", "Three"]
    assert ok(run_cli(cluster, "consume", "cli-hello", "-T", "2", "-d")).splitlines() == ["Two", "Three"]
    assert ok(run_cli(cluster, "consume", "cli-hello", "-o", "1", "-d")).splitlines() == ["Two", "Three"]
    assert ok(run_cli(cluster, "consume", "cli-hello", "-B", "--end-offset", "1")).splitlines() == ["One", "Two"]


def test_keys_and_json_output(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-keys"))
    ok(run_cli(cluster, "produce", "cli-keys", "--key-separator", ":", input=b"alice:1\nbob:2\n"))
    ok(run_cli(cluster, "produce", "cli-keys", input=b"nokey\n"))
    assert ok(run_cli(cluster, "consume", "cli-keys", "-B", "-d", "-k")).splitlines() == ["[alice] 1", "[bob] 2", "[null] nokey"]
    rows = [json.loads(l) for l in ok(run_cli(cluster, "consume", "cli-keys", "-B", "-d", "-O", "json")).splitlines()]
    assert [(r["offset"], r["partition"], r["key"], r["value"]) for r in rows] == [
        (0, 0, "alice", "1"), (1, 0, "bob", "2"), (2, 0, None, "nokey")]
    assert all(isinstance(r["timestamp"], int) for r in rows)


def test_listings_in_json(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-list", "-p", "2", "--segment-size", "1MiB", "--compression-type", "lz4"))
    topics = json.loads(ok(run_cli(cluster, "topic", "list", "-O", "json")))
    mine = [t for t in topics if t["name"] == "cli-list"][0]
    assert (mine["partitions"], mine["segment_size"], mine["compression_type"]) == (2, 1024 * 1024, "lz4")
    parts = json.loads(ok(run_cli(cluster, "partition", "list", "cli-list", "-O", "json")))
    assert [(p["topic"], p["partition"], p["status"]) for p in parts] == [("cli-list", 0, "Online"), ("cli-list", 1, "Online")]
    assert {"leader", "replicas", "hw", "leo"} <= set(parts[0])
    spus = json.loads(ok(run_cli(cluster, "cluster", "spu", "list", "-O", "json")))
    assert [(s["id"], s["status"]) for s in spus] == [(5001, "Online")]
    assert json.loads(ok(run_cli(cluster, "spu", "list", "-O", "json"))) == spus
    assert "cli-list" in ok(run_cli(cluster, "topic", "list"))
    assert "name: \"cli-list\"" in ok(run_cli(cluster, "topic", "describe", "cli-list", "-O", "yaml"))
    status = ok(run_cli(cluster, "cluster", "status"))
    topics = len(topics)
    assert "running" in status and f" {topics} topic{'' if topics == 1 else 's'}, " in status, status


def test_lz4_topic_refuses_other_codecs(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-lz4only", "--compression-type", "lz4"))
    ok(run_cli(cluster, "produce", "cli-lz4only", "--compression", "lz4", input=b"fine\n"))
    one_line_error(run_cli(cluster, "produce", "cli-lz4only", "--compression", "gzip", input=b"refused\n"), 1)
    assert ok(run_cli(cluster, "consume", "cli-lz4only", "-B", "-d")).splitlines() == ["fine"]


@pytest.mark.parametrize("name", ["../etc", "UPPER", "a" * 64, "-lead", "a_b"])
def test_invalid_topic_names(cluster, name):
    one_line_error(run_cli(cluster, "topic", "create", name), 2)
    assert name not in ok(run_cli(cluster, "topic", "list"))


@pytest.mark.parametrize("args", [
    ["topic", "create", "cli-bad", "-p", "-1"],
    ["topic", "create", "cli-bad", "-p", "0"],
    ["topic", "create", "cli-bad", "-r", "x"],
    ["topic", "create", "cli-bad", "--compression-type", "brotli"],
    ["topic", "create", "cli-bad", "--segment-size", "lots"],
    ["produce", "cli-hello", "--compression", "brotli"],
    ["consume", "cli-hello", "-o", "-3"],
    ["nonsense"],
])
def test_usage_errors(cluster, args):
    one_line_error(run_cli(cluster, *args), 2)
    assert "cli-bad" not in ok(run_cli(cluster, "topic", "list"))


def test_operation_errors(cluster):
    err = one_line_error(run_cli(cluster, "produce", "cli-missing", input=b"x\n"), 1)
    assert "cli-missing" in err and "not found" in err
    one_line_error(run_cli(cluster, "consume", "cli-missing", "-d"), 1)
    one_line_error(run_cli(cluster, "topic", "delete", "cli-missing"), 1)
    ok(run_cli(cluster, "topic", "create", "cli-twice"))
    assert "already exists" in one_line_error(run_cli(cluster, "topic", "create", "cli-twice"), 1)
    one_line_error(run_cli(cluster, "consume", "cli-twice", "-p", "5", "-d"), 1)
    one_line_error(run_cli(cluster, "topic", "create", "cli-rf", "-r", "2"), 1)


def test_not_running_cluster_is_a_clear_error(cluster, tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "RILLET_HOME": str(tmp_path), "RILLET_CLUSTER": "nothing-here"}
    r = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "topic", "list"], capture_output=True, env=env)
    assert "not running" in one_line_error(r, 1)


def test_delete_topic(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-gone"))
    ok(run_cli(cluster, "produce", "cli-gone", input=b"x\n"))
    ok(run_cli(cluster, "topic", "delete", "cli-gone"))
    assert "cli-gone" not in ok(run_cli(cluster, "topic", "list"))
    assert not cluster.paths.replica_dir(5001, "cli-gone", 0).exists()


@pytest.mark.parametrize("moment", ["supervisor", "sc", "spu"])
def test_ctrl_c_during_cluster_start_leaves_nothing(tmp_path, moment):
    """Ctrl-C as soon as the first process of ``moment``'s kind is seen: while the launcher
    may still be inside Popen, while the supervisor starts the SC (a supervisor killed then
    left an orphan SC that started a new supervisor and SPUs: a whole cluster), while the SC
    starts SPUs."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from rillet.broker import launcher
    from rillet.ipc.names import ClusterPaths
    env = {**os.environ, "RILLET_HOME": str(tmp_path), "RILLET_CLUSTER": "interrupted"}
    proc = subprocess.Popen([sys.executable, "-m", "rillet.tools.cli", "cluster", "start", "--spus", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    paths = ClusterPaths.for_cluster("interrupted", tmp_path)
    module = {"supervisor": launcher.SUPERVISOR, "sc": launcher.SC, "spu": launcher.SPU}[moment]
    try:
        deadline = time.monotonic() + 20
        while not launcher.cluster_processes(paths, modules=(module,)) and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert launcher.cluster_processes(paths) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        launcher.stop_cluster(paths)          # a failure must not leave the cluster behind
    assert not os.path.exists("/dev/shm" + paths.shm_name)
    assert not paths.runtime_dir.exists()
    # SPUs started but not registered yet cannot hear Shutdown: they get SIGTERM, not 5 s and SIGKILL.
    log = paths.sc_log_file.read_text() if paths.sc_log_file.exists() else ""
    assert "did not stop" not in log, log


def test_cluster_start_refuses_a_bad_metrics_port(tmp_path):
    """Out of range: usage error (2); in use: operation error (1), nothing started."""
    import socket
    import subprocess
    import sys
    from rillet.testing import LocalCluster
    cluster = LocalCluster(home=tmp_path)          # not started: its paths and env only
    start = [sys.executable, "-m", "rillet.tools.cli", "cluster", "start", "--metrics-port"]
    err = one_line_error(subprocess.run(start + ["70000"], capture_output=True, env=cluster.env, timeout=60), 2)
    assert "port must be 0 to 65535" in err
    assert "expected a port" in one_line_error(
        subprocess.run(start + ["http"], capture_output=True, env=cluster.env, timeout=60), 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(start + [str(port)], capture_output=True, env=cluster.env, timeout=60)
    err = one_line_error(result, 1)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "in use" in err, err
    assert cluster.leftovers() == []
