"""`rillet smartmodule create | list | delete` and `rillet consume --smartmodule ...` against a
real cluster, with rillet's example modules (tests/wat, WAT compiled at test time)."""

from __future__ import annotations

import json

from tests.cli.test_cli import ok, one_line_error
from tests.conftest import run_cli
from tests.smartmodule_wat import AGGREGATE, ARRAY_MAP, FILTER_MAP, FILTER_ON_A, FILTER_PARAM, MAP, example, example_wasm


def produce_lines(cluster, topic, lines):
    ok(run_cli(cluster, "produce", topic, input="".join(f"{line}\n" for line in lines).encode()))


def consume(cluster, topic, *args):
    return ok(run_cli(cluster, "consume", topic, "-B", "-d", *args)).splitlines()


def test_create_list_delete(cluster, tmp_path):
    assert ok(run_cli(cluster, "smartmodule", "create", "cli-map", "--wasm-file", example(MAP))) == \
        'smartmodule "cli-map" has been created.\n'
    ok(run_cli(cluster, "smartmodule", "create", "cli-agg", "--wasm-file", example(AGGREGATE)))
    table = ok(run_cli(cluster, "smartmodule", "list"))
    assert table.split("\n")[0].split() == ["SMARTMODULE", "SIZE", "TRANSFORM"]
    assert "cli-map" in table and f"{len(example_wasm(MAP)) / 1000:.1f} KB" in table
    rows = {r["name"]: r for r in json.loads(ok(run_cli(cluster, "smartmodule", "list", "-O", "json")))}
    assert (rows["cli-agg"]["size"], rows["cli-agg"]["transform"]) == (len(example_wasm(AGGREGATE)), "aggregate")
    assert set(rows["cli-map"]) == {"name", "size", "transform", "sha256", "created_ms"}
    junk = tmp_path / "junk.wasm"
    junk.write_text("hello")
    assert one_line_error(run_cli(cluster, "smartmodule", "create", "cli-junk", "--wasm-file", str(junk)), 1) == \
        "error: smartmodule 'cli-junk' refused: not a WebAssembly module (no \\0asm magic at the start)"
    assert one_line_error(run_cli(cluster, "smartmodule", "create", "cli-none", "--wasm-file", str(tmp_path / "no")), 1) \
        .startswith("error: cannot read SmartModule file")
    assert "invalid smartmodule name 'Bad_Name'" in one_line_error(
        run_cli(cluster, "smartmodule", "create", "Bad_Name", "--wasm-file", example(MAP)), 2)
    assert ok(run_cli(cluster, "smartmodule", "delete", "cli-map", "cli-agg")) == \
        'smartmodule "cli-map" deleted\nsmartmodule "cli-agg" deleted\n'
    assert one_line_error(run_cli(cluster, "smartmodule", "delete", "cli-map"), 1) == \
        "error: SmartModule cli-map was not found"


def test_consume_applies_stored_and_file_modules_with_params_and_initial_values(cluster):
    for name, module in (("cli-a", FILTER_ON_A), ("cli-param", FILTER_PARAM), ("cli-fm", FILTER_MAP),
                         ("cli-array", ARRAY_MAP), ("cli-sum", AGGREGATE)):
        ok(run_cli(cluster, "smartmodule", "create", name, "--wasm-file", example(module)))
    cluster.create_topic("cli-sm-words")
    produce_lines(cluster, "cli-sm-words", ["foo", "bar", "fooquux", "baz"])
    assert consume(cluster, "cli-sm-words", "--smartmodule", "cli-a") == ["bar", "baz"]
    assert consume(cluster, "cli-sm-words", "--smartmodule", "cli-param", "-e", "key=o") == ["foo", "fooquux"]
    assert consume(cluster, "cli-sm-words", "--smartmodule-path", example(MAP)) == ["FOO", "BAR", "FOOQUUX", "BAZ"]
    assert consume(cluster, "cli-sm-words", "--smartmodule", "cli-sum", "--aggregate-initial", "1") == \
        ["1foo", "1foobar", "1foobarfooquux", "1foobarfooquuxbaz"]
    lines = consume(cluster, "cli-sm-words", "--smartmodule", "cli-a", "-O", "json")
    assert [(r["offset"], r["value"]) for r in map(json.loads, lines)] == [(1, "bar"), (3, "baz")]
    cluster.create_topic("cli-sm-numbers")
    produce_lines(cluster, "cli-sm-numbers", ["1", "2", "3", "4", '[1, 2]'])
    assert consume(cluster, "cli-sm-numbers", "--smartmodule", "cli-fm", "--end-offset", "3") == ["1", "2"]
    lines = ok(run_cli(cluster, "consume", "cli-sm-numbers", "-o", "4", "-d", "--smartmodule", "cli-array", "-O", "json"))
    assert [(r["offset"], r["value"]) for r in map(json.loads, lines.splitlines())] == [(4, "1"), (4, "2")]


def test_consume_stops_with_the_modules_error_and_a_named_consumer_keeps_source_offsets(cluster):
    cluster.create_topic("cli-sm-named")
    produce_lines(cluster, "cli-sm-named", ["apple", "kiwi", "plum"])
    assert consume(cluster, "cli-sm-named", "--smartmodule-path", example(FILTER_ON_A), "-c", "cli-sm-c") == ["apple"]
    rows = json.loads(ok(run_cli(cluster, "consumer", "list", "-O", "json")))
    assert [r["offset"] for r in rows if r["consumer"] == "cli-sm-c"] == [2]      # kiwi and plum were consumed
    failed = run_cli(cluster, "consume", "cli-sm-named", "-B", "-d", "--smartmodule-path", example(FILTER_MAP))
    assert failed.returncode == 1 and failed.stdout == b"" and b"Traceback" not in failed.stderr
    err = failed.stderr.decode().splitlines()[-1]      # after the "Consuming records from ..." line
    assert err.startswith("error: SmartModule file '") and "failed at offset 0: invalid digit found in string" in err


def test_consume_usage_errors(cluster):
    cluster.create_topic("cli-sm-usage")
    assert one_line_error(run_cli(cluster, "consume", "cli-sm-usage", "-e", "a=b"), 2) == \
        "error: rillet consume: -e and --aggregate-initial need --smartmodule or --smartmodule-path"
    assert one_line_error(run_cli(cluster, "consume", "cli-sm-usage", "--smartmodule", "x", "-e", "novalue"), 2) == \
        "error: rillet consume: -e takes key=value, got 'novalue'"
    one_line_error(run_cli(cluster, "consume", "cli-sm-usage", "--smartmodule", "x", "--smartmodule-path", "y"), 2)
    assert one_line_error(run_cli(cluster, "consume", "cli-sm-usage", "-B", "-d", "--smartmodule", "nope"), 1) == \
        "error: SmartModule nope was not found"
