"""Profiles (issue 11): `cluster start` makes its cluster current, `profile switch` moves where
the CLI and the API go, `--cluster` and $RILLET_CLUSTER still override, and one process talks
to two clusters at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli.test_cli import ok, one_line_error


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two running clusters under one home, each with a topic of its own."""
    from rillet.testing import LocalCluster
    home = tmp_path_factory.mktemp("profiles")
    with LocalCluster(home=home, name="alpha") as a, LocalCluster(home=home, name="beta") as b:
        a.create_topic("only-in-alpha")
        b.create_topic("only-in-beta")
        yield home, a, b
    assert not a.leftovers() and not b.leftovers()


def _cli(home, *args, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "RILLET_CLUSTER"}
    env.update(RILLET_HOME=str(home), **extra_env)
    return subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], capture_output=True, env=env, timeout=60)


def _topics(home, *args, **env) -> list[str]:
    return [t["name"] for t in json.loads(ok(_cli(home, *args, "topic", "list", "-O", "json", **env)))]


def test_switching_changes_where_cli_and_api_go(two, monkeypatch):
    home, _a, _b = two
    assert "no current profile" in one_line_error(_cli(home, "profile", "current"), 1)
    assert "cluster 'local' is not running" in one_line_error(_cli(home, "topic", "list"), 1)   # no profile yet
    ok(_cli(home, "--cluster", "alpha", "cluster", "start"))          # already running: made current all the same
    ok(_cli(home, "--cluster", "beta", "cluster", "start"))
    assert ok(_cli(home, "profile", "current")) == "beta\n"
    assert json.loads(ok(_cli(home, "profile", "list", "-O", "json"))) == [
        {"current": False, "profile": "alpha", "cluster": "alpha"},
        {"current": True, "profile": "beta", "cluster": "beta"}]
    assert _topics(home) == ["only-in-beta"]

    ok(_cli(home, "profile", "switch", "alpha"))
    assert ok(_cli(home, "profile", "current")) == "alpha\n"
    assert _topics(home) == ["only-in-alpha"]
    assert _topics(home, "--cluster", "beta") == ["only-in-beta"]       # --cluster overrides
    assert _topics(home, RILLET_CLUSTER="beta") == ["only-in-beta"]     # so does $RILLET_CLUSTER

    from rillet import FluvioAdmin, FluvioConfig
    monkeypatch.setenv("RILLET_HOME", str(home))
    monkeypatch.delenv("RILLET_CLUSTER", raising=False)
    assert FluvioConfig.load().cluster == "alpha"
    with FluvioAdmin.connect() as admin:
        assert [t.name() for t in admin.all_topics()] == ["only-in-alpha"]
    ok(_cli(home, "profile", "switch", "beta"))
    assert FluvioConfig.load().cluster == "beta"
    assert FluvioConfig.load("alpha").cluster == "alpha"
    with FluvioAdmin.connect() as admin:
        assert [t.name() for t in admin.all_topics()] == ["only-in-beta"]

    assert "profile 'gamma' not found (profiles: alpha, beta)" in one_line_error(
        _cli(home, "profile", "switch", "gamma"), 1)
    r = _cli(home, "profile", "delete", "beta")
    assert ok(r) == "" and "this was the current profile" in r.stderr.decode()
    assert "no current profile" in one_line_error(_cli(home, "profile", "current"), 1)
    assert [p["profile"] for p in json.loads(ok(_cli(home, "profile", "list", "-O", "json")))] == ["alpha"]
    assert "cluster 'local' is not running" in one_line_error(_cli(home, "topic", "list"), 1)   # back to 'local'


def test_two_clusters_from_one_process(two):
    from rillet import Fluvio, FluvioAdmin, FluvioConfig, Offset
    home, _a, _b = two
    clients = {name: Fluvio.connect_with_config(FluvioConfig(name, home)) for name in ("alpha", "beta")}
    try:
        for name, fluvio in clients.items():
            with fluvio.topic_producer(f"only-in-{name}") as producer:
                producer.send_string(f"hello {name}")
        for name, fluvio in clients.items():
            stream = fluvio.partition_consumer(f"only-in-{name}", 0).stream(Offset.beginning())
            assert next(iter(stream)).value_string() == f"hello {name}"
        for name in clients:
            with FluvioAdmin.connect_with_config(FluvioConfig(name, home)) as admin:
                assert [t.name() for t in admin.all_topics()] == [f"only-in-{name}"]
    finally:
        for fluvio in clients.values():
            fluvio.close()


def test_cluster_start_makes_a_profile_and_delete_drops_it(tmp_path):
    home = tmp_path / "home"
    try:
        assert ok(_cli(home, "--cluster", "gamma", "cluster", "start")).startswith("started cluster 'gamma'")
        assert ok(_cli(home, "profile", "current")) == "gamma\n"
        ok(_cli(home, "topic", "create", "made-in-gamma"))                # no --cluster: the current profile
        assert _topics(home, "--cluster", "gamma") == ["made-in-gamma"]
    finally:
        ok(_cli(home, "--cluster", "gamma", "cluster", "delete"))
    assert json.loads(ok(_cli(home, "profile", "list", "-O", "json"))) == []
    assert "no current profile" in one_line_error(_cli(home, "profile", "current"), 1)
