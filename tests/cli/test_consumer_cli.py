"""`rillet consume -c`, `rillet consumer list|delete`: the seed walk-through, command by command."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli

HEADER = ["CONSUMER", "TOPIC", "PARTITION", "OFFSET", "LAG", "LAST SEEN"]
AGE = re.compile(r"^(\d+d )?(\d+h )?(\d+m )?\d+s$")


def table(text: str) -> list[list[str]]:
    lines = text.rstrip("\n").splitlines()
    rows = [re.split(r" {2,}", line.strip()) for line in lines]
    assert rows[0] == HEADER, text
    for row in rows[1:]:
        assert AGE.match(row[5]), row
    return [row[:5] for row in rows[1:]]


def listing(cluster) -> list:
    return json.loads(ok(run_cli(cluster, "consumer", "list", "-O", "json")))


def test_the_consumer_offsets_walk_through(cluster):
    ok(run_cli(cluster, "topic", "create", "hello-topic"))
    ok(run_cli(cluster, "produce", "hello-topic", input=b"One\n"))
    ok(run_cli(cluster, "produce", "hello-topic", input=b"Two\n"))

    first = run_cli(cluster, "consume", "hello-topic", "-c", "c1", "-Bd")
    assert ok(first) == "One\nTwo\n"
    assert first.stderr.decode() == "Consuming records from 'hello-topic' starting from the beginning of log\n"

    assert table(ok(run_cli(cluster, "consumer", "list"))) == [["c1", "hello-topic", "0", "1", "0"]]

    ok(run_cli(cluster, "produce", "hello-topic", input=b"Three\n"))
    again = run_cli(cluster, "consume", "hello-topic", "-c", "c1", "-Bd")
    assert ok(again) == "Three\n"                        # only the unseen record
    assert again.stderr.decode() == ("Consuming records from 'hello-topic' as consumer 'c1', resuming after "
                                     "the last record it saw (offset 1)\n")

    assert ok(run_cli(cluster, "consume", "hello-topic", "-c", "c2", "-Bd")) == "One\nTwo\nThree\n"

    assert table(ok(run_cli(cluster, "consumer", "list"))) == [
        ["c1", "hello-topic", "0", "2", "0"], ["c2", "hello-topic", "0", "2", "0"]]

    assert ok(run_cli(cluster, "consumer", "delete", "c1")) == \
        'consumer "c1" on topic "hello-topic" and partition "0" deleted\n'
    assert ok(run_cli(cluster, "consumer", "delete", "c2")) == \
        'consumer "c2" on topic "hello-topic" and partition "0" deleted\n'
    assert listing(cluster) == []


def test_list_formats(cluster):
    ok(run_cli(cluster, "topic", "create", "cc-formats", "-p", "2"))
    ok(run_cli(cluster, "produce", "cc-formats", "-p", "1", input=b"a\nb\n"))
    ok(run_cli(cluster, "consume", "cc-formats", "-p", "1", "-c", "fmt", "-Bd"))
    rows = [r for r in listing(cluster) if r["topic"] == "cc-formats"]
    assert [(r["consumer"], r["partition"], r["offset"]) for r in rows] == [("fmt", 1, 1)]
    assert set(rows[0]) == {"consumer", "topic", "partition", "offset", "lag", "last_seen", "modified_ms"}
    assert isinstance(rows[0]["last_seen"], int) and rows[0]["last_seen"] >= 0
    yaml = ok(run_cli(cluster, "consumer", "list", "-O", "yaml"))
    assert '- consumer: "fmt"' in yaml and "  offset: 1" in yaml
    ok(run_cli(cluster, "consumer", "delete", "fmt", "--topic", "cc-formats", "--partition", "1"))


def _lag_of(cluster, consumer: str, topic: str) -> int:
    rows = [r for r in listing(cluster) if (r["consumer"], r["topic"]) == (consumer, topic)]
    assert len(rows) == 1, rows
    return rows[0]["lag"]


def test_lag_against_known_offsets(cluster):
    """Produce 10, consume 4 as a named consumer: lag 6 (HW 10 - (offset 3 + 1)); 5 more: 11; all: 0."""
    ok(run_cli(cluster, "topic", "create", "cc-lag"))
    ok(run_cli(cluster, "produce", "cc-lag", input=b"".join(b"r%d\n" % i for i in range(10))))
    ok(run_cli(cluster, "consume", "cc-lag", "-c", "lagger", "-B", "--end-offset", "3"))
    assert _lag_of(cluster, "lagger", "cc-lag") == 6
    row = table(ok(run_cli(cluster, "consumer", "list")))
    assert ["lagger", "cc-lag", "0", "3", "6"] in row
    ok(run_cli(cluster, "produce", "cc-lag", input=b"".join(b"s%d\n" % i for i in range(5))))
    # the SC learns the new HW from the leader's next report (within 50 ms)
    assert _wait_for(lambda: _lag_of(cluster, "lagger", "cc-lag") == 11)
    ok(run_cli(cluster, "consume", "cc-lag", "-c", "lagger", "-Bd"))
    assert _lag_of(cluster, "lagger", "cc-lag") == 0


def _wait_for(predicate, timeout_s: float = 5.0) -> bool:
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_all_partitions_and_resume_across_them(cluster):
    ok(run_cli(cluster, "topic", "create", "cc-all", "-p", "3"))
    ok(run_cli(cluster, "produce", "cc-all", "--key-separator", ":",
               input=b"".join(f"k{i}:v{i}\n".encode() for i in range(30))))
    out = ok(run_cli(cluster, "consume", "cc-all", "-A", "-Bd", "-c", "everyone"))
    assert sorted(out.splitlines()) == sorted(f"v{i}" for i in range(30))
    rows = [r for r in listing(cluster) if r["consumer"] == "everyone"]
    assert sorted(r["partition"] for r in rows) == [0, 1, 2]
    ok(run_cli(cluster, "produce", "cc-all", "--key-separator", ":", input=b"k1:late\n"))
    assert ok(run_cli(cluster, "consume", "cc-all", "-A", "-Bd", "-c", "everyone")) == "late\n"
    deleted = ok(run_cli(cluster, "consumer", "delete", "everyone", "-t", "cc-all")).splitlines()
    assert deleted == [f'consumer "everyone" on topic "cc-all" and partition "{p}" deleted' for p in range(3)]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupted_consumer_flushes_what_it_printed(cluster, sig, code):
    topic = f"cc-stop-{sig.name.lower()}"
    ok(run_cli(cluster, "topic", "create", topic))
    ok(run_cli(cluster, "produce", topic, input=b"1\n2\n3\n"))
    proc = subprocess.Popen([sys.executable, "-m", "rillet.tools.cli", "consume", topic, "-c", "stopper", "-B"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env)
    try:
        assert [proc.stdout.readline() for _ in range(3)] == [b"1\n", b"2\n", b"3\n"]
        proc.send_signal(sig)                             # it is waiting for more (continuous)
        assert proc.wait(15) == code
    finally:
        proc.kill()
        proc.communicate()
    rows = [(r["consumer"], r["offset"]) for r in listing(cluster) if r["topic"] == topic]
    assert rows == [("stopper", 2)]
    ok(run_cli(cluster, "produce", topic, input=b"4\n"))
    assert ok(run_cli(cluster, "consume", topic, "-c", "stopper", "-d")) == "4\n"   # end() resumes too


BAD_INPUT = [
    (["consumer", "delete", "ghost"], 1, "ghost"),
    (["consumer", "delete", "kept", "--topic", "cc-bad", "--partition", "5"], 1, "partition 5"),
    (["consumer", "delete", "kept", "--topic", "cc-nope"], 1, "cc-nope"),
    (["consume", "cc-bad", "-c", "kept", "-p", "3", "-d"], 1, "partition 3"),
    (["consumer", "delete", "kept", "--topic", "cc-bad", "--partition", "-1"], 2, "negative"),
    (["consumer", "delete", "kept", "--partition", "0"], 2, "--topic"),
    (["consumer", "delete", "Bad_Name"], 2, "consumer name"),
    (["consume", "cc-bad", "-c", "Bad_Name", "-d"], 2, "consumer name"),
    (["consume", "cc-bad", "-c", "kept", "-o", "-3"], 2, "negative"),
    (["consume", "cc-bad", "-c", "kept", "-T", "-1"], 2, "negative"),
    (["consume", "cc-bad", "-p", "0", "-A"], 2, "not allowed"),
    (["consumer", "list", "-O", "xml"], 2, "xml"),
]


def test_bad_input_is_one_line_and_changes_nothing(cluster):
    ok(run_cli(cluster, "topic", "create", "cc-bad"))
    ok(run_cli(cluster, "produce", "cc-bad", input=b"x\ny\n"))
    ok(run_cli(cluster, "consume", "cc-bad", "-c", "kept", "-Bd"))
    stable = lambda: [{k: v for k, v in row.items() if k != "last_seen"} for row in listing(cluster)]
    before = stable()
    for args, code, says in BAD_INPUT:
        err = one_line_error(run_cli(cluster, *args), code)
        assert says in err, (args, err)
    assert stable() == before
