"""`rillet topic update` and `rillet topic add-partition`: output, exit codes, one-line errors."""

from __future__ import annotations

import json

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli


def test_topic_update_and_add_partition(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-upd"))
    assert ok(run_cli(cluster, "topic", "update", "cli-upd", "--retention-time", "2h", "--flush", "every-batch",
                      "--segment-size", "1MiB", "--compression-type", "gzip")) == 'topic "cli-upd" updated\n'
    row = json.loads(ok(run_cli(cluster, "topic", "describe", "cli-upd", "-O", "json")))[0]
    assert (row["retention_time_s"], row["flush"], row["segment_size"], row["compression_type"]) == \
        (7200, "every-batch", 1048576, "gzip")
    assert ok(run_cli(cluster, "topic", "update", "cli-upd", "--flush-interval", "250ms")) == 'topic "cli-upd" updated\n'
    row = json.loads(ok(run_cli(cluster, "topic", "describe", "cli-upd", "-O", "json")))[0]
    assert (row["flush"], row["flush_interval_ms"]) == ("interval", 250)

    assert "nothing to update" in one_line_error(run_cli(cluster, "topic", "update", "cli-upd"), 2)
    assert one_line_error(run_cli(cluster, "topic", "update", "cli-none", "--retention-time", "1h"), 1) == \
        "error: Topic not found: cli-none"
    assert "at least 10 seconds" in one_line_error(run_cli(cluster, "topic", "update", "cli-upd", "--retention-time", "5s"), 1)

    assert ok(run_cli(cluster, "topic", "add-partition", "cli-upd", "-c", "2")) == \
        'added 2 partition(s) to topic "cli-upd": it has 3\n'
    assert ok(run_cli(cluster, "topic", "add-partition", "cli-upd")).endswith("it has 4\n")
    parts = json.loads(ok(run_cli(cluster, "partition", "list", "cli-upd", "-O", "json")))
    assert [(p["partition"], p["status"]) for p in parts] == [(i, "Online") for i in range(4)]
    one_line_error(run_cli(cluster, "topic", "add-partition", "cli-upd", "-c", "0"), 2)
    assert "over the limit of 1024" in one_line_error(run_cli(cluster, "topic", "add-partition", "cli-upd", "-c", "1021"), 1)
