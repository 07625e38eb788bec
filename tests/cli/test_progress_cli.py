"""Progress of `rillet produce -f FILE`: a line on a terminal's stderr, nothing in a pipe."""

from __future__ import annotations

import sys

from tests.cli._terminal import stderr_on_a_terminal
from tests.cli.test_cli import ok
from tests.conftest import run_cli

RECORDS = 5000


def _file(tmp_path):
    path = tmp_path / "records.txt"
    path.write_bytes(b"".join(b"record-%06d\n" % i for i in range(RECORDS)))
    return path


def test_produce_from_a_file_is_quiet_in_a_pipe(cluster, tmp_path):
    ok(run_cli(cluster, "topic", "create", "progress-pipe"))
    result = run_cli(cluster, "produce", "progress-pipe", "-f", str(_file(tmp_path)))
    assert ok(result) == "" and result.stderr == b""


def test_produce_from_a_file_shows_progress_on_a_terminal(cluster, tmp_path):
    ok(run_cli(cluster, "topic", "create", "progress-tty"))
    rc, seen = stderr_on_a_terminal([sys.executable, "-m", "rillet.tools.cli", "produce", "progress-tty", "-f",
                                     str(_file(tmp_path))], env=cluster.env, timeout_s=30)
    assert rc == 0
    last = seen.decode().rstrip("\r\n").split("\r")[-1]
    assert last.startswith(f"produce progress-tty: {RECORDS:,} records, 70.0 kB of 70.0 kB (100%), "), seen
    assert seen.endswith(b"\r\n")
