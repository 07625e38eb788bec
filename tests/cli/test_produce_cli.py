"""`rillet produce`: producer flags, and how failed records end the command."""

from __future__ import annotations

import pytest

from rillet import DeliverySemantic, Isolation, RetryPolicy, RetryStrategy
from rillet.tools.cli import build_parser
from rillet.tools.commands.produce import build_config
from tests.conftest import run_cli


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def one_line_error(result, code):
    err = result.stderr.decode().strip()
    assert result.returncode == code, err
    assert err and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def config_of(*flags):
    return build_config(build_parser().parse_args(["produce", "t", *flags]))


def test_flags_make_the_config():
    config = config_of("--delivery-semantic", "at-least-once", "--retry-max", "5", "--retry-initial-delay", "10ms",
                       "--retry-max-delay", "2s", "--retry-timeout", "10s", "--retry-strategy", "exponential",
                       "--max-request-size", "64KiB", "--batch-queue-size", "7", "--timeout", "2s",
                       "--isolation", "read_committed", "--linger", "0")
    assert config.retry_policy == RetryPolicy(max_retries=5, initial_delay_ms=10, max_delay_ms=2000, timeout_ms=10_000,
                                              strategy=RetryStrategy.ExponentialBackoff)
    assert (config.max_request_size, config.batch_queue_size, config.timeout_ms, config.linger_ms) == (65536, 7, 2000, 0)
    assert (config.isolation, config.delivery_semantic) == (Isolation.ReadCommitted, DeliverySemantic.AtLeastOnce)
    assert config_of("--retry-strategy", "fibonacci").retry_policy.strategy is RetryStrategy.FibonacciBackoff
    assert config_of().retry_policy == RetryPolicy()


@pytest.mark.parametrize("flags,needle", [
    (["--retry-strategy", "linear"], "linear"),
    (["--delivery-semantic", "at-most-once", "--retry-max", "3"], "at-least-once"),
    (["--timeout", "0"], "timeout_ms"),
    (["--batch-queue-size", "0"], "at least 1"),
])
def test_bad_flags_are_usage_errors(cluster, flags, needle):
    assert needle in one_line_error(run_cli(cluster, "produce", "anything", *flags, input=b"x\n"), 2)


def test_produce_with_every_delivery_flag(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-flags", "-p", "2"))
    ok(run_cli(cluster, "produce", "cli-flags", "--key-separator", ":", "--delivery-semantic", "at-least-once",
               "--retry-max", "3", "--retry-initial-delay", "10ms", "--retry-strategy", "fixed",
               "--isolation", "read_committed", "--timeout", "2s", "--batch-queue-size", "2", "--linger", "0",
               input=b"a:1\nb:2\nc:3\n"))
    ok(run_cli(cluster, "produce", "cli-flags", "--delivery-semantic", "at-most-once", input=b"4\n5\n"))
    lines = ok(run_cli(cluster, "consume", "cli-flags", "-p", "0", "-B", "-d")).splitlines()
    lines += ok(run_cli(cluster, "consume", "cli-flags", "-p", "1", "-B", "-d")).splitlines()
    assert sorted(lines) == ["1", "2", "3", "4", "5"]


def test_records_refused_by_the_topic_fail_the_command(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-lz4", "--compression-type", "lz4"))
    err = one_line_error(run_cli(cluster, "produce", "cli-lz4", input=b"one\ntwo\nthree\n"), 1)
    assert err.startswith("error: 3 of 3 records failed: produce to cli-lz4/0 failed")
    assert "requires compression lz4" in err
    ok(run_cli(cluster, "produce", "cli-lz4", "--compression", "lz4", input=b"fits\n"))


def test_a_record_too_large_is_counted_and_the_rest_are_sent(cluster):
    ok(run_cli(cluster, "topic", "create", "cli-large"))
    err = one_line_error(run_cli(cluster, "produce", "cli-large", "--max-request-size", "1KiB",
                                 input=b"small\n" + b"L" * 2000 + b"\nsmall too\n"), 1)
    assert err.startswith("error: 1 of 3 records failed: record of 2021 bytes")
    assert "max_request_size=1024" in err
    assert ok(run_cli(cluster, "consume", "cli-large", "-B", "-d")).splitlines() == ["small", "small too"]
