"""A new user's first hour (issue 11): what the README's quick start and examples do, run as
written: `--cluster` after the subcommand, `cluster start` twice, `cluster status` when
stopped, quickstart.sh twice, the README's Python example twice, partition list headers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_option_after_the_subcommand(cluster):
    ok(run_cli(cluster, "topic", "create", "fh-where"))
    env = {**cluster.env, "RILLET_CLUSTER": "not-this-one"}
    for args in (["topic", "list", "--cluster", cluster.name], ["--cluster", cluster.name, "topic", "list"],
                 ["--cluster", "not-this-either", "topic", "list", "--cluster", cluster.name]):
        r = subprocess.run([sys.executable, "-m", "rillet.tools.cli", *args], capture_output=True, env=env)
        assert "fh-where" in ok(r), args
    r = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "partition", "list", "fh-where", "--cluster",
                        cluster.name, "-O", "json"], capture_output=True, env=env)
    assert '"fh-where"' in ok(r)
    assert "not-this-one" in one_line_error(
        subprocess.run([sys.executable, "-m", "rillet.tools.cli", "topic", "list"], capture_output=True, env=env), 1)


def test_cluster_start_on_a_running_cluster(cluster):
    again = run_cli(cluster, "cluster", "start")
    assert ok(again).startswith(f"cluster '{cluster.name}' is already running: 1/1 SPU(s) online")
    assert ok(run_cli(cluster, "cluster", "start", "--spus", "1")).startswith(f"cluster '{cluster.name}' is already")
    err = one_line_error(run_cli(cluster, "cluster", "start", "--spus", "3"), 1)
    assert err == (f"error: cluster '{cluster.name}' is already running with 1 SPU(s), not 3: stop it "
                   "(rillet cluster stop), then run rillet cluster start --spus 3")


def test_status_of_a_stopped_cluster_is_an_answer_not_an_error(tmp_path):
    env = {**os.environ, "RILLET_HOME": str(tmp_path), "RILLET_CLUSTER": "stopped-one"}
    r = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "cluster", "status"], capture_output=True, env=env)
    assert r.returncode == 1 and r.stderr == b""
    assert r.stdout.decode() == "cluster 'stopped-one' is not running (start it with: rillet cluster start)\n"


def test_partition_list_headers_are_the_readme_words(cluster):
    ok(run_cli(cluster, "topic", "create", "fh-parts"))
    header = re.split(r" {2,}", ok(run_cli(cluster, "partition", "list", "fh-parts")).splitlines()[0].strip())
    assert header == ["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "IN-SYNC", "STATUS", "SIZE", "LOG START",
                      "HW", "LEO"]
    readme = (ROOT / "README.md").read_text()
    assert "STATUS (`Online`" in readme and "LOG START (first offset still kept)" in readme


def _readme_python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("From Python:\n\n```python\n") + len("From Python:\n\n```python\n")
    return readme[start:readme.index("```", start)]


def test_the_readme_python_example_runs_twice(cluster):
    code = _readme_python_example()
    assert "list_topics([\"orders\"])" in code
    for run in (1, 2):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=cluster.env, timeout=60)
        assert r.returncode == 0, (run, r.stderr.decode())
        lines = r.stdout.decode().splitlines()
        assert len(lines) == 2 and lines[1].split()[1:] == ["user-1", '{"n":', '1}'], (run, lines)


def test_quickstart_runs_twice(tmp_path):
    """tools/quickstart.sh as a user runs it, from a copy whose .venv stands for the installed
    one (pip is a no-op; rillet is this checkout's), so the test does not install anything."""
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "quickstart.sh").write_text((ROOT / "tools" / "quickstart.sh").read_text())
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name, body in (("python", f'exec {sys.executable} "$@"'), ("pip", "exit 0"),
                       ("rillet", f'exec {sys.executable} -m rillet.tools.cli "$@"')):
        (venv / name).write_text(f"#!/bin/sh\n{body}\n")
        (venv / name).chmod(0o755)
    env = {**os.environ, "RILLET_HOME": str(tmp_path / "home"), "RILLET_CLUSTER": "quick"}
    records = ["Hello, rillet", "records are kept in order", "and survive a restart"]
    try:
        for run in (1, 2):
            r = subprocess.run(["bash", str(tmp_path / "tools" / "quickstart.sh")], capture_output=True, env=env,
                               timeout=120)
            assert r.returncode == 0, (run, r.stderr.decode())
            assert r.stdout.decode().splitlines()[-3 * run:] == records * run
        assert "already running" in r.stdout.decode()
    finally:
        subprocess.run([sys.executable, "-m", "rillet.tools.cli", "cluster", "delete"], env=env, capture_output=True)
    from rillet.broker import launcher
    from rillet.ipc.names import ClusterPaths
    assert launcher.cluster_processes(ClusterPaths.for_cluster("quick", tmp_path / "home")) == []


def test_every_error_line_starts_with_error(cluster):
    for args, code in ((["topic", "create", "fh-bad", "-p", "0"], 2), (["nonsense"], 2),
                       (["consume", "fh-nope", "-d"], 1), (["topic", "describe", "fh-nope"], 1)):
        assert one_line_error(run_cli(cluster, *args), code).startswith("error: "), args
    ok(run_cli(cluster, "topic", "create", "fh-keys"))
    r = run_cli(cluster, "produce", "fh-keys", "--key-separator", ":", input=b"k:v\nno separator\n")
    assert r.stderr.decode().startswith("warning: line 2: no key separator ':'; line skipped")


def test_the_readme_quick_start_runs_as_written_after_quickstart_sh(tmp_path):
    """The quick start's shell block, line by line, on a cluster already running (as
    quickstart.sh leaves it): `cluster start` is not an error, and `consume -A` shows the
    keyed records, whatever partition they hashed to."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Quick start"):]
    block = block[block.index("```sh\n") + 6:block.index("```\n", block.index("```sh\n"))]
    lines = [line for line in block.splitlines() if line.startswith("rillet") or line.startswith(("echo", "printf"))]
    assert lines[0].startswith("rillet cluster start") and any(" -A " in line for line in lines)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rillet").write_text(f'#!/bin/sh\nexec {sys.executable} -m rillet.tools.cli "$@"\n')
    (bin_dir / "rillet").chmod(0o755)
    env = {**os.environ, "RILLET_HOME": str(tmp_path / "home"), "RILLET_CLUSTER": "readme",
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        ok(subprocess.run(["rillet", "cluster", "start"], capture_output=True, env=env, timeout=60))
        outputs = {}
        for line in lines:
            r = subprocess.run(line, shell=True, capture_output=True, env=env, timeout=60)
            outputs[line.split("#")[0].strip()] = ok(r)
        consumed = [v for k, v in outputs.items() if k.startswith("rillet consume")][0]
        assert sorted(consumed.splitlines()) == ["[alice] 1", "[bob] 2", "[null] hello"]
    finally:
        subprocess.run(["rillet", "cluster", "delete"], capture_output=True, env=env)
