"""The retry schedule of at-least-once producers, as pure code."""

from __future__ import annotations

import pytest

from rillet import RetryPolicy, RetryStrategy, TopicProducerConfigBuilder
from rillet.ipc.errors import InvalidArgument

SEEDS_EXAMPLE = RetryPolicy(max_retries=5, initial_delay_ms=10, max_delay_ms=2_000, timeout_ms=10_000,
                            strategy=RetryStrategy.ExponentialBackoff)


def test_the_seeds_example_gives_exactly_its_delays():
    # The producer page: "The first delay is 10ms, the second is 100ms, then 1000ms, and all
    # others are 2000ms as it's defined as a maximum allowed delay." It lists four numbers for
    # five retries; "all others" makes the fifth 2000 ms too: 10 ** 4 ms = 10 s and 10 ** 5 ms
    # are both capped at max_delay. Together 5110 ms, inside the 10 s timeout, so all five run.
    assert SEEDS_EXAMPLE.delays_ms() == [10, 100, 1_000, 2_000, 2_000]
    elapsed, schedule = 0, []
    while (delay := SEEDS_EXAMPLE.next_delay_ms(len(schedule), elapsed)) is not None:
        schedule.append(delay)
        elapsed += delay
    assert schedule == [10, 100, 1_000, 2_000, 2_000]


def test_fluvio_defaults():
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay_ms, policy.max_delay_ms, policy.timeout_ms) == (4, 20, 200_000, 300_000)
    assert policy.strategy is RetryStrategy.ExponentialBackoff
    assert policy.delays_ms() == [20, 400, 8_000, 160_000]


def test_fibonacci_and_fixed():
    fib = RetryPolicy(max_retries=8, initial_delay_ms=10, max_delay_ms=100, strategy="fibonacci")
    assert fib.delays_ms() == [10, 10, 20, 30, 50, 80, 100, 100]
    fixed = RetryPolicy(max_retries=3, initial_delay_ms=250, strategy=RetryStrategy.FixedDelay)
    assert fixed.delays_ms() == [250, 250, 250]
    assert RetryPolicy(max_retries=2, initial_delay_ms=500, max_delay_ms=300, strategy="fixed").delays_ms() == [300, 300]


def test_exponential_edge_cases():
    assert RetryPolicy(max_retries=3, initial_delay_ms=1).delays_ms() == [1, 1, 1]
    assert RetryPolicy(max_retries=3, initial_delay_ms=0).delays_ms() == [0, 0, 0]
    assert RetryPolicy(max_retries=0).delays_ms() == []
    many = RetryPolicy(max_retries=1_000, initial_delay_ms=1_000, max_delay_ms=5_000).delays_ms()
    assert many[:2] == [1_000, 5_000] and set(many[1:]) == {5_000}


def test_the_timeout_bounds_the_whole_sequence():
    policy = RetryPolicy(max_retries=5, initial_delay_ms=10, max_delay_ms=2_000, timeout_ms=3_000)
    assert policy.next_delay_ms(0, 0) == 10
    assert policy.next_delay_ms(3, 1_110) is None          # 1110 + 2000 would pass 3000 ms
    assert policy.next_delay_ms(3, 999) == 2_000
    assert policy.next_delay_ms(5, 0) is None               # max_retries used up


def test_strategy_names_and_validation():
    assert RetryStrategy.parse("Exponential") is RetryStrategy.ExponentialBackoff
    assert RetryStrategy.parse("FibonacciBackoff") is RetryStrategy.FibonacciBackoff
    assert RetryStrategy.parse("fixed_delay") is RetryStrategy.FixedDelay
    with pytest.raises(InvalidArgument, match="linear"):
        RetryStrategy.parse("linear")
    with pytest.raises(InvalidArgument, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(InvalidArgument, match="timeout_ms"):
        RetryPolicy(timeout_ms=1.5)


def test_the_builder_sets_the_policy():
    config = (TopicProducerConfigBuilder().delivery_semantic("at-least-once")
              .retry_policy(max_retries=5, initial_delay_ms=10, max_delay_ms=2_000, timeout_ms=10_000).build())
    assert config.retry_policy == SEEDS_EXAMPLE
    config = TopicProducerConfigBuilder().retry_policy(SEEDS_EXAMPLE).retry_policy(strategy="fixed").build()
    assert config.retry_policy.strategy is RetryStrategy.FixedDelay and config.retry_policy.max_retries == 5
