"""Retry policy of at-least-once producers, as pure code (no clock, no I/O).

Strategies follow Fluvio, which uses tokio-retry:

* ``FixedDelay``: ``initial_delay`` before every retry;
* ``FibonacciBackoff``: d, d, 2d, 3d, 5d, 8d...;
* ``ExponentialBackoff``: tokio-retry's ``from_millis(base)`` raises the initial
  delay *in milliseconds* to the n-th power: 10 ms gives 10, 100, 1000 ms. It is
  not "double each time". So Fluvio's default (20 ms) gives 20 ms, 400 ms, 8 s,
  160 s.

Every delay is capped at ``max_delay``. ``timeout`` bounds the whole sequence: no
retry starts once the time since the first attempt plus the next delay would
pass it (Fluvio wraps all attempts in one timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rillet.ipc.errors import InvalidArgument


class RetryStrategy(str, Enum):
    FixedDelay = "fixed"
    FibonacciBackoff = "fibonacci"
    ExponentialBackoff = "exponential"

    @classmethod
    def parse(cls, value: "RetryStrategy | str") -> "RetryStrategy":
        if isinstance(value, RetryStrategy):
            return value
        text = str(value).lower().replace("_", "").replace("-", "")
        for strategy in cls:
            if text in (strategy.value, strategy.name.lower()):
                return strategy
        raise InvalidArgument(f"unknown retry strategy {value!r} (expected fixed, fibonacci or exponential)")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How an at-least-once producer retries a batch that failed with a retriable error."""

    max_retries: int = 4              # Fluvio's default
    initial_delay_ms: int = 20        # Fluvio's default
    max_delay_ms: int = 200_000       # Fluvio's default (200 s)
    timeout_ms: int = 300_000         # all attempts together; Fluvio's default (300 s)
    strategy: RetryStrategy = RetryStrategy.ExponentialBackoff   # Fluvio's default

    def __post_init__(self) -> None:
        for name in ("max_retries", "initial_delay_ms", "max_delay_ms", "timeout_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"retry policy {name} must be a whole number >= 0, got {value!r}")
        object.__setattr__(self, "strategy", RetryStrategy.parse(self.strategy))

    def delays_ms(self) -> list[int]:
        """The delay before each retry, in order: ``max_retries`` of them, each capped."""
        d, cap, out = self.initial_delay_ms, self.max_delay_ms, []
        if self.strategy is RetryStrategy.FixedDelay:
            return [min(d, cap)] * self.max_retries
        if self.strategy is RetryStrategy.FibonacciBackoff:
            a, b = d, d
            for _ in range(self.max_retries):
                out.append(min(a, cap))
                a, b = b, min(a + b, cap)      # stop growing once past the cap
            return out
        current = d
        for _ in range(self.max_retries):
            out.append(min(current, cap))
            if d > 1 and current < cap:         # 0 ms and 1 ms stay what they are (1 ** n == 1)
                current *= d
        return out

    def next_delay_ms(self, retries_done: int, elapsed_ms: float) -> int | None:
        """The delay before retry number ``retries_done + 1``, or None when none is left.

        None when ``max_retries`` retries were made, or when waiting the delay would
        take the time since the first attempt (``elapsed_ms``) past ``timeout_ms``.
        """
        if retries_done >= self.max_retries:
            return None
        delay = self.delays_ms()[retries_done]
        if elapsed_ms + delay > self.timeout_ms:
            return None
        return delay
